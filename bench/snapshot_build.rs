//! How long compiling a Snapshot takes at scale: 10k Services with 100k
//! endpoints (10 per Service, via EndpointSlices), in files of 500 objects
//! as a generator or a Helm chart would write them.
//!
//! - cold compile: every object compiled from scratch (what the first load
//!   and `nodeway check` do), parsing apart;
//! - one change: one EndpointSlice's file rewritten (an endpoint replaced),
//!   parsed and compiled incrementally (what a reload does);
//! - parse + validate of everything, for reference.
//!
//! Run: cargo bench -p model --bench snapshot_build

use criterion::{Criterion, criterion_group, criterion_main};
use model::{Builder, CompileOptions};
use std::fmt::Write;
use std::path::PathBuf;

const SERVICES: usize = 10_000;
const PER_FILE: usize = 500;

fn service(y: &mut String, i: usize) {
    let (a, b) = (i / 250, i % 250);
    let _ = write!(
        y,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns-{}}}\nspec:\n  clusterIP: 127.1.{a}.{b}\n  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: metrics, port: 9090}}]\n",
        i % 50
    );
}

fn slice(y: &mut String, i: usize, first: usize) {
    let (a, b) = (i / 250, i % 250);
    let _ = write!(
        y,
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-x, namespace: ns-{}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: metrics, port: 9090}}]\nendpoints:\n",
        i % 50
    );
    for e in 0..10 {
        let _ = writeln!(y, "- addresses: [127.{}.{a}.{b}]", 2 + first + e);
    }
}

/// (file, content) pairs: Services in bulk files; slices one per file, so a
/// change costs one small file's parse.
fn files() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for start in (0..SERVICES).step_by(PER_FILE) {
        let mut y = String::new();
        for i in start..start + PER_FILE {
            service(&mut y, i);
        }
        out.push((PathBuf::from(format!("services-{start}.yaml")), y));
    }
    for i in 0..SERVICES {
        let mut y = String::new();
        slice(&mut y, i, 0);
        out.push((PathBuf::from(format!("slice-{i}.yaml")), y));
    }
    out
}

fn loaded(files: &[(PathBuf, String)]) -> Builder {
    let mut b = Builder::new(CompileOptions::default());
    for (path, text) in files {
        b.update_file(path, Some(text.as_bytes()));
    }
    b
}

fn bench(c: &mut Criterion) {
    let files = files();
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    let mut builder = loaded(&files);
    let snap = builder.build();
    assert_eq!(snap.services.len(), SERVICES);
    let eps: usize = snap.services.values().map(|s| s.endpoints.len()).sum();
    assert_eq!(eps, SERVICES * 10);
    assert!(snap.errors.is_empty(), "{:?}", &snap.errors[..1]);
    g.bench_function("cold compile 10k services / 100k endpoints", |b| {
        b.iter(|| {
            model::snapshot::compile(
                builder.objects(),
                1,
                &CompileOptions::default(),
                None,
                Vec::new(),
                Vec::new(),
            )
        })
    });
    let mut n = 0usize;
    g.bench_function(
        "one EndpointSlice changed at 10k: parse + incremental compile",
        |b| {
            b.iter(|| {
                n += 1;
                let i = n % SERVICES;
                let mut y = String::new();
                slice(&mut y, i, n % 7);
                builder.update_file(
                    &PathBuf::from(format!("slice-{i}.yaml")),
                    Some(y.as_bytes()),
                );
                builder.build()
            })
        },
    );
    g.bench_function("parse + validate 10k services / 100k endpoints", |b| {
        b.iter(|| loaded(&files))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
