//! The incremental compile must equal a fresh compile of the same objects
//! after every change: random sequences of upserts and deletes over a small
//! universe of objects that collide on purpose (shared ClusterIPs and
//! NodePorts, slices moving between Services, Pods behind selectors,
//! Ingresses on the same host and path).

use crate::snapshot::{CompileOptions, Listen, Snapshot, compile};
use crate::{Builder, ObjectKey};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::testing::Rng;

const NAMESPACES: &[&str] = &["a", "b"];
const SERVICES: &[&str] = &["web", "api", "db"];

fn service(r: &mut Rng, ns: &str, name: &str) -> String {
    let ip = format!("127.0.9.{}", 1 + r.below(3));
    let created = ["2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"][r.below(2) as usize];
    let (ty, np) = match r.below(3) {
        0 => ("NodePort", format!(", nodePort: {}", 30000 + r.below(2))),
        1 => ("ClusterIP", String::new()),
        _ => (
            "LoadBalancer",
            format!(", nodePort: {}", 30000 + r.below(2)),
        ),
    };
    let health = if ty == "LoadBalancer" && r.below(2) == 0 {
        format!(
            ", externalTrafficPolicy: Local, healthCheckNodePort: {}",
            30000 + r.below(3)
        )
    } else {
        String::new()
    };
    let cluster_ip = if r.below(5) == 0 {
        "None".to_string()
    } else {
        ip
    };
    let selector = if r.below(2) == 0 {
        format!(", selector: {{app: {}}}", r.pick(&["x", "y"]))
    } else {
        String::new()
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\n\
         spec: {{type: {ty}, clusterIP: {cluster_ip}{selector}{health}, ports: [{{name: http, port: {}{np}}}]}}\n",
        80 + r.below(2)
    )
}

fn slice(r: &mut Rng, ns: &str, name: &str) -> String {
    let svc = r.pick(SERVICES);
    let mut eps = String::new();
    for _ in 0..r.below(3) {
        let ready = r.below(3) != 0;
        let _ = writeln!(
            eps,
            "- {{addresses: [127.0.8.{}], hostname: h{}, conditions: {{ready: {ready}}}}}",
            1 + r.below(4),
            r.below(2)
        );
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}"
    )
    .replace("endpoints:\n\n", "endpoints: []\n")
}

