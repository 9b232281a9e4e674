use super::*;
use crate::builder::Builder;
use crate::snapshot::{CompileOptions, Snapshot};
use std::collections::BTreeSet;
use std::path::Path;

fn opts(cidrs: &[&str]) -> CompileOptions {
    CompileOptions {
        service_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        ..Default::default()
    }
}

fn svc(name: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]{extra}}}\n"
    )
}

fn ips(s: &Snapshot, name: &str) -> Vec<String> {
    s.service("default", name)
        .unwrap()
        .cluster_ips
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn build(o: &CompileOptions, files: &[(&str, String)]) -> std::sync::Arc<Snapshot> {
    let mut b = Builder::new(o.clone());
    for (f, text) in files {
        b.update_file(Path::new(f), Some(text.as_bytes()));
    }
    b.build()
}

#[test]
fn cidrs_parse_and_mask() {
    let c: ServiceCidr = "10.96.5.5/12".parse().unwrap();
    assert_eq!(c.to_string(), "10.96.0.0/12");
    assert_eq!(c.kubernetes().to_string(), "10.96.0.1");
    assert!(c.contains(&"10.111.255.254".parse().unwrap()));
    assert!(!c.contains(&"10.112.0.1".parse().unwrap()));
    let v6: ServiceCidr = "fd00:10:96::/108".parse().unwrap();
    assert_eq!(v6.kubernetes().to_string(), "fd00:10:96::1");
    assert!("10.0.0.0/31".parse::<ServiceCidr>().is_err());
    assert!("10.0.0.0".parse::<ServiceCidr>().is_err());
    assert!("10.0.0.0/33".parse::<ServiceCidr>().is_err());
}

/// The same Services get the same addresses on every start, whatever
/// order their files are read in, and none is handed out twice.
#[test]
fn allocation_is_deterministic_and_unique() {
    let o = opts(&["10.0.0.0/28"]);
    let files: Vec<(String, String)> = (0..10)
        .map(|i| (format!("{i}.yaml"), svc(&format!("s{i}"), "")))
        .collect();
    let fwd: Vec<(&str, String)> = files.iter().map(|(f, t)| (f.as_str(), t.clone())).collect();
    let rev: Vec<(&str, String)> = fwd.iter().rev().cloned().collect();
    let (a, b) = (build(&o, &fwd), build(&o, &rev));
    let mut seen = BTreeSet::new();
    for i in 0..10 {
        let name = format!("s{i}");
        assert_eq!(ips(&a, &name), ips(&b, &name));
        let ip = ips(&a, &name)[0].clone();
        assert!(seen.insert(ip.clone()), "{ip} twice");
        // Never the network address, kubernetes' or the broadcast address.
        assert!(
            !["10.0.0.0", "10.0.0.1", "10.0.0.15"].contains(&ip.as_str()),
            "{ip}"
        );
        assert!(a.service("default", &name).unwrap().allocated.cluster_ips);
    }
    assert!(a.errors.is_empty(), "{:?}", a.errors);
}

/// An address a Service names is never handed to another, even when the
/// others are read first and would hash to it.
#[test]
fn explicit_addresses_are_reserved_first() {
    // The pool of a /29 is .2 to .6: four Services without an address and
    // one naming .4 fill it exactly.
    let o = opts(&["10.0.0.0/29"]);
    let names = ["a", "b", "c", "d"];
    let auto: String = names.iter().map(|n| svc(n, "")).collect();
    let s = build(
        &o,
        &[
            ("0-auto.yaml", auto),
            ("1-explicit.yaml", svc("x", ", clusterIP: 10.0.0.4")),
        ],
    );
    assert_eq!(ips(&s, "x"), ["10.0.0.4"]);
    assert!(!s.service("default", "x").unwrap().allocated.cluster_ips);
    let all: BTreeSet<String> = names.iter().map(|n| ips(&s, n)[0].clone()).collect();
    assert_eq!(
        all,
        ["10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
            .map(String::from)
            .into()
    );
    assert!(s.errors.is_empty(), "{:?}", s.errors);
}

/// A running process never moves an allocated address while its Service
/// exists, whatever comes and goes around it.
#[test]
fn allocations_are_stable_while_others_come_and_go() {
    let o = opts(&["10.0.0.0/24"]);
    let mut b = Builder::new(o);
    let up = |b: &mut Builder, f: &str, t: &str| b.update_file(Path::new(f), Some(t.as_bytes()));
    up(&mut b, "a.yaml", &svc("a", ""));
    let first = ips(&b.build(), "a");
    for i in 0..30 {
        up(&mut b, &format!("o{i}.yaml"), &svc(&format!("o{i}"), ""));
    }
    // The Service itself changes (a port), others go.
    up(
        &mut b,
        "a.yaml",
        &svc("a", ", type: ClusterIP, sessionAffinity: ClientIP"),
    );
    for i in 0..30 {
        b.update_file(Path::new(&format!("o{i}.yaml")), None);
    }
    assert_eq!(ips(&b.build(), "a"), first);
    // Gone, its address is free; an explicit one lets the allocation go.
    up(&mut b, "a.yaml", &svc("a", ", clusterIP: 10.0.0.200"));
    let s = b.build();
    assert_eq!(ips(&s, "a"), ["10.0.0.200"]);
    assert!(!s.service("default", "a").unwrap().allocated.cluster_ips);
}

#[test]
fn kubernetes_gets_the_first_address_and_headless_none() {
    let o = opts(&["10.0.0.0/24"]);
    let s = build(
        &o,
        &[
            (
                "k.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, namespace: default}\nspec: {ports: [{port: 443}]}\n".into(),
            ),
            ("h.yaml", svc("h", ", clusterIP: None")),
            ("e.yaml", svc("e", ", type: ExternalName, externalName: example.com")),
        ],
    );
    assert_eq!(ips(&s, "kubernetes"), ["10.0.0.1"]);
    assert!(ips(&s, "h").is_empty());
    assert!(ips(&s, "e").is_empty());
}

#[test]
fn dual_stack_follows_ip_families_and_policy() {
    let o = opts(&["10.0.0.0/24", "fd00::/112"]);
    let s = build(
        &o,
        &[
            ("a.yaml", svc("single", "")),
            ("b.yaml", svc("prefer", ", ipFamilyPolicy: PreferDualStack")),
            (
                "c.yaml",
                svc(
                    "v6first",
                    ", ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv6, IPv4]",
                ),
            ),
            ("d.yaml", svc("v6only", ", ipFamilies: [IPv6]")),
        ],
    );
    let fam = |n: &str| -> Vec<bool> {
        s.service("default", n)
            .unwrap()
            .cluster_ips
            .iter()
            .map(|i| i.is_ipv4())
            .collect()
    };
    assert_eq!(fam("single"), [true]);
    assert_eq!(fam("prefer"), [true, false]);
    assert_eq!(fam("v6first"), [false, true]);
    assert_eq!(fam("v6only"), [false]);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    // RequireDualStack with one family of ranges: the API server refuses it.
    let s = build(
        &opts(&["10.0.0.0/24"]),
        &[("c.yaml", svc("c", ", ipFamilyPolicy: RequireDualStack"))],
    );
    assert_eq!(s.errors[0].field.as_deref(), Some("spec.ipFamilyPolicy"));
}

#[test]
fn node_ports_and_health_check_ports_are_allocated_in_range() {
    let o = opts(&["10.0.0.0/24"]);
    let lb = "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}, {name: web, port: 80, nodePort: 30080}]\n";
    let s = build(
        &o,
        &[
            ("lb.yaml", lb.into()),
            ("n.yaml", svc("np", ", type: NodePort")),
        ],
    );
    let l = s.service("default", "lb").unwrap();
    let udp = l.ports[0].node_port.unwrap();
    assert!((30000..=32767).contains(&udp));
    assert_eq!(l.ports[1].node_port, Some(udp), "one number, one nodePort");
    assert_eq!(l.ports[2].node_port, Some(30080));
    assert_eq!(l.allocated.node_ports, [53]);
    let hc = l.health_check_node_port.unwrap();
    assert!(l.allocated.health_check_node_port);
    let np = s.service("default", "np").unwrap().ports[0]
        .node_port
        .unwrap();
    let all: BTreeSet<u16> = [udp, 30080, hc, np].into();
    assert_eq!(all.len(), 4, "{all:?}");
    // LoadBalancers may opt out of nodePorts.
    let s = build(
        &o,
        &[(
            "n.yaml",
            svc(
                "x",
                ", type: LoadBalancer, allocateLoadBalancerNodePorts: false",
            ),
        )],
    );
    assert_eq!(s.service("default", "x").unwrap().ports[0].node_port, None);
}

#[test]
fn an_exhausted_range_is_an_error_naming_the_field() {
    let o = opts(&["10.0.0.0/30"]);
    let s = build(&o, &[("a.yaml", svc("a", "") + &svc("b", ""))]);
    let (a, b) = (ips(&s, "a"), ips(&s, "b"));
    assert_eq!(a.len() + b.len(), 1, "{a:?} {b:?}");
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].field.as_deref(), Some("spec.clusterIP"));
    assert!(
        s.errors[0]
            .reason
            .contains("no free address left in 10.0.0.0/30")
    );
}

