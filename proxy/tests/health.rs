//! kube-proxy's healthCheckNodePort: 200 while the node has ready endpoints
//! of a LoadBalancer Service with externalTrafficPolicy Local, else 503.

mod common;
use common::*;
use proxy::Config;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NODE: &str = "127.0.61.1";
const HC_PORT: u16 = 31999;

async fn probe() -> String {
    probe_at(SocketAddr::new(NODE.parse().unwrap(), HC_PORT)).await
}

async fn probe_at(addr: SocketAddr) -> String {
    let f = async {
        let mut s = TcpStream::connect(addr)
            .await
            .expect("health check port open");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(DEADLINE, f).await.expect("answered")
}

fn web(eps: &[Ep<'_>], policy: &str) -> String {
    let spec = format!(
        "  type: LoadBalancer\n  externalTrafficPolicy: {policy}\n{}",
        if policy == "Local" {
            format!("  healthCheckNodePort: {HC_PORT}\n")
        } else {
            String::new()
        }
    );
    service("web", "127.0.61.10", 18080, "TCP", 8080, eps, &spec, "")
}

#[tokio::test]
async fn health_check_port_follows_local_ready_endpoints() {
    let node: IpAddr = NODE.parse().unwrap();
    let cfg = Config {
        node_ips: vec![node],
        node_name: Some("node-a".into()),
        ..Config::default()
    };
    let remote = Ep {
        node: "node-b",
        ..ready("127.0.61.21")
    };
    let mut h = Harness::start(&web(&[ready("127.0.61.20"), remote], "Local"), cfg).await;
    let r = probe().await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.contains("\"localEndpoints\": 1"),
        "only node-a's endpoint counts: {r}"
    );
    assert!(r.contains("\"namespace\": \"default\""), "{r}");
    assert!(r.contains("\"name\": \"web\""), "{r}");

    // The local pod is terminating: the node fails the check so the load
    // balancer drains it, though the pod still serves its connections.
    let terminating = Ep {
        ready: false,
        terminating: true,
        ..ready("127.0.61.20")
    };
    let remote = Ep {
        node: "node-b",
        ..ready("127.0.61.21")
    };
    h.update(&web(&[terminating, remote], "Local")).await;
    let r = probe().await;
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert!(r.contains("\"localEndpoints\": 0"), "{r}");

    // Policy Cluster: no health-check port any more.
    h.update(&web(&[ready("127.0.61.20")], "Cluster")).await;
    let addr = SocketAddr::new(node, HC_PORT);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the health-check listener is closed"
    );
}

#[tokio::test]
async fn a_health_check_port_that_becomes_a_node_port_proxies() {
    const NODE2: &str = "127.0.61.2";
    const PORT: u16 = 31998;
    let node: IpAddr = NODE2.parse().unwrap();
    let cfg = Config {
        node_ips: vec![node],
        node_name: Some("node-a".into()),
        ..Config::default()
    };
    let be = Backend::start(addr("127.0.61.30:0"), "a").await;
    let eps = [ready("127.0.61.30")];
    let moving = |spec: &str| {
        service(
            "moving",
            "127.0.61.40",
            18081,
            "TCP",
            be.addr.port(),
            &eps,
            spec,
            "",
        )
    };
    let lb = moving(&format!(
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: {PORT}\n"
    ));
    let mut h = Harness::start(&lb, cfg).await;
    let at = SocketAddr::new(node, PORT);
    let out = probe_at(at).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");

    // The next generation gives the same port to the Service as a nodePort:
    // the health server must make way for the proxy.
    let np = moving("  type: NodePort\n").replace(
        &format!("targetPort: {}}}", be.addr.port()),
        &format!("targetPort: {}, nodePort: {PORT}}}", be.addr.port()),
    );
    assert!(np.contains("nodePort: 31998"), "{np}");
    h.update(&np).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(Ok(mut c)) =
            tokio::time::timeout(DEADLINE, connect_from("127.0.61.99".parse().unwrap(), at)).await
        {
            let mut line = [0u8; 2];
            if tokio::time::timeout(DEADLINE, c.read_exact(&mut line))
                .await
                .is_ok_and(|r| r.is_ok())
                && &line == b"a\n"
            {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node port never reached the backend"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
