use super::*;
use model::{Builder, CompileOptions};
use std::path::Path;

const FIXTURE: &str = include_str!("../../tests/fixture.yaml");

fn opts() -> TableOptions {
    TableOptions {
        zone: "cluster.local".into(),
        ttl: 5,
        pod_records: true,
    }
}

fn table_from(yaml: &str, opts: &TableOptions) -> Table {
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("x.yaml"), Some(yaml.as_bytes()));
    let snap = b.build();
    assert!(snap.errors.is_empty(), "fixture errors: {:?}", snap.errors);
    Table::compile(&snap, opts)
}

fn table() -> Table {
    table_from(FIXTURE, &opts())
}

fn name(s: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(s).unwrap())
}

/// The answer's rdata as text, sorted; panics on a non-answer.
fn answers(t: &Table, n: &str, qtype: RecordType) -> Vec<String> {
    match t.lookup(&name(n), qtype) {
        Lookup::Answer(set) => {
            let mut v: Vec<String> = set.answers.iter().map(|r| r.data.to_string()).collect();
            v.sort();
            v
        }
        Lookup::Synthesized(set) => {
            let mut v: Vec<String> = set.answers.iter().map(|r| r.data.to_string()).collect();
            v.sort();
            v
        }
        other => panic!("{n} {qtype}: expected an answer, got {other:?}"),
    }
}

fn kind(t: &Table, n: &str, qtype: RecordType) -> &'static str {
    match t.lookup(&name(n), qtype) {
        Lookup::Answer(_) | Lookup::Synthesized(_) => "answer",
        Lookup::Cname(_) => "cname",
        Lookup::NoData => "nodata",
        Lookup::NxDomain => "nxdomain",
        Lookup::NotOurs => "notours",
    }
}

#[test]
fn dns_version_and_apex() {
    let t = table();
    assert_eq!(
        answers(&t, "dns-version.cluster.local.", RecordType::TXT),
        vec!["1.1.0"]
    );
    match t.lookup(&name("dns-version.cluster.local."), RecordType::TXT) {
        Lookup::Answer(set) => assert_eq!(set.answers[0].ttl, 28800),
        other => panic!("{other:?}"),
    }
    let soa = answers(&t, "cluster.local.", RecordType::SOA);
    assert!(
        soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"),
        "{soa:?}"
    );
    assert_eq!(
        answers(&t, "cluster.local.", RecordType::NS),
        vec!["ns.dns.cluster.local."]
    );
    assert_eq!(kind(&t, "cluster.local.", RecordType::A), "nodata");
}

#[test]
fn cluster_ip_service_answers_its_cluster_ips() {
    let t = table();
    assert_eq!(
        answers(&t, "web.default.svc.cluster.local.", RecordType::A),
        vec!["127.96.0.10"]
    );
    assert_eq!(
        kind(&t, "web.default.svc.cluster.local.", RecordType::AAAA),
        "nodata"
    );
    assert_eq!(
        kind(&t, "web.default.svc.cluster.local.", RecordType::TXT),
        "nodata"
    );
    assert_eq!(
        answers(&t, "dual.default.svc.cluster.local.", RecordType::AAAA),
        vec!["fd00::11"]
    );
    // no endpoints at all: still the ClusterIP
    assert_eq!(
        answers(&t, "noeps.default.svc.cluster.local.", RecordType::A),
        vec!["127.96.0.12"]
    );
    // ready endpoints get names too; not-ready ones do not
    assert_eq!(
        answers(
            &t,
            "127-0-0-1.web.default.svc.cluster.local.",
            RecordType::A
        ),
        vec!["127.0.0.1"]
    );
    assert_eq!(
        kind(
            &t,
            "127-0-0-3.web.default.svc.cluster.local.",
            RecordType::A
        ),
        "nxdomain"
    );
}

