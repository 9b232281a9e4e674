//! TCP balancing through an in-process Proxy.

mod common;

use common::*;
use proxy::Config;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[tokio::test]
async fn round_robin_is_even_over_300_connections() {
    let a = Backend::start(addr("127.0.41.1:0"), "a").await;
    let b = Backend::same_port("127.0.41.2", &a, "b").await;
    let c = Backend::same_port("127.0.41.3", &a, "c").await;
    let port = a.addr.port();
    let yaml = service(
        "rr",
        "127.0.41.100",
        8080,
        "TCP",
        port,
        &[
            ready("127.0.41.1"),
            ready("127.0.41.2"),
            ready("127.0.41.3"),
        ],
        "",
        "",
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let mut hits: HashMap<String, i32> = HashMap::new();
    for _ in 0..300 {
        let (name, _) = hello(addr("127.0.41.100:8080")).await;
        *hits.entry(name).or_default() += 1;
    }
    assert_eq!(hits.len(), 3, "{hits:?}");
    for (name, n) in &hits {
        assert!((98..=102).contains(n), "{name}: {n} of 300 ({hits:?})");
    }
    assert_eq!(
        h.metric("nodeway_l4_connections_total{service=\"default/rr\"}"),
        Some(300.0)
    );
    drop((b, c));
}

#[tokio::test]
async fn nodeport_and_external_ips_are_served() {
    let a = Backend::start(addr("127.0.42.1:0"), "a").await;
    let mut yaml = service(
        "np",
        "127.0.42.100",
        8080,
        "TCP",
        a.addr.port(),
        &[ready("127.0.42.1")],
        "  type: NodePort\n  externalIPs: [\"127.0.42.60\"]\n",
        "",
    );
    yaml = yaml.replace("targetPort:", "nodePort: 31042, targetPort:");
    let cfg = Config {
        node_ips: vec!["127.0.42.50".parse().unwrap()],
        ..Config::default()
    };
    let h = Harness::start(&yaml, cfg).await;
    for to in ["127.0.42.100:8080", "127.0.42.50:31042", "127.0.42.60:8080"] {
        let (name, _) = hello(addr(to)).await;
        assert_eq!(name, "a", "via {to}");
    }
    let bound: Vec<SocketAddr> = h.proxy.listeners().iter().map(|l| l.addr).collect();
    assert_eq!(bound.len(), 3, "{bound:?}");
}

#[tokio::test]
async fn dead_endpoint_is_skipped_and_all_dead_resets() {
    let a = Backend::start(addr("127.0.43.1:0"), "a").await;
    let b = Backend::same_port("127.0.43.2", &a, "b").await;
    // 127.0.43.3 has nothing listening: connects are refused.
    let eps = [
        ready("127.0.43.1"),
        ready("127.0.43.2"),
        ready("127.0.43.3"),
    ];
    let yaml = service(
        "dead",
        "127.0.43.100",
        8080,
        "TCP",
        a.addr.port(),
        &eps,
        "",
        "",
    );
    let mut h = Harness::start(&yaml, Config::default()).await;
    let mut hits: HashMap<String, i32> = HashMap::new();
    for _ in 0..30 {
        let (name, _) = hello(addr("127.0.43.100:8080")).await;
        *hits.entry(name).or_default() += 1;
    }
    assert_eq!(hits.values().sum::<i32>(), 30);
    assert!(hits.keys().all(|k| k == "a" || k == "b"), "{hits:?}");
    assert_eq!(
        h.metric("nodeway_l4_connect_failures_total{service=\"default/dead\"}"),
        Some(10.0)
    );

    drop((a, b));
    let yaml = service("dead", "127.0.43.100", 8080, "TCP", 9, &eps, "", "");
    h.update(&yaml).await;
    expect_reset(addr("127.0.43.100:8080")).await;
}

#[tokio::test]
async fn no_endpoints_resets_at_once() {
    let yaml = service("none", "127.0.44.100", 8080, "TCP", 8080, &[], "", "");
    let h = Harness::start(&yaml, Config::default()).await;
    let t = std::time::Instant::now();
    expect_reset(addr("127.0.44.100:8080")).await;
    // Informational only (timing is not asserted): kube-proxy's REJECT bar is < 100 ms.
    eprintln!("reset after {:?}", t.elapsed());
    assert_eq!(
        h.metric("nodeway_l4_no_endpoint_rejects_total{service=\"default/none\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn client_ip_affinity_sticks_differs_and_expires() {
    let a = Backend::start(addr("127.0.45.1:0"), "a").await;
    let b = Backend::same_port("127.0.45.2", &a, "b").await;
    let c = Backend::same_port("127.0.45.3", &a, "c").await;
    let eps = [
        ready("127.0.45.1"),
        ready("127.0.45.2"),
        ready("127.0.45.3"),
    ];
    let spec =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}\n";
    let yaml = service(
        "aff",
        "127.0.45.100",
        8080,
        "TCP",
        a.addr.port(),
        &eps,
        spec,
        "",
    );
    let _h = Harness::start(&yaml, Config::default()).await;
    let svc = addr("127.0.45.100:8080");
    let one = "127.0.45.201".parse().unwrap();
    let two = "127.0.45.202".parse().unwrap();
    let (first, _) = hello_from(one, svc).await;
    for _ in 0..5 {
        assert_eq!(hello_from(one, svc).await.0, first);
    }
    let (other, _) = hello_from(two, svc).await;
    assert_ne!(other, first, "a second client gets the next endpoint");
    for _ in 0..5 {
        assert_eq!(hello_from(two, svc).await.0, other);
    }
    // Waiting out the configured 1 s affinity timeout is the behaviour
    // under test, not a guess at readiness.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (after, _) = hello_from(one, svc).await;
    assert_ne!(after, first, "affinity expired: round-robin resumes");
    assert_ne!(after, other);
    drop((b, c));
}

#[tokio::test]
async fn terminating_endpoints_are_the_fallback() {
    let a = Backend::start(addr("127.0.46.1:0"), "ready").await;
    let b = Backend::same_port("127.0.46.2", &a, "terminating").await;
    let _c = Backend::same_port("127.0.46.3", &a, "not-ready").await;
    let term = Ep {
        ip: "127.0.46.2",
        ready: false,
        serving: true,
        terminating: true,
        node: "node-a",
    };
    let unready = Ep {
        ip: "127.0.46.3",
        ready: false,
        serving: false,
        terminating: false,
        node: "node-a",
    };
    let port = a.addr.port();
    let svc = addr("127.0.46.100:8080");
    let with_ready = [
        ready("127.0.46.1"),
        Ep {
            ip: "127.0.46.2",
            ..term
        },
        Ep {
            ip: "127.0.46.3",
            ..unready
        },
    ];
    let mut h = Harness::start(
        &service(
            "term",
            "127.0.46.100",
            8080,
            "TCP",
            port,
            &with_ready,
            "",
            "",
        ),
        Config::default(),
    )
    .await;
    for _ in 0..4 {
        assert_eq!(hello(svc).await.0, "ready");
    }
    let term = Ep {
        ip: "127.0.46.2",
        ready: false,
        serving: true,
        terminating: true,
        node: "node-a",
    };
    let unready = Ep {
        ip: "127.0.46.3",
        ready: false,
        serving: false,
        terminating: false,
        node: "node-a",
    };
    h.update(&service(
        "term",
        "127.0.46.100",
        8080,
        "TCP",
        port,
        &[term, unready],
        "",
        "",
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(hello(svc).await.0, "terminating");
    }
    drop(b);
}

#[tokio::test]
async fn traffic_policy_local_uses_only_local_endpoints() {
    let a = Backend::start(addr("127.0.47.1:0"), "local").await;
    let _b = Backend::same_port("127.0.47.2", &a, "remote").await;
    let port = a.addr.port();
    let eps = [
        Ep {
            node: "node-a",
            ..ready("127.0.47.1")
        },
        Ep {
            node: "node-b",
            ..ready("127.0.47.2")
        },
    ];
    let spec = "  internalTrafficPolicy: Local\n";
    let cfg = Config {
        node_name: Some("node-a".into()),
        ..Config::default()
    };
    let svc = addr("127.0.47.100:8080");
    let mut h = Harness::start(
        &service("loc", "127.0.47.100", 8080, "TCP", port, &eps, spec, ""),
        cfg,
    )
    .await;
    for _ in 0..6 {
        assert_eq!(hello(svc).await.0, "local");
    }
    // No local endpoint: dropped (reset), never sent to the other node.
    let remote_only = [Ep {
        node: "node-b",
        ..ready("127.0.47.2")
    }];
    h.update(&service(
        "loc",
        "127.0.47.100",
        8080,
        "TCP",
        port,
        &remote_only,
        spec,
        "",
    ))
    .await;
    expect_reset(svc).await;
}

#[tokio::test]
async fn proxy_protocol_v2_tells_the_backend_the_client() {
    use tokio::io::AsyncReadExt;
    let l = tokio::net::TcpListener::bind("127.0.50.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let meta = "  annotations: {nodeway.io/proxy-protocol: v2}\n";
    let yaml = service(
        "pp",
        "127.0.50.100",
        8080,
        "TCP",
        port,
        &[ready("127.0.50.1")],
        "",
        meta,
    );
    let _h = Harness::start(&yaml, Config::default()).await;
    let client = connect_from("127.0.50.201".parse().unwrap(), addr("127.0.50.100:8080"))
        .await
        .unwrap();
    let client_addr = client.local_addr().unwrap();
    let (mut s, _) = tokio::time::timeout(DEADLINE, l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut h = [0u8; 28];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut h))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!((h[12], h[13]), (0x21, 0x11));
    assert_eq!(&h[16..20], &[127, 0, 50, 201]);
    assert_eq!(&h[20..24], &[127, 0, 50, 100]);
    assert_eq!(u16::from_be_bytes([h[24], h[25]]), client_addr.port());
    assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8080);
    // The payload follows the header untouched.
    let mut client = client;
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hi");
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let a = Backend::start(addr("127.0.51.1:0"), "a").await;
    let yaml = service(
        "idle",
        "127.0.51.100",
        8080,
        "TCP",
        a.addr.port(),
        &[ready("127.0.51.1")],
        "",
        "",
    );
    let cfg = Config {
        tcp_idle_timeout: std::time::Duration::from_secs(1),
        ..Config::default()
    };
    let _h = Harness::start(&yaml, cfg).await;
    let (name, mut r) = hello(addr("127.0.51.100:8080")).await;
    assert_eq!(name, "a");
    // Traffic every 100 ms for three timeouts: idle means quiet, not old.
    for i in 0..30 {
        let msg = format!("ping {i}\n");
        r.get_mut().write_all(msg.as_bytes()).await.unwrap();
        let mut echo = String::new();
        tokio::time::timeout(DEADLINE, r.read_line(&mut echo))
            .await
            .expect("echoed")
            .unwrap();
        assert_eq!(echo, msg, "a busy connection stays open");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut line = String::new();
    let n = tokio::time::timeout(DEADLINE, r.read_line(&mut line))
        .await
        .expect("closed by idle timeout");
    assert_eq!(n.unwrap(), 0, "EOF after the idle timeout");
}

/// An endpoint whose accept queue is full drops SYNs: connects to it hang
/// until the proxy's timeout, like a blackholed pod. Kept alive by holding it.
struct Stuck {
    _listener: socket2::Socket,
    _fillers: Vec<tokio::net::TcpStream>,
}

impl Stuck {
    async fn start(ip: &str) -> (Stuck, u16) {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&addr(&format!("{ip}:0")).into()).unwrap();
        s.listen(0).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let mut fillers = Vec::new();
        for _ in 0..2 {
            let c = tokio::net::TcpSocket::new_v4().unwrap();
            if let Ok(Ok(c)) = tokio::time::timeout(
                std::time::Duration::from_millis(300),
                c.connect(SocketAddr::new(ip.parse().unwrap(), port)),
            )
            .await
            {
                fillers.push(c);
            }
        }
        let stuck = Stuck {
            _listener: s,
            _fillers: fillers,
        };
        (stuck, port)
    }
}

#[tokio::test]
async fn connect_timeout_moves_on_to_the_next_endpoint() {
    let (stuck, port) = Stuck::start("127.0.59.1").await;
    let good = Backend::start(SocketAddr::new("127.0.59.2".parse().unwrap(), port), "good").await;
    let eps = [ready("127.0.59.1"), ready("127.0.59.2")];
    let cfg = Config {
        connect_timeout: std::time::Duration::from_millis(200),
        ..Config::default()
    };
    let h = Harness::start(
        &service("slow", "127.0.59.100", 8080, "TCP", port, &eps, "", ""),
        cfg,
    )
    .await;
    for _ in 0..4 {
        assert_eq!(hello(addr("127.0.59.100:8080")).await.0, "good");
    }
    let failures = h.metric("nodeway_l4_connect_failures_total{service=\"default/slow\"}");
    assert_eq!(
        failures,
        Some(2.0),
        "half of the connections first tried the stuck endpoint"
    );
    drop((stuck, good));
}

#[tokio::test]
async fn a_retry_after_a_slow_connect_never_goes_to_an_endpoint_removed_meanwhile() {
    // A stuck endpoint and two good ones on the same port.
    let (stuck, port) = Stuck::start("127.0.59.11").await;
    let a = Backend::start(SocketAddr::new("127.0.59.12".parse().unwrap(), port), "a").await;
    let b = Backend::start(SocketAddr::new("127.0.59.13".parse().unwrap(), port), "b").await;
    // Long enough that the reload below lands while the connect still
    // waits, even on a loaded machine.
    let cfg = Config {
        connect_timeout: std::time::Duration::from_secs(4),
        ..Config::default()
    };
    let svc = |eps: &[Ep<'_>]| service("moved", "127.0.59.110", 8080, "TCP", port, eps, "", "");
    let mut h = Harness::start(&svc(&[ready("127.0.59.11"), ready("127.0.59.12")]), cfg).await;
    // Two connections: one starts at `a` and answers at once, the other
    // starts at the stuck endpoint and waits out its connect timeout.
    let mut first = tokio::spawn(hello(addr("127.0.59.110:8080")));
    let mut second = tokio::spawn(hello(addr("127.0.59.110:8080")));
    let (done, pending) = tokio::select! {
        r = &mut first => (r, second),
        r = &mut second => (r, first),
    };
    assert_eq!(done.unwrap().0, "a");
    // Meanwhile `a` is replaced by `b`.
    h.update(&svc(&[ready("127.0.59.11"), ready("127.0.59.13")]))
        .await;
    let late = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("answered");
    assert_eq!(late.unwrap().0, "b", "the retry follows the reload");
    drop((stuck, a, b));
}

#[tokio::test]
async fn a_retry_never_crosses_to_a_service_that_took_the_address_meanwhile() {
    let (stuck, port) = Stuck::start("127.0.59.21").await;
    let a = Backend::start(SocketAddr::new("127.0.59.22".parse().unwrap(), port), "a").await;
    let other = Backend::start(
        SocketAddr::new("127.0.59.23".parse().unwrap(), port),
        "other",
    )
    .await;
    let cfg = Config {
        connect_timeout: std::time::Duration::from_secs(3),
        ..Config::default()
    };
    let vip = "127.0.59.120";
    let mut h = Harness::start(
        &service(
            "first",
            vip,
            8080,
            "TCP",
            port,
            &[ready("127.0.59.21"), ready("127.0.59.22")],
            "",
            "",
        ),
        cfg,
    )
    .await;
    let to = addr(&format!("{vip}:8080"));
    // What a client gets first: the backend's greeting, or an error.
    async fn greeting(to: SocketAddr) -> Result<String, std::io::ErrorKind> {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| e.kind())?;
        let mut buf = [0u8; 64];
        match s.read(&mut buf).await {
            Ok(0) => Err(std::io::ErrorKind::UnexpectedEof),
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            Err(e) => Err(e.kind()),
        }
    }
    let mut one = tokio::spawn(greeting(to));
    let mut two = tokio::spawn(greeting(to));
    // The connection that started at `a` answers; the other waits on the
    // stuck endpoint while the address passes to another Service.
    let (first, pending) = tokio::select! {
        r = &mut one => (r, two),
        r = &mut two => (r, one),
    };
    assert_eq!(first.unwrap(), Ok("a".to_string()));
    h.update(&service(
        "second",
        vip,
        8080,
        "TCP",
        port,
        &[ready("127.0.59.23")],
        "",
        "",
    ))
    .await;
    let late = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("ended");
    assert_eq!(
        late.unwrap(),
        Err(std::io::ErrorKind::ConnectionReset),
        "reset, never sent to the other Service"
    );
    drop((stuck, a, other));
}
