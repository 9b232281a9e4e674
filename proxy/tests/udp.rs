//! UDP through an in-process Proxy.

mod common;

use common::*;
use proxy::Config;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

async fn client(ip: &str) -> UdpSocket {
    UdpSocket::bind((ip, 0)).await.unwrap()
}

#[tokio::test]
async fn udp_echo_replies_from_the_service_address_with_large_datagrams() {
    let (b, _t) = udp_backend(addr("127.0.52.1:0"), "a").await;
    let yaml = service(
        "dns",
        "127.0.52.100",
        5353,
        "UDP",
        b.port(),
        &[ready("127.0.52.1")],
        "",
        "",
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let svc = addr("127.0.52.100:5353");
    let c = client("127.0.52.201").await;
    let (name, payload, from) = udp_ask(&c, svc, b"hello").await;
    assert_eq!(
        (name.as_str(), payload.as_slice(), from),
        ("a", &b"hello"[..], svc)
    );
    // A DNS-sized large datagram (the reply adds "a|").
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let (_, payload, from) = udp_ask(&c, svc, &big).await;
    assert_eq!(from, svc);
    assert_eq!(payload, big);
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_total{service=\"default/dns\"}"),
        Some(1.0)
    );
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_active{service=\"default/dns\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn udp_sessions_pin_per_client_and_round_robin_across_clients() {
    let (a, _ta) = udp_backend(addr("127.0.53.1:0"), "a").await;
    let (_, _tb) = udp_backend(
        SocketAddr::new("127.0.53.2".parse().unwrap(), a.port()),
        "b",
    )
    .await;
    let eps = [ready("127.0.53.1"), ready("127.0.53.2")];
    let _h = Harness::start(
        &service("u", "127.0.53.100", 5353, "UDP", a.port(), &eps, "", ""),
        Config::default(),
    )
    .await;
    let svc = addr("127.0.53.100:5353");
    let one = client("127.0.53.201").await;
    let two = client("127.0.53.202").await;
    let (first, _, _) = udp_ask(&one, svc, b"x").await;
    let (second, _, _) = udp_ask(&two, svc, b"x").await;
    assert_ne!(first, second);
    for _ in 0..5 {
        assert_eq!(udp_ask(&one, svc, b"y").await.0, first);
        assert_eq!(udp_ask(&two, svc, b"y").await.0, second);
    }
}

#[tokio::test]
async fn udp_sessions_to_a_removed_endpoint_stop() {
    let (a, _ta) = udp_backend(addr("127.0.54.1:0"), "a").await;
    let (_, _tb) = udp_backend(
        SocketAddr::new("127.0.54.2".parse().unwrap(), a.port()),
        "b",
    )
    .await;
    let port = a.port();
    let svc = addr("127.0.54.100:5353");
    let mut h = Harness::start(
        &service(
            "u",
            "127.0.54.100",
            5353,
            "UDP",
            port,
            &[ready("127.0.54.1")],
            "",
            "",
        ),
        Config::default(),
    )
    .await;
    let c = client("127.0.54.201").await;
    assert_eq!(udp_ask(&c, svc, b"1").await.0, "a");
    h.update(&service(
        "u",
        "127.0.54.100",
        5353,
        "UDP",
        port,
        &[ready("127.0.54.2")],
        "",
        "",
    ))
    .await;
    // The session to a is gone at once: the same client now reaches b.
    assert_eq!(udp_ask(&c, svc, b"2").await.0, "b");
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_total{service=\"default/u\"}"),
        Some(2.0)
    );
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_active{service=\"default/u\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn udp_idle_timeout_from_annotation_ends_sessions() {
    let (a, _ta) = udp_backend(addr("127.0.55.1:0"), "a").await;
    let meta = "  annotations: {nodeway.io/udp-idle-timeout: 200ms}\n";
    let yaml = service(
        "idle",
        "127.0.55.100",
        5353,
        "UDP",
        a.port(),
        &[ready("127.0.55.1")],
        "",
        meta,
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let c = client("127.0.55.201").await;
    udp_ask(&c, addr("127.0.55.100:5353"), b"x").await;
    let active = "nodeway_l4_udp_sessions_active{service=\"default/idle\"}";
    assert_eq!(h.metric(active), Some(1.0));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.metric(active) != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A new datagram opens a new session.
    udp_ask(&c, addr("127.0.55.100:5353"), b"y").await;
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_total{service=\"default/idle\"}"),
        Some(2.0)
    );
}

#[tokio::test]
async fn udp_session_table_is_bounded_and_evicts_the_oldest() {
    let (a, _ta) = udp_backend(addr("127.0.55.2:0"), "a").await;
    let yaml = service(
        "cap",
        "127.0.55.101",
        5353,
        "UDP",
        a.port(),
        &[ready("127.0.55.2")],
        "",
        "",
    );
    let h = Harness::start(
        &yaml,
        Config {
            udp_max_sessions: 2,
            ..Config::default()
        },
    )
    .await;
    let svc = addr("127.0.55.101:5353");
    let clients = [
        client("127.0.55.211").await,
        client("127.0.55.212").await,
        client("127.0.55.213").await,
    ];
    for c in &clients {
        udp_ask(c, svc, b"x").await;
    }
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_evicted_total{service=\"default/cap\"}"),
        Some(1.0)
    );
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_active{service=\"default/cap\"}"),
        Some(2.0)
    );
    // The newest clients kept their sessions; the oldest needs a new one.
    udp_ask(&clients[2], svc, b"x").await;
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_total{service=\"default/cap\"}"),
        Some(3.0)
    );
    udp_ask(&clients[0], svc, b"x").await;
    assert_eq!(
        h.metric("nodeway_l4_udp_sessions_total{service=\"default/cap\"}"),
        Some(4.0)
    );
}

#[tokio::test]
async fn udp_without_endpoints_is_dropped_and_counted() {
    let yaml = service("void", "127.0.55.102", 5353, "UDP", 5353, &[], "", "");
    let h = Harness::start(&yaml, Config::default()).await;
    let c = client("127.0.55.221").await;
    c.send_to(b"x", "127.0.55.102:5353").await.unwrap();
    let sample = "nodeway_l4_no_endpoint_rejects_total{service=\"default/void\"}";
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while h.metric(sample) != Some(1.0) {
        assert!(tokio::time::Instant::now() < deadline, "drop not counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_zero_udp_idle_timeout_is_a_config_error_and_the_default_applies() {
    let (a, _ta) = udp_backend(addr("127.0.55.2:0"), "a").await;
    let meta = "  annotations: {nodeway.io/udp-idle-timeout: \"0\"}\n";
    let yaml = service(
        "zero",
        "127.0.55.110",
        5353,
        "UDP",
        a.port(),
        &[ready("127.0.55.2")],
        "",
        meta,
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let errors = h.proxy.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "test.yaml: Service default/zero: metadata.annotations[nodeway.io/udp-idle-timeout]: \
         invalid timeout \"0\": must be above zero; the default 30s is used"
    );
    assert!(h.proxy.problems().is_empty());
    // A zero timeout would end every session before its reply; the default
    // (30 s) keeps this one.
    let c = client("127.0.55.211").await;
    assert_eq!(udp_ask(&c, addr("127.0.55.110:5353"), b"x").await.0, "a");
}