#[test]
fn headless_service_answers_ready_endpoints_and_hostnames() {
    let t = table();
    let n = "nginx.default.svc.cluster.local.";
    assert_eq!(
        answers(&t, n, RecordType::A),
        vec!["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    );
    assert_eq!(answers(&t, n, RecordType::AAAA), vec!["fd00::1:5"]);
    assert_eq!(
        answers(&t, "web-0.nginx.default.svc.cluster.local.", RecordType::A),
        vec!["127.0.1.1"]
    );
    assert_eq!(
        answers(
            &t,
            "127-0-1-3.nginx.default.svc.cluster.local.",
            RecordType::A
        ),
        vec!["127.0.1.3"]
    );
    assert_eq!(
        answers(
            &t,
            "fd00--1-5.nginx.default.svc.cluster.local.",
            RecordType::AAAA
        ),
        vec!["fd00::1:5"]
    );
    assert_eq!(
        kind(&t, "web-9.nginx.default.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
    // headless without ready endpoints does not exist
    assert_eq!(
        kind(&t, "gone.other.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
}

#[test]
fn srv_records_follow_coredns() {
    let t = table();
    // ClusterIP: one record targeting the Service; address in Additional.
    match t.lookup(
        &name("_http._tcp.web.default.svc.cluster.local."),
        RecordType::SRV,
    ) {
        // Not stored: made when asked (the fast path has it precompiled).
        Lookup::Synthesized(set) => {
            assert_eq!(set.answers.len(), 1);
            assert_eq!(
                set.answers[0].data.to_string(),
                "0 100 80 web.default.svc.cluster.local."
            );
            assert_eq!(set.additionals[0].data.to_string(), "127.96.0.10");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        answers(
            &t,
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        vec!["0 100 53 web.default.svc.cluster.local."]
    );
    // wrong protocol label: no such name
    assert_eq!(
        kind(
            &t,
            "_dns._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        "nxdomain"
    );
    // headless: one per ready endpoint, weight floor(100/4) = 25, the endpoint port
    let got = answers(
        &t,
        "_web._tcp.nginx.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        got,
        vec![
            "0 25 8080 127-0-1-3.nginx.default.svc.cluster.local.",
            "0 25 8080 fd00--1-5.nginx.default.svc.cluster.local.",
            "0 25 8080 web-0.nginx.default.svc.cluster.local.",
            "0 25 8080 web-1.nginx.default.svc.cluster.local.",
        ]
    );
    match t.lookup(
        &name("_web._tcp.nginx.default.svc.cluster.local."),
        RecordType::SRV,
    ) {
        Lookup::Answer(set) => assert_eq!(set.additionals.len(), 4),
        other => panic!("{other:?}"),
    }
    // bare SRV on the Service: all ports, weight floor(100/2)
    assert_eq!(
        answers(&t, "web.default.svc.cluster.local.", RecordType::SRV),
        vec![
            "0 50 53 web.default.svc.cluster.local.",
            "0 50 80 web.default.svc.cluster.local."
        ]
    );
    // the intermediate `_tcp` label exists (empty non-terminal)
    assert_eq!(
        kind(&t, "_tcp.web.default.svc.cluster.local.", RecordType::SRV),
        "nodata"
    );
}

#[test]
fn weights_are_floor_of_100_over_n() {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None, ports: [{name: p, port: 1}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: h, labels: {kubernetes.io/service-name: h}}\naddressType: IPv4\nports: [{name: p, port: 1}]\nendpoints:\n",
    );
    for i in 0..3 {
        yaml.push_str(&format!("- addresses: [10.1.0.{i}]\n"));
    }
    let t = table_from(&yaml, &opts());
    let got = answers(&t, "_p._tcp.h.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|s| s.starts_with("0 33 1 ")), "{got:?}");
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    let t = table();
    assert_eq!(
        answers(&t, "10.0.96.127.in-addr.arpa.", RecordType::PTR),
        vec!["web.default.svc.cluster.local."]
    );
    assert_eq!(
        answers(&t, "1.1.0.127.in-addr.arpa.", RecordType::PTR),
        vec!["web-0.nginx.default.svc.cluster.local."]
    );
    assert_eq!(
        answers(&t, "2.0.0.127.in-addr.arpa.", RecordType::PTR),
        vec!["127-0-0-2.web.default.svc.cluster.local."]
    );
    let v6 = Name::from("fd00::11".parse::<IpAddr>().unwrap());
    assert_eq!(
        answers(&t, &v6.to_ascii(), RecordType::PTR),
        vec!["dual.default.svc.cluster.local."]
    );
    // unknown reverse names are not ours: they are forwarded
    assert_eq!(
        kind(&t, "9.9.9.127.in-addr.arpa.", RecordType::PTR),
        "notours"
    );
    assert_eq!(
        kind(&t, "3.0.0.127.in-addr.arpa.", RecordType::PTR),
        "notours"
    );
}

#[test]
fn external_name_is_a_cname() {
    let t = table();
    match t.lookup(&name("ext.other.svc.cluster.local."), RecordType::A) {
        Lookup::Cname(c) => {
            assert_eq!(c.record.data.to_string(), "www.example.org.");
            assert_eq!(c.target, name("www.example.org."));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        kind(&t, "x.ext.other.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
    assert_eq!(
        kind(&t, "byip.other.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
}

#[test]
fn negative_answers_as_coredns() {
    let t = table();
    assert_eq!(
        kind(&t, "nope.default.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
    assert_eq!(
        kind(&t, "web.nope.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
    assert_eq!(
        kind(&t, "a.b.web.default.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
    assert_eq!(
        kind(&t, "default.svc.cluster.local.", RecordType::A),
        "nodata"
    );
    assert_eq!(
        kind(&t, "empty.svc.cluster.local.", RecordType::A),
        "nodata"
    );
    assert_eq!(kind(&t, "svc.cluster.local.", RecordType::A), "nodata");
    assert_eq!(kind(&t, "pod.cluster.local.", RecordType::A), "nodata");
    assert_eq!(
        kind(&t, "nope.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
    assert_eq!(kind(&t, "example.com.", RecordType::A), "notours");
}

#[test]
fn lookups_ignore_case() {
    let t = table();
    assert_eq!(
        answers(&t, "WEB.Default.SVC.cluster.LOCAL.", RecordType::A),
        vec!["127.96.0.10"]
    );
    assert_eq!(
        kind(
            &t,
            "_HTTP._Tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        ),
        "answer"
    );
}

#[test]
fn pod_records_are_synthesized_and_can_be_disabled() {
    let t = table();
    assert_eq!(
        answers(&t, "127-2-3-4.default.pod.cluster.local.", RecordType::A),
        vec!["127.2.3.4"]
    );
    assert_eq!(
        answers(&t, "fd00--7.default.pod.cluster.local.", RecordType::AAAA),
        vec!["fd00::7"]
    );
    assert_eq!(
        kind(&t, "127-2-3-4.default.pod.cluster.local.", RecordType::AAAA),
        "nodata"
    );
    assert_eq!(
        kind(&t, "not-an-ip.default.pod.cluster.local.", RecordType::A),
        "nxdomain"
    );
    assert_eq!(
        kind(&t, "default.pod.cluster.local.", RecordType::A),
        "nodata"
    );
    let off = TableOptions {
        pod_records: false,
        ..opts()
    };
    let t = table_from(FIXTURE, &off);
    assert_eq!(
        kind(&t, "127-2-3-4.default.pod.cluster.local.", RecordType::A),
        "nxdomain"
    );
}

#[test]
fn ttl_and_zone_are_configurable() {
    let o = TableOptions {
        zone: "Corp.Example.".into(),
        ttl: 30,
        pod_records: true,
    };
    let t = table_from(FIXTURE, &o);
    match t.lookup(&name("web.default.svc.corp.example."), RecordType::A) {
        Lookup::Synthesized(set) => assert_eq!(set.answers[0].ttl, 30),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        kind(&t, "web.default.svc.cluster.local.", RecordType::A),
        "notours"
    );
    // the SOA's own TTL is capped at 300; its minimum is the TTL
    assert_eq!(t.soa().ttl, 30);
    let o = TableOptions {
        ttl: 3600,
        ..opts()
    };
    let t = table_from(FIXTURE, &o);
    assert_eq!(t.soa().ttl, 300);
}

#[test]
fn empty_snapshot_is_generation_zero() {
    let t = Table::empty(&opts());
    assert_eq!(t.generation, 0);
    assert_eq!(
        kind(&t, "web.default.svc.cluster.local.", RecordType::A),
        "nxdomain"
    );
}

use model::testing::Rng;

/// One random manifest change: Services of every DNS shape sharing
/// addresses (PTR names with several owners), slices that move, namespaces.
fn dns_change(r: &mut Rng) -> (String, Option<String>) {
    let ns = ["a", "b"][r.below(2) as usize];
    let svc = ["web", "db", "ext"][r.below(3) as usize];
    let ip = |r: &mut Rng| format!("127.0.5.{}", 1 + r.below(3));
    let (file, text) = match r.below(4) {
        0 => {
            let spec = match r.below(4) {
                0 => "clusterIP: None".to_string(),
                1 => "type: ExternalName, externalName: example.com".to_string(),
                _ => format!("clusterIP: {}", ip(r)),
            };
            (
                format!("svc-{ns}-{svc}"),
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: {ns}}}\nspec: {{{spec}, ports: [{{name: http, port: 80}}, {{port: 81, protocol: UDP, name: dns}}]}}\n"
                ),
            )
        }
        1 | 2 => {
            let slice = ["s1", "s2"][r.below(2) as usize];
            let mut eps = String::new();
            for _ in 0..r.below(3) {
                let host = if r.below(2) == 0 {
                    ", hostname: h0"
                } else {
                    ""
                };
                eps.push_str(&format!(
                    "- {{addresses: [{}]{host}, conditions: {{ready: {}}}}}\n",
                    ip(r),
                    r.below(3) != 0
                ));
            }
            if eps.is_empty() {
                eps.push_str("[]\n");
            }
            (
                format!("slice-{ns}-{slice}"),
                format!(
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {slice}, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}"
                )
                .replace("endpoints:\n[]", "endpoints: []"),
            )
        }
        _ => {
            let name = ["a", "b", "c"][r.below(3) as usize];
            (
                format!("ns-{name}"),
                format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
            )
        }
    };
    let text = (r.below(4) != 0).then_some(text);
    (format!("{file}.yaml"), text)
}

#[test]
fn updates_equal_fresh_compiles_after_every_change() {
    for pod_records in [true, false] {
        let o = TableOptions {
            pod_records,
            ..opts()
        };
        for seed in 1..=15u64 {
            let mut r = Rng::new(seed);
            let mut b = Builder::new(CompileOptions::default());
            let mut t = Table::empty(&o);
            for step in 0..25 {
                for _ in 0..1 + r.below(2) {
                    let (file, text) = dns_change(&mut r);
                    b.update_file(Path::new(&file), text.as_deref().map(str::as_bytes));
                }
                let snap = b.build();
                t = Table::update(Some(&t), &snap, &o);
                let fresh = Table::compile(&snap, &o);
                assert_eq!(
                    t.describe(),
                    fresh.describe(),
                    "seed {seed} step {step} (pod records {pod_records})"
                );
            }
        }
    }
}

#[test]
fn an_update_rebuilds_only_what_changed() {
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("x.yaml"), Some(FIXTURE.as_bytes()));
    let t1 = Table::compile(&b.build(), &opts());
    b.update_file(
        Path::new("y.yaml"),
        Some(b"apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec: {clusterIP: 127.96.0.99, ports: [{port: 80}]}\n"),
    );
    let t2 = Table::update(Some(&t1), &b.build(), &opts());
    let stored = t2.nodes.diff(&t1.nodes, Arc::ptr_eq);
    let mut names: Vec<String> = stored
        .iter()
        .map(|d| match d {
            Diff::Added(k, _) | Diff::Changed(k, _, _) | Diff::Removed(k, _) => k.to_string(),
        })
        .collect();
    names.sort();
    // The apex (its SOA serial) is rebuilt; the new Service is not stored.
    assert_eq!(
        names,
        [
            "cluster.local.",
            "dns-version.cluster.local.",
            "pod.cluster.local.",
            "svc.cluster.local.",
        ]
    );
    // Fast answers: the apex's, and the new Service's name and PTR.
    let mut fast = t2.fast.changed_since(&t1.fast);
    fast.sort();
    assert_eq!(
        fast,
        [
            "99.0.96.127.in-addr.arpa.",
            "cluster.local.",
            "dns-version.cluster.local.",
            "late.default.svc.cluster.local.",
            "pod.cluster.local.",
            "svc.cluster.local.",
        ]
    );
    assert_eq!(
        answers(&t2, "late.default.svc.cluster.local.", RecordType::A),
        vec!["127.96.0.99"]
    );
}

/// A big batch compiles its fast answers in parallel: the same table as
/// one built in steps small enough to compile them one by one.
#[test]
fn parallel_batches_equal_sequential_updates() {
    let yaml = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{clusterIP: 127.1.{}.{}, ports: [{{name: http, port: 80}}]}}\n",
                    i / 250,
                    i % 250
                )
            })
            .collect()
    };
    let n = PARALLEL_FROM + 10;
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("a.yaml"), Some(yaml(n / 2).as_bytes()));
    let half = b.build();
    b.update_file(Path::new("a.yaml"), Some(yaml(n).as_bytes()));
    let all = b.build();
    let stepwise = Table::update(Some(&Table::compile(&half, &opts())), &all, &opts());
    let batch = Table::compile(&all, &opts());
    assert_eq!(stepwise.describe(), batch.describe());
}

/// An endpoint whose hostname is no DNS label gets no name, so its address
/// is not ours: the reverse name is forwarded, not an empty answer.
#[test]
fn an_endpoint_without_a_valid_name_has_no_reverse_name() {
    let long = "h".repeat(64);
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: hl}}\nspec: {{clusterIP: None, ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: hl-1, labels: {{kubernetes.io/service-name: hl}}}}\naddressType: IPv4\nports: [{{port: 80}}]\nendpoints:\n- addresses: [127.0.5.1]\n  hostname: {long}\n- addresses: [127.0.5.2]\n  hostname: ok\n"
    );
    let t = table_from(&yaml, &opts());
    assert_eq!(
        kind(&t, "1.5.0.127.in-addr.arpa.", RecordType::PTR),
        "notours"
    );
    assert_eq!(
        answers(&t, "2.5.0.127.in-addr.arpa.", RecordType::PTR),
        vec!["ok.hl.default.svc.cluster.local."]
    );
}
