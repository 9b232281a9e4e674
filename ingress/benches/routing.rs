//! Route lookup cost by number of rules: one host lookup + one path lookup
//! must not grow with the rule count (the L7 issue's "< 1 µs over 50 rules").
//!
//!   cargo bench -p ingress --bench routing

use criterion::{Criterion, criterion_group, criterion_main};
use model::{Builder, CompileOptions, Snapshot};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

fn table(rules: usize) -> Arc<Snapshot> {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: be}\nspec:\n  clusterIP: None\n  ports: [{name: http, port: 80}]\n",
    );
    for i in 0..rules {
        y.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: r{i}}}\nspec:\n  rules:\n  - host: h{i}.bench.test\n    http:\n      paths:\n      - {{path: /hostname, pathType: Prefix, backend: {{service: {{name: be, port: {{number: 80}}}}}}}}\n      - {{path: /p{i}/deep/er, pathType: Prefix, backend: {{service: {{name: be, port: {{number: 80}}}}}}}}\n"
        ));
    }
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("b.yaml"), Some(y.as_bytes()));
    let s = b.build();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    s
}

fn bench(c: &mut Criterion) {
    for rules in [1usize, 50, 5000] {
        let s = table(rules);
        let host = format!("h{}.bench.test", rules - 1);
        c.bench_function(&format!("route {rules} rules"), |b| {
            b.iter(|| {
                let p = model::ingress::normalize_path(black_box("/hostname")).unwrap();
                black_box(s.ingress.find(black_box(&host), &p).is_some())
            })
        });
        let deep = format!("/p{}/deep/er/and/more?x=1", rules - 1);
        c.bench_function(&format!("route {rules} rules, deep path"), |b| {
            b.iter(|| {
                let p = model::ingress::normalize_path(black_box(deep.split('?').next().unwrap()))
                    .unwrap();
                black_box(s.ingress.find(black_box(&host), &p).is_some())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
