//! Reloads: endpoint changes, listener reconcile, bind failures, shutdown.

mod common;

use common::*;
use model::Protocol;
use proxy::Config;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn echo_line(r: &mut BufReader<TcpStream>, msg: &str) -> String {
    r.get_mut()
        .write_all(format!("{msg}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, r.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    line.trim().to_string()
}

#[tokio::test]
async fn removed_endpoint_keeps_its_connection_but_gets_no_new_ones() {
    let a = Backend::start(addr("127.0.48.1:0"), "a").await;
    let _b = Backend::same_port("127.0.48.2", &a, "b").await;
    let _c = Backend::same_port("127.0.48.3", &a, "c").await;
    let port = a.addr.port();
    let svc = addr("127.0.48.100:8080");
    let mut h = Harness::start(
        &service(
            "re",
            "127.0.48.100",
            8080,
            "TCP",
            port,
            &[ready("127.0.48.1"), ready("127.0.48.2")],
            "",
            "",
        ),
        Config::default(),
    )
    .await;
    // Find a long-lived connection on endpoint a.
    let mut long = None;
    for _ in 0..4 {
        let (name, r) = hello(svc).await;
        if name == "a" {
            long = Some(r);
            break;
        }
    }
    let mut long = long.expect("round-robin reached a");
    // Reload: a removed, c added.
    h.update(&service(
        "re",
        "127.0.48.100",
        8080,
        "TCP",
        port,
        &[ready("127.0.48.2"), ready("127.0.48.3")],
        "",
        "",
    ))
    .await;
    for _ in 0..10 {
        let (name, _) = hello(svc).await;
        assert!(name == "b" || name == "c", "new connection went to {name}");
    }
    assert_eq!(echo_line(&mut long, "still there").await, "still there");
}

#[tokio::test]
async fn reconcile_closes_removed_and_keeps_unchanged_listeners() {
    let a = Backend::start(addr("127.0.56.1:0"), "a").await;
    let _b = Backend::same_port("127.0.56.2", &a, "b").await;
    let port = a.addr.port();
    let keep = |eps: &[Ep<'_>]| service("keep", "127.0.56.100", 8080, "TCP", port, eps, "", "");
    let gone = service(
        "gone",
        "127.0.56.101",
        8080,
        "TCP",
        port,
        &[ready("127.0.56.1")],
        "",
        "",
    );
    let mut h = Harness::start(&(keep(&[ready("127.0.56.1")]) + &gone), Config::default()).await;
    let before = h.proxy.listeners();
    assert_eq!(before.len(), 2, "{before:?}");
    let (name, mut open) = hello(addr("127.0.56.100:8080")).await;
    assert_eq!(name, "a");
    let (_, mut open_gone) = hello(addr("127.0.56.101:8080")).await;

    h.update(&keep(&[ready("127.0.56.2")])).await;
    let after = h.proxy.listeners();
    assert_eq!(after.len(), 1, "{after:?}");
    let kept = before
        .iter()
        .find(|l| l.addr == addr("127.0.56.100:8080"))
        .unwrap();
    assert_eq!(&after[0], kept, "unchanged listener keeps its socket");
    // The removed Service's port is closed...
    let err = TcpStream::connect("127.0.56.101:8080")
        .await
        .expect_err("port closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // ...but connections it had accepted finish normally.
    assert_eq!(echo_line(&mut open_gone, "bye").await, "bye");
    // The kept listener's connection is uninterrupted; new ones use the new endpoint.
    assert_eq!(echo_line(&mut open, "ping").await, "ping");
    assert_eq!(hello(addr("127.0.56.100:8080")).await.0, "b");
}

/// Without steering, each address is a socket of its own (steered, the
/// Service takes the address over, as kube-proxy's DNAT does: see
/// steering.rs).
#[tokio::test]
async fn bind_failure_is_reported_and_isolated() {
    let a = Backend::start(addr("127.0.57.1:0"), "a").await;
    // Someone else holds the second Service's address.
    let squatter = std::net::TcpListener::bind("127.0.57.101:8080").unwrap();
    let yaml = service(
        "ok",
        "127.0.57.100",
        8080,
        "TCP",
        a.addr.port(),
        &[ready("127.0.57.1")],
        "",
        "",
    ) + &service(
        "taken",
        "127.0.57.101",
        8080,
        "TCP",
        a.addr.port(),
        &[ready("127.0.57.1")],
        "",
        "",
    );
    let cfg = Config {
        steering: false,
        ..Config::default()
    };
    let h = Harness::start(&yaml, cfg).await;
    let problems = h.proxy.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("127.0.57.101:8080") && problems[0].contains("default/taken"),
        "{problems:?}"
    );
    assert_eq!(
        h.metric("nodeway_l4_bind_failures_total{service=\"default/taken\"}"),
        Some(1.0)
    );
    assert_eq!(hello(addr("127.0.57.100:8080")).await.0, "a");
    assert_eq!(
        h.proxy
            .listeners()
            .iter()
            .map(|l| (l.addr, l.protocol))
            .collect::<Vec<_>>(),
        vec![(addr("127.0.57.100:8080"), Protocol::Tcp)]
    );
    drop(squatter);
}

/// Past its share of the open-file limit the plane binds nothing more, and
/// says so once, instead of starving DNS, Ingress and connections of fds
/// (one socket per address: steering would serve all three with one).
#[tokio::test]
async fn listener_budget_is_never_exceeded() {
    let a = Backend::start(addr("127.0.58.1:0"), "a").await;
    let svc = |name: &str, ip: &str| tcp_service(name, ip, &a, "127.0.58.1");
    let yaml =
        svc("one", "127.0.58.100") + &svc("two", "127.0.58.101") + &svc("three", "127.0.58.102");
    let cfg = Config {
        max_listeners: 2,
        steering: false,
        ..Config::default()
    };
    let h = Harness::start(&yaml, cfg).await;
    assert_eq!(h.proxy.listeners().len(), 2);
    let problems = h.proxy.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("1 Service addresses not bound"),
        "{problems:?}"
    );
    // The first two (by address) are served.
    assert_eq!(hello(addr("127.0.58.100:8080")).await.0, "a");
    assert_eq!(hello(addr("127.0.58.101:8080")).await.0, "a");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_resets_after_grace() {
    let a = Backend::start(addr("127.0.58.1:0"), "a").await;
    let yaml = service(
        "sd",
        "127.0.58.100",
        8080,
        "TCP",
        a.addr.port(),
        &[ready("127.0.58.1")],
        "",
        "",
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let (_, mut open) = hello(addr("127.0.58.100:8080")).await;
    let Harness { proxy, .. } = h;
    tokio::time::timeout(DEADLINE, proxy.shutdown(Duration::from_millis(100)))
        .await
        .expect("shutdown bounded");
    let err = TcpStream::connect("127.0.58.100:8080")
        .await
        .expect_err("listener closed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The open connection outlived the grace period, so it was reset.
    open.get_mut().write_all(b"x\n").await.ok();
    let mut line = String::new();
    let r = tokio::time::timeout(DEADLINE, open.read_line(&mut line))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(_) | Ok(0)),
        "connection ended: {r:?} {line:?}"
    );
}

#[tokio::test]
async fn round_robin_continues_across_a_reload() {
    let a = Backend::start(addr("127.0.48.11:0"), "a").await;
    let _b = Backend::same_port("127.0.48.12", &a, "b").await;
    let _c = Backend::same_port("127.0.48.13", &a, "c").await;
    let port = a.addr.port();
    let svc = addr("127.0.48.110:8080");
    let eps = [
        ready("127.0.48.11"),
        ready("127.0.48.12"),
        ready("127.0.48.13"),
    ];
    let yaml = |meta: &str| service("rr", "127.0.48.110", 8080, "TCP", port, &eps, "", meta);
    let mut h = Harness::start(&yaml(""), Config::default()).await;
    let mut names = vec![hello(svc).await.0, hello(svc).await.0];
    // A reload that leaves the endpoints as they were (an annotation
    // changed): the cursor must go on, not start over.
    h.update(&yaml("  annotations: {touched: \"1\"}\n")).await;
    names.push(hello(svc).await.0);
    names.sort();
    assert_eq!(names, ["a", "b", "c"], "three connections, three endpoints");
}

#[tokio::test]
async fn load_balancer_ips_and_external_policy_local() {
    let a = Backend::start(addr("127.0.48.21:0"), "local").await;
    let _b = Backend::same_port("127.0.48.22", &a, "remote").await;
    let port = a.addr.port();
    let eps = [
        ready("127.0.48.21"),
        Ep {
            node: "node-b",
            ..ready("127.0.48.22")
        },
    ];
    let yaml = service(
        "lb",
        "127.0.48.120",
        8080,
        "TCP",
        port,
        &eps,
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n",
        "",
    )
    .replace("targetPort:", "nodePort: 31048, targetPort:")
    .replace(
        "---\napiVersion: discovery",
        "status:\n  loadBalancer:\n    ingress: [{ip: 127.0.48.70}]\n---\napiVersion: discovery",
    );
    assert!(yaml.contains("127.0.48.70"), "{yaml}");
    let cfg = Config {
        node_ips: vec!["127.0.48.50".parse().unwrap()],
        node_name: Some("node-a".into()),
        ..Config::default()
    };
    let _h = Harness::start(&yaml, cfg).await;
    // External paths (load-balancer IP, node port) keep to this node's endpoint.
    for to in ["127.0.48.70:8080", "127.0.48.50:31048"] {
        for _ in 0..4 {
            assert_eq!(hello(addr(to)).await.0, "local", "via {to}");
        }
    }
    // The ClusterIP path keeps policy Cluster: both endpoints.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(hello(addr("127.0.48.120:8080")).await.0);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// A Service's series appear with its first connection (ten thousand idle
/// Services export none) and go with the Service.
#[tokio::test]
async fn service_series_come_with_traffic_and_go_with_the_service() {
    let a = Backend::start(addr("127.0.59.1:0"), "a").await;
    let svc = |name: &str, ip: &str| tcp_service(name, ip, &a, "127.0.59.1");
    let both = svc("busy", "127.0.59.100") + &svc("idle", "127.0.59.101");
    let mut h = Harness::start(&both, Config::default()).await;
    assert_eq!(hello(addr("127.0.59.100:8080")).await.0, "a");
    assert_eq!(
        h.metric("nodeway_l4_connections_total{service=\"default/busy\"}"),
        Some(1.0)
    );
    assert!(
        !h.metrics().contains("default/idle"),
        "an idle Service exports nothing:\n{}",
        h.metrics()
    );
    h.update(&svc("idle", "127.0.59.101")).await;
    assert!(!h.metrics().contains("default/busy"), "{}", h.metrics());
}
