//! Topology-aware routing as kube-proxy does it: with zone hints on every
//! ready endpoint, a node uses the endpoints hinted for its zone.

mod common;
use common::*;
use proxy::Config;
use std::net::SocketAddr;

/// Service `name` at `vip:8080` with `meta`/`spec` lines added, and a slice
/// whose endpoints are (address, node, hints as YAML flow mapping or none).
fn hinted(
    name: &str,
    vip: &str,
    port: u16,
    (meta, spec): (&str, &str),
    eps: &[(&str, &str, Option<String>)],
) -> String {
    let mut slice = String::new();
    for (ip, node, hints) in eps {
        slice.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
        ));
        if let Some(h) = hints {
            slice.push_str(&format!("  hints: {h}\n"));
        }
    }
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
{meta}spec:
  clusterIP: {vip}
{spec}  ports: [{{name: p, port: 8080, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: p, port: {port}}}]
endpoints:
{slice}"
    )
}

/// A Service asking for topology-aware routing (the annotation), and a
/// slice whose endpoints carry the given zone hints (`None`: no hints).
fn zoned(port: u16, eps: &[(&str, Option<&str>)]) -> String {
    let eps: Vec<_> = eps
        .iter()
        .map(|(ip, zone)| {
            (
                *ip,
                "node-x",
                zone.map(|z| format!("{{forZones: [{{name: {z}}}]}}")),
            )
        })
        .collect();
    let meta = "  annotations: {service.kubernetes.io/topology-mode: Auto}\n";
    hinted("zoned", "127.0.62.100", port, (meta, ""), &eps)
}

#[tokio::test]
async fn zone_hints_keep_traffic_in_the_nodes_zone() {
    let a = Backend::start("127.0.62.1:0".parse().unwrap(), "zone-a").await;
    let _b = Backend::same_port("127.0.62.2", &a, "zone-b").await;
    let port = a.addr.port();
    let svc: SocketAddr = "127.0.62.100:8080".parse().unwrap();
    let cfg = Config {
        node_zone: Some("zone-a".into()),
        ..Config::default()
    };
    let hinted = [
        ("127.0.62.1", Some("zone-a")),
        ("127.0.62.2", Some("zone-b")),
    ];
    let mut h = Harness::start(&zoned(port, &hinted), cfg).await;
    for _ in 0..6 {
        assert_eq!(hello(svc).await.0, "zone-a");
    }
    // One ready endpoint without hints: hints are ignored for the Service.
    h.update(&zoned(
        port,
        &[("127.0.62.1", Some("zone-a")), ("127.0.62.2", None)],
    ))
    .await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(hello(svc).await.0);
    }
    assert_eq!(seen.len(), 2, "both endpoints in use: {seen:?}");
    // No endpoint for this zone: all of them, never none.
    h.update(&zoned(port, &[("127.0.62.2", Some("zone-b"))]))
        .await;
    assert_eq!(hello(svc).await.0, "zone-b");
}

#[tokio::test]
async fn prefer_same_node_keeps_traffic_on_this_node() {
    let a = Backend::start("127.0.62.11:0".parse().unwrap(), "on-a").await;
    let _b = Backend::same_port("127.0.62.12", &a, "on-b").await;
    let port = a.addr.port();
    let both = |node: &str| {
        Some(format!(
            "{{forNodes: [{{name: {node}}}], forZones: [{{name: zone-a}}]}}"
        ))
    };
    let yaml = hinted(
        "near",
        "127.0.62.110",
        port,
        ("", "  trafficDistribution: PreferSameNode\n"),
        &[
            ("127.0.62.11", "node-a", both("node-a")),
            ("127.0.62.12", "node-b", both("node-b")),
        ],
    );
    let cfg = Config {
        node_name: Some("node-b".into()),
        node_zone: Some("zone-a".into()),
        ..Config::default()
    };
    let _h = Harness::start(&yaml, cfg).await;
    let svc: SocketAddr = "127.0.62.110:8080".parse().unwrap();
    for _ in 0..6 {
        assert_eq!(
            hello(svc).await.0,
            "on-b",
            "node hints beat the shared zone"
        );
    }
}
