//! End-to-end tests of the L4 plane: the real binary, `nodeway echo`
//! backends, ClusterIPs and node addresses on 127.0.6x.x.

mod support;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;
use support::{Echo, Nodeway, free_port, http_get, wait_for, write_manifests};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Service default/web (TCP 8080 + UDP 5353, NodePort 30061) and its slice.
fn web(port: u16, endpoints: &[&str]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|e| format!("- addresses: [\"{e}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: NodePort
  clusterIP: 127.0.61.100
  ports:
  - {{name: http, port: 8080, protocol: TCP, targetPort: {port}, nodePort: 30061}}
  - {{name: dns, port: 5353, protocol: UDP, targetPort: {port}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {{name: http, port: {port}, protocol: TCP}}
- {{name: dns, port: {port}, protocol: UDP}}
endpoints:
{eps}"
    )
}

fn hostname(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "web", "/hostname").expect("GET /hostname");
    assert_eq!(status, 200);
    body
}

#[test]
fn l4_clusterip_nodeport_udp_and_reload() {
    let port = free_port(ip("127.0.61.1"));
    let _a = Echo::start(SocketAddr::new(ip("127.0.61.1"), port), "web-a");
    let _b = Echo::start(SocketAddr::new(ip("127.0.61.2"), port), "web-b");
    let dir = tempfile::tempdir().unwrap();
    write_manifests(
        dir.path(),
        "web.yaml",
        &web(port, &["127.0.61.1", "127.0.61.2"]),
    );
    let n = Nodeway::start(dir.path(), &["--node-ip", "127.0.61.50"]);

    let svc: SocketAddr = "127.0.61.100:8080".parse().unwrap();
    let mut names: Vec<String> = (0..4).map(|_| hostname(svc)).collect();
    assert_ne!(names[0], names[1], "round-robin alternates: {names:?}");
    names.sort();
    assert_eq!(names, ["web-a", "web-a", "web-b", "web-b"]);
    let via_node_port = hostname("127.0.61.50:30061".parse().unwrap());
    assert!(via_node_port.starts_with("web-"), "{via_node_port}");

    // UDP: the reply comes back from the Service address.
    let u = UdpSocket::bind("127.0.61.201:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let udp_svc: SocketAddr = "127.0.61.100:5353".parse().unwrap();
    u.send_to(b"hostname", udp_svc).unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = u.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, udp_svc);
    let first = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(first.starts_with("web-"), "{first}");

    // Reload: only web-b remains. New TCP connections and the existing UDP
    // session both move to it.
    let g = n.generation();
    write_manifests(dir.path(), "web.yaml", &web(port, &["127.0.61.2"]));
    n.wait_generation(g + 1);
    // Twice in a row: the old routes alternate, so one web-b alone does
    // not prove the plane has applied the change.
    wait_for(Duration::from_secs(10), "new endpoints applied", || {
        hostname(svc) == "web-b" && hostname(svc) == "web-b"
    });
    for _ in 0..4 {
        assert_eq!(hostname(svc), "web-b");
    }
    u.send_to(b"hostname", udp_svc).unwrap();
    let (len, _) = u.recv_from(&mut buf).expect("UDP reply after reload");
    assert_eq!(&buf[..len], b"web-b");

    let total = n
        .metric("nodeway_l4_connections_total{service=\"default/web\"}")
        .unwrap_or(0.0);
    assert!(total >= 9.0, "connections counted: {total}");
}

#[test]
fn l4_no_endpoints_reset_and_bind_failure_detail() {
    let squatter = TcpListener::bind("127.0.62.101:8080").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = "apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  clusterIP: 127.0.62.100
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: taken, namespace: default}
spec:
  clusterIP: 127.0.62.101
  ports: [{name: http, port: 8080}]
";
    write_manifests(dir.path(), "svc.yaml", yaml);
    // One socket per address, as without root: steered, the Service would
    // take the squatter's address over (proxy/tests/steering.rs).
    let n = Nodeway::start(dir.path(), &["--l4-no-steering"]);

    // No endpoints: the client is reset at once, never left hanging. The
    // reset may already be there when connect() reports back, or come on
    // the first read.
    let outcome = TcpStream::connect_timeout(
        &"127.0.62.100:8080".parse().unwrap(),
        Duration::from_secs(5),
    )
    .and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.read(&mut [0u8; 16])
    });
    match outcome {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected a reset, got {other:?}"),
    }

    // A port someone else holds: reported in /readyz detail and metrics,
    // while the node stays ready.
    let (status, body) = http_get(n.admin, "admin", "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("127.0.62.101:8080") && body.contains("default/taken"),
        "{body}"
    );
    let failures = n.metric("nodeway_l4_bind_failures_total{service=\"default/taken\"}");
    assert!(failures.is_some_and(|f| f >= 1.0), "{failures:?}");
    drop(squatter);
}

/// A Service written without a clusterIP, as real manifests are: it gets
/// one from `--service-cluster-ip-range` (as the API server would have
/// given it), DNS answers it and L4 serves it; `check` marks it allocated.
#[test]
fn a_service_without_cluster_ip_gets_one_that_dns_and_l4_serve() {
    let port = free_port(ip("127.0.62.1"));
    let _a = Echo::start(SocketAddr::new(ip("127.0.62.1"), port), "web-a");
    let dir = tempfile::tempdir().unwrap();
    let manifest = web(port, &["127.0.62.1"])
        .replace("  clusterIP: 127.0.61.100\n", "")
        .replace(", nodePort: 30061", "");
    write_manifests(dir.path(), "web.yaml", &manifest);
    let range = ["--service-cluster-ip-range", "127.0.62.0/24"];
    let n = Nodeway::start(dir.path(), &range);
    let (_, ips) = support::a_record(n.dns, "web.default.svc.cluster.local.");
    assert_eq!(ips.len(), 1, "{ips:?}");
    let svc = SocketAddr::new(ip(&ips[0]), 8080);
    assert!(
        svc.ip() != ip("127.0.62.0") && svc.ip() != ip("127.0.62.1"),
        "{svc}"
    );
    wait_for(
        Duration::from_secs(10),
        "L4 serving the allocated address",
        || http_get(svc, "web", "/hostname").is_ok_and(|(s, b)| s == 200 && b == "web-a"),
    );

    let out = std::process::Command::new(support::bin())
        .args(["check", "--config"])
        .arg(dir.path())
        .args(range)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Another process, the same address: allocation is deterministic.
    let row = text.lines().find(|l| l.contains("default/web")).unwrap();
    assert!(row.contains(&format!("{} (allocated)", svc.ip())), "{text}");
    // And a nodePort for each of the two port numbers.
    assert_eq!(row.matches(" (allocated)").count(), 3, "{row}");
}
