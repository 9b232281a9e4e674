//! Topology-aware routing as kube-proxy does it: with zone hints on every
//! ready endpoint, a node uses the endpoints hinted for its zone.

mod common;
use common::*;
use proxy::Config;
use std::net::SocketAddr;

/// A Service asking for topology-aware routing, and a slice whose endpoints
/// carry the given zone hints (`None`: no hints).
fn zoned(port: u16, eps: &[(&str, Option<&str>)]) -> String {
    let mut slice = String::new();
    for (ip, zone) in eps {
        slice.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: node-x\n"
        ));
        if let Some(z) = zone {
            slice.push_str(&format!("  hints: {{forZones: [{{name: {z}}}]}}\n"));
        }
    }
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: zoned
  namespace: default
  annotations: {{service.kubernetes.io/topology-mode: Auto}}
spec:
  clusterIP: 127.0.62.100
  ports: [{{name: p, port: 8080, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: zoned-1
  namespace: default
  labels: {{kubernetes.io/service-name: zoned}}
addressType: IPv4
ports: [{{name: p, port: {port}}}]
endpoints:
{slice}"
    )
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
    let yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: near, namespace: default}}
spec:
  clusterIP: 127.0.62.110
  trafficDistribution: PreferSameNode
  ports: [{{name: p, port: 8080, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: near-1
  namespace: default
  labels: {{kubernetes.io/service-name: near}}
addressType: IPv4
ports: [{{name: p, port: {port}}}]
endpoints:
- addresses: [\"127.0.62.11\"]
  nodeName: node-a
  hints: {{forNodes: [{{name: node-a}}], forZones: [{{name: zone-a}}]}}
- addresses: [\"127.0.62.12\"]
  nodeName: node-b
  hints: {{forNodes: [{{name: node-b}}], forZones: [{{name: zone-a}}]}}
"
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
