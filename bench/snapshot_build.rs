//! How long compiling a Snapshot takes at scale: 10k Services with 100k
//! endpoints (10 per Service, via EndpointSlices). Parsing is measured apart:
//! a reload re-parses only changed files, but always recompiles.
//!
//! Run: cargo bench --bench snapshot_build

use criterion::{Criterion, criterion_group, criterion_main};
use model::{Builder, CompileOptions};
use std::fmt::Write;
use std::path::Path;

fn manifests(services: usize, per_service: usize) -> String {
    let mut y = String::with_capacity(services * 1200);
    for i in 0..services {
        let (a, b) = (i / 250, i % 250);
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{}}}\nspec:\n  clusterIP: 127.1.{a}.{b}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-x, namespace: ns-{}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n",
            i % 50,
            i % 50
        );
        for e in 0..per_service {
            let _ = writeln!(y, "- addresses: [127.{}.{}.{}]", 2 + e, a, b);
        }
    }
    y
}

fn bench(c: &mut Criterion) {
    let text = manifests(10_000, 10);
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    let mut builder = Builder::new(CompileOptions::default());
    builder.update_file(Path::new("all.yaml"), Some(text.as_bytes()));
    let snap = builder.build();
    assert_eq!(snap.services.len(), 10_000);
    let eps: usize = snap.services.values().map(|s| s.endpoints.len()).sum();
    assert_eq!(eps, 100_000);
    assert!(snap.errors.is_empty(), "{:?}", &snap.errors[..1]);
    g.bench_function("compile 10k services / 100k endpoints", |b| {
        b.iter(|| builder.build())
    });
    g.bench_function("parse + validate 10k services / 100k endpoints", |b| {
        b.iter(|| {
            let mut fresh = Builder::new(CompileOptions::default());
            fresh.update_file(Path::new("all.yaml"), Some(text.as_bytes()));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