fn pod(r: &mut Rng, ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {}}}}}\n\
         status: {{podIP: 127.0.7.{}, conditions: [{{type: Ready, status: \"{}\"}}]}}\n",
        r.pick(&["x", "y"]),
        1 + r.below(3),
        ["True", "False"][r.below(2) as usize]
    )
}

fn endpoints(r: &mut Rng, ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         subsets: [{{addresses: [{{ip: 127.0.6.{}}}], ports: [{{name: http, port: 8080}}]}}]\n",
        1 + r.below(3)
    )
}

fn ingress(r: &mut Rng, ns: &str, name: &str) -> String {
    let canary = if r.below(4) == 0 {
        "nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"50\", "
    } else {
        ""
    };
    let created = ["2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"][r.below(2) as usize];
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\", annotations: {{{canary}x: y}}}}\n\
         spec: {{rules: [{{host: {}, http: {{paths: [{{path: {}, pathType: {}, backend: {{service: {{name: {}, port: {{number: 80}}}}}}}}]}}}}]}}\n",
        r.pick(&["h1.example", "h2.example"]),
        r.pick(&["/", "/a", "/a/"]),
        r.pick(&["Prefix", "Exact"]),
        r.pick(SERVICES),
    )
}

/// One random change: (file, new content or None for a delete).
fn change(r: &mut Rng) -> (PathBuf, Option<String>) {
    let ns = r.pick(NAMESPACES);
    let (kind, name) = match r.below(6) {
        0 => ("svc", r.pick(SERVICES)),
        1 => ("slice", r.pick(&["s1", "s2", "s3"])),
        2 => ("pod", r.pick(&["p1", "p2"])),
        3 => ("ep", r.pick(SERVICES)),
        4 => ("ing", r.pick(&["i1", "i2", "i3"])),
        _ => ("ns", r.pick(&["a", "b", "c"])),
    };
    let file = PathBuf::from(format!("{kind}-{ns}-{name}.yaml"));
    if r.below(4) == 0 {
        return (file, None);
    }
    let text = match kind {
        "svc" => service(r, ns, name),
        "slice" => slice(r, ns, name),
        "pod" => pod(r, ns, name),
        "ep" => endpoints(r, ns, name),
        "ing" => ingress(r, ns, name),
        _ => format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
    };
    (file, Some(text))
}

/// Everything a plane can read of a Snapshot, in a stable order.
fn describe(s: &Snapshot) -> String {
    let mut out = String::new();
    for svc in s.services_sorted() {
        let _ = writeln!(out, "{svc:?}");
    }
    for f in s.frontends_sorted() {
        let listen = match f.listen {
            Listen::Addr(a) => a.to_string(),
            Listen::NodePort(p) => format!("np {p}"),
        };
        let _ = writeln!(
            out,
            "fe {listen} {:?} {} {} {} {}",
            f.protocol,
            f.service.id,
            f.port,
            f.external,
            // The frontend must carry the current Service, not an old copy.
            std::sync::Arc::ptr_eq(
                &f.service,
                s.service(&f.service.namespace, &f.service.name).unwrap()
            )
        );
    }
    for h in s.health_checks.iter() {
        let _ = writeln!(out, "hc {} {}", h.port, h.service.id);
    }
    let _ = writeln!(out, "ns {:?}", s.namespaces);
    for r in s.ingress.routes() {
        let _ = writeln!(
            out,
            "route {} {} {:?} {} {:?} canary={:?}",
            r.host,
            r.path,
            r.kind,
            r.ingress,
            r.backend.as_ref().map(|b| (&b.key, b.port)),
            r.canary
                .as_ref()
                .map(|c| (&c.ingress, c.backend.as_ref().map(|b| b.key.clone())))
        );
    }
    for e in s.errors.iter() {
        let _ = writeln!(out, "error {e}");
    }
    for w in s.warnings.iter() {
        let _ = writeln!(out, "warning {w}");
    }
    out
}

#[test]
fn incremental_equals_fresh_after_every_change() {
    for seed in 1..=150u64 {
        let mut r = Rng::new(seed);
        let mut b = Builder::new(CompileOptions::default());
        let mut prev: Option<std::sync::Arc<Snapshot>> = None;
        for step in 0..40 {
            // Sometimes several changes land in one build (a debounced burst).
            for _ in 0..1 + r.below(3) {
                let (file, text) = change(&mut r);
                b.update_file(&file, text.as_deref().map(str::as_bytes));
            }
            let inc = b.build();
            let fresh = compile(
                b.objects(),
                inc.generation,
                &CompileOptions::default(),
                prev.as_deref(),
                b.file_errors(),
                b.file_warnings(),
            );
            assert_eq!(
                describe(&inc),
                describe(&fresh),
                "seed {seed} step {step}: incremental != fresh"
            );
            prev = Some(inc);
        }
    }
}

#[test]
fn a_one_service_change_shares_everything_else() {
    let mut b = Builder::new(CompileOptions::default());
    let mut all = String::new();
    for i in 0..100 {
        let _ = write!(
            all,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{clusterIP: 127.0.10.{i}, ports: [{{port: 80}}]}}\n"
        );
    }
    b.update_file(Path::new("all.yaml"), Some(all.as_bytes()));
    let one = b.build();
    b.update_file(
        Path::new("one.yaml"),
        Some(b"apiVersion: v1\nkind: Service\nmetadata: {name: extra}\nspec: {clusterIP: 127.0.11.1, ports: [{port: 80}]}\n"),
    );
    let two = b.build();
    let changed = two.services.diff(&one.services, std::sync::Arc::ptr_eq);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        two.frontends
            .diff(&one.frontends, |a, b| std::sync::Arc::ptr_eq(
                &a.service, &b.service
            ))
            .len(),
        1
    );
    assert!(
        std::sync::Arc::ptr_eq(&one.ingress, &two.ingress),
        "no Ingress changed"
    );
    let key = ObjectKey::new("Service", "default", "extra");
    assert!(b.object(&key).is_some());

    // An Ingress naming a Service: its endpoints changing leaves the
    // routes alone (requests read the endpoints per request), its ports
    // changing rebuilds them.
    b.update_file(
        Path::new("ing.yaml"),
        Some(b"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec: {rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s1, port: {number: 80}}}}]}}]}\n"),
    );
    let three = b.build();
    let slice = |ip: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s1-a, labels: {{kubernetes.io/service-name: s1}}}}\naddressType: IPv4\nendpoints: [{{addresses: [{ip}]}}]\n"
        )
    };
    b.update_file(
        Path::new("slice.yaml"),
        Some(slice("127.0.12.1").as_bytes()),
    );
    let four = b.build();
    assert!(!std::sync::Arc::ptr_eq(
        three.service("default", "s1").unwrap(),
        four.service("default", "s1").unwrap()
    ));
    assert!(
        std::sync::Arc::ptr_eq(&three.ingress, &four.ingress),
        "endpoints only"
    );
    all = all.replace(
        "name: s1}\nspec: {clusterIP: 127.0.10.1, ports: [{port: 80}]}",
        "name: s1}\nspec: {clusterIP: 127.0.10.1, ports: [{port: 81}]}",
    );
    b.update_file(Path::new("all.yaml"), Some(all.as_bytes()));
    let five = b.build();
    assert!(
        !std::sync::Arc::ptr_eq(&four.ingress, &five.ingress),
        "ports changed"
    );
    assert!(
        five.warnings
            .iter()
            .any(|w| w.to_string().contains("has no port 80")),
        "{:?}",
        five.warnings
    );
}

#[test]
fn load_balancer_addresses_in_proxy_mode_are_not_taken() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.9, ports: [{port: 80, nodePort: 30080}]}\nstatus:\n  loadBalancer:\n    ingress: [{ip: 192.0.2.10}, {ip: 192.0.2.11, ipMode: VIP}, {ip: 192.0.2.12, ipMode: Proxy}]\n";
    let mut b = crate::Builder::new(crate::CompileOptions::default());
    b.update_file(std::path::Path::new("lb.yaml"), Some(yaml.as_bytes()));
    let s = b.build();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let ips: Vec<String> = s
        .service("default", "lb")
        .unwrap()
        .load_balancer_ips
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ips, ["192.0.2.10", "192.0.2.11"]);
}