/// One EndpointSlice per family for Service `name`, port 8080.
fn slices(name: &str) -> String {
    let mut s = String::new();
    for (ty, addr) in [("IPv4", "10.1.0.5"), ("IPv6", "fd00:1::5")] {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: {ty}\nendpoints: [{{addresses: [\"{addr}\"]}}]\nports: [{{port: 8080}}]\n",
            ty.to_ascii_lowercase()
        ));
    }
    s
}

/// The endpoints a Service without a clusterIP takes are those of the
/// families it is allocated, not IPv4 whatever the ranges.
#[test]
fn endpoints_follow_the_allocated_families() {
    let backends = |s: &Snapshot, n: &str| -> Vec<bool> {
        s.service("default", n).unwrap().ports[0]
            .backends
            .iter()
            .map(|b| b.addr().is_ipv4())
            .collect()
    };
    let all = |o: &CompileOptions| {
        build(
            o,
            &[
                ("a.yaml", svc("single", "") + &slices("single")),
                ("b.yaml", svc("v6", ", ipFamilies: [IPv6]") + &slices("v6")),
                (
                    "c.yaml",
                    svc("dual", ", ipFamilyPolicy: PreferDualStack") + &slices("dual"),
                ),
                (
                    "d.yaml",
                    svc("headless", ", clusterIP: None, selector: {app: x}") + &slices("headless"),
                ),
            ],
        )
    };
    let s = all(&opts(&["10.0.0.0/24", "fd00::/112"]));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(backends(&s, "single"), [true]);
    assert_eq!(backends(&s, "v6"), [false]);
    assert_eq!(backends(&s, "dual").len(), 2);
    assert_eq!(
        backends(&s, "headless"),
        [true],
        "SingleStack, the first family"
    );
    // An IPv6-first cluster: Services default to IPv6.
    let s = all(&opts(&["fd00::/112", "10.0.0.0/24"]));
    assert_eq!(backends(&s, "single"), [false]);
    assert_eq!(backends(&s, "headless"), [false]);
    // Two families with SingleStack: the API server refuses it.
    let s = build(
        &opts(&["10.0.0.0/24", "fd00::/112"]),
        &[("e.yaml", svc("two", ", ipFamilies: [IPv4, IPv6]"))],
    );
    assert_eq!(s.errors[0].field.as_deref(), Some("spec.ipFamilies"));
}
