//! The DNS plane in-process on loopback, queried by real clients.

mod support;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use std::time::Duration;
use support::*;

const WEB: &str = "web.default.svc.cluster.local.";

fn headless(n: usize) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big}\nspec: {clusterIP: None, ports: [{name: p, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{name: p, port: 80}]\nendpoints:\n",
    );
    for i in 0..n {
        y.push_str(&format!(
            "- addresses: [10.9.{}.{}]\n",
            i / 250,
            i % 250 + 1
        ));
    }
    y
}

#[tokio::test]
async fn servfail_until_the_first_snapshot_then_answers() {
    let mut p = Plane::start(None, |_| {}).await;
    let m = udp(p.addr, WEB, RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(p.server.as_ref().unwrap().generation(), 0);
    p.publish(FIXTURE);
    let m = wait_answer(p.addr, WEB, RecordType::A, |m| !m.answers.is_empty()).await;
    assert_eq!(rdata(&m), vec!["127.96.0.10"]);
    assert!(m.metadata.authoritative);
}

#[tokio::test]
async fn hickory_client_over_udp_and_tcp() {
    let p = Plane::start(Some(FIXTURE), |_| {}).await;
    let conn = UdpClientStream::builder(p.addr, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    let r = client
        .query(Name::from_ascii(WEB).unwrap(), DNSClass::IN, RecordType::A)
        .await
        .unwrap();
    assert_eq!(rdata(&r), vec!["127.96.0.10"]);

    let (stream, sender) = TcpClientStream::new(
        p.addr,
        None,
        Some(Duration::from_secs(5)),
        TokioRuntimeProvider::default(),
    );
    let (mut client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    let r = client
        .query(
            Name::from_ascii("_http._tcp.web.default.svc.cluster.local.").unwrap(),
            DNSClass::IN,
            RecordType::SRV,
        )
        .await
        .unwrap();
    assert_eq!(rdata(&r), vec!["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(
        r.additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        1
    );
}

#[tokio::test]
async fn every_record_kind() {
    let p = Plane::start(Some(FIXTURE), |_| {}).await;
    let a = p.addr;
    let m = udp(a, "dns-version.cluster.local.", RecordType::TXT, None).await;
    assert_eq!(rdata(&m), vec!["1.1.0"]);
    assert_eq!(m.answers[0].ttl, 28800);
    let m = udp(a, WEB, RecordType::A, None).await;
    assert_eq!(m.answers[0].ttl, 5);
    assert_eq!(
        rdata(&udp(a, "dual.default.svc.cluster.local.", RecordType::AAAA, None).await),
        vec!["fd00::11"]
    );
    assert_eq!(
        rdata(&udp(a, "nginx.default.svc.cluster.local.", RecordType::A, None).await),
        vec!["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    );
    assert_eq!(
        rdata(
            &udp(
                a,
                "web-0.nginx.default.svc.cluster.local.",
                RecordType::A,
                None
            )
            .await
        ),
        vec!["127.0.1.1"]
    );
    let m = udp(
        a,
        "_web._tcp.nginx.default.svc.cluster.local.",
        RecordType::SRV,
        Some(1232),
    )
    .await;
    assert_eq!(m.answers.len(), 4);
    assert_eq!(
        m.additionals
            .iter()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .count(),
        4
    );
    assert_eq!(
        rdata(&udp(a, "10.0.96.127.in-addr.arpa.", RecordType::PTR, None).await),
        vec![WEB]
    );
    assert_eq!(
        rdata(&udp(a, "2.1.0.127.in-addr.arpa.", RecordType::PTR, None).await),
        vec!["web-1.nginx.default.svc.cluster.local."]
    );
    assert_eq!(
        rdata(
            &udp(
                a,
                "127-1-2-3.default.pod.cluster.local.",
                RecordType::A,
                None
            )
            .await
        ),
        vec!["127.1.2.3"]
    );
    // ExternalName pointing inside the cluster: CNAME + the target's records
    let m = udp(a, "alias.other.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(m.answers[0].data.to_string(), WEB);
    assert_eq!(m.answers[1].data.to_string(), "127.96.0.10");
    // apex SOA and NS
    let m = udp(a, "cluster.local.", RecordType::SOA, None).await;
    assert!(
        m.answers[0]
            .data
            .to_string()
            .starts_with("ns.dns.cluster.local. hostmaster.cluster.local.")
    );
    assert_eq!(
        rdata(&udp(a, "cluster.local.", RecordType::NS, None).await),
        vec!["ns.dns.cluster.local."]
    );
}

#[tokio::test]
async fn negative_answers_carry_the_soa() {
    let p = Plane::start(Some(FIXTURE), |_| {}).await;
    let nodata = [
        (WEB, RecordType::AAAA),
        (WEB, RecordType::TXT),
        ("default.svc.cluster.local.", RecordType::A),
        ("empty.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("pod.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
    ];
    for (n, t) in nodata {
        let m = udp(p.addr, n, t, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{n} {t}");
        assert!(m.answers.is_empty(), "{n} {t}");
        assert!(m.metadata.authoritative && has_soa(&m), "{n} {t}: {m:?}");
    }
    let nx = [
        "nope.default.svc.cluster.local.",
        "web.nope.svc.cluster.local.",
        "gone.other.svc.cluster.local.",
        "x.ext.other.svc.cluster.local.",
        "byip.other.svc.cluster.local.",
        "a.b.c.web.default.svc.cluster.local.",
    ];
    for n in nx {
        let m = udp(p.addr, n, RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
        assert!(m.metadata.authoritative && has_soa(&m), "{n}");
        let soa = m
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .unwrap();
        assert!(
            soa.data.to_string().ends_with(" 5"),
            "minimum = TTL: {}",
            soa.data
        );
    }
}

#[tokio::test]
async fn case_is_preserved_in_owner_names() {
    let p = Plane::start(Some(FIXTURE), |_| {}).await;
    let asked = "WeB.DeFault.SVC.cluster.LOCAL.";
    for m in [
        udp(p.addr, asked, RecordType::A, None).await,
        tcp(p.addr, asked, RecordType::A).await,
    ] {
        assert_eq!(rdata(&m), vec!["127.96.0.10"]);
        assert_eq!(m.answers[0].name.to_ascii(), asked);
        assert_eq!(m.queries[0].name().to_ascii(), asked);
    }
    let m = udp(
        p.addr,
        "_HTTP._Tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        None,
    )
    .await;
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "_HTTP._Tcp.web.default.svc.cluster.local."
    );
}

#[tokio::test]
async fn large_headless_truncates_over_udp_and_is_complete_over_tcp() {
    let p = Plane::start(Some(&headless(100)), |_| {}).await;
    let name = "big.default.svc.cluster.local.";
    let m = udp(p.addr, name, RecordType::A, None).await;
    assert!(m.metadata.truncation, "no EDNS: 512 bytes at most");
    assert!(m.answers.len() < 100);
    let raw = support::udp_bytes(
        p.addr,
        &query_msg(name, RecordType::A, None).to_vec().unwrap(),
    )
    .await
    .unwrap();
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let m = udp(p.addr, name, RecordType::A, Some(4096)).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    assert!(m.edns.is_some(), "EDNS answered with EDNS");
    let m = tcp(p.addr, name, RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

#[tokio::test]
async fn a_reload_changes_the_answer() {
    let mut p = Plane::start(Some(FIXTURE), |_| {}).await;
    assert_eq!(
        rdata(&udp(p.addr, WEB, RecordType::A, None).await),
        vec!["127.96.0.10"]
    );
    p.publish(&FIXTURE.replace("clusterIP: 127.96.0.10", "clusterIP: 127.96.0.99"));
    wait_answer(p.addr, WEB, RecordType::A, |m| {
        rdata(m) == vec!["127.96.0.99"]
    })
    .await;
    let m = udp(p.addr, "cluster.local.", RecordType::SOA, None).await;
    assert!(
        m.answers[0].data.to_string().contains(" 2 7200 "),
        "serial follows the generation: {}",
        m.answers[0].data
    );
}

#[tokio::test]
async fn forwards_through_the_cache() {
    let stub = Stub::start().await;
    let p = Plane::start(Some(FIXTURE), |c| c.upstreams = vec![stub.addr]).await;
    for _ in 0..2 {
        let m = udp(p.addr, "www.example.org.", RecordType::A, None).await;
        assert_eq!(rdata(&m), vec!["192.0.2.7"]);
        assert!(m.metadata.recursion_available && !m.metadata.authoritative);
    }
    assert_eq!(stub.udp_count(), 1, "second answer from the cache");
    let m = udp(p.addr, "WWW.example.org.", RecordType::A, None).await;
    assert_eq!(m.answers[0].name.to_ascii(), "WWW.example.org.");
    assert_eq!(stub.udp_count(), 1);
    // negative answers are cached too (they carry an SOA)
    for _ in 0..2 {
        let m = udp(p.addr, "nx.example.org.", RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(stub.udp_count(), 2);
    // truncated upstream answer: retried over TCP
    let m = udp(p.addr, "big.example.org.", RecordType::A, None).await;
    assert_eq!(rdata(&m), vec!["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    assert_eq!(
        stub.tcp_queries.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // ExternalName outside the cluster: CNAME + the chased records
    let m = udp(p.addr, "ext.other.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(m.answers[0].data.to_string(), "www.example.org.");
    assert_eq!(m.answers[1].data.to_string(), "192.0.2.7");
    let metrics = p.metrics();
    assert!(
        metrics.contains("nodeway_dns_cache_hits_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodeway_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn upstream_failure_is_a_quick_servfail() {
    // A closed port (refused at once) and a stub that never answers.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stub = Stub::start().await;
    let p = Plane::start(Some(FIXTURE), |c| {
        c.upstreams = vec![closed, stub.addr];
        c.upstream_timeout = Duration::from_millis(200);
    })
    .await;
    let m = udp(p.addr, "slow.example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let p = Plane::start(Some(FIXTURE), |c| c.upstreams = vec![closed]).await;
    let m = udp(p.addr, "www.example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // ExternalName whose chase fails: the CNAME alone
    let m = udp(p.addr, "ext.other.svc.cluster.local.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdata(&m), vec!["www.example.org."]);
    assert!(
        p.metrics()
            .contains("nodeway_dns_forward_errors_total{reason=\"network\"}")
    );
}

#[tokio::test]
async fn only_allowed_networks_may_recurse() {
    let stub = Stub::start().await;
    let p = Plane::start(Some(FIXTURE), |c| {
        c.upstreams = vec![stub.addr];
        c.allow_recursion = vec!["198.51.100.0/24".parse().unwrap()];
    })
    .await;
    let m = udp(p.addr, "www.example.org.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    assert_eq!(stub.udp_count(), 0);
    // the cluster zone is still answered
    assert_eq!(
        rdata(&udp(p.addr, WEB, RecordType::A, None).await),
        vec!["127.96.0.10"]
    );
}

#[tokio::test]
async fn garbage_is_survived() {
    let p = Plane::start(Some(FIXTURE), |_| {}).await;
    // shorter than a header: dropped
    assert!(
        support::udp_bytes_within(p.addr, b"\x01\x02\x03", Duration::from_millis(300))
            .await
            .is_none()
    );
    // a header claiming a question that is not there: FORMERR
    let mut bad = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&[0x3f, b'x']);
    let raw = support::udp_bytes(p.addr, &bad)
        .await
        .expect("FORMERR answer");
    let m = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0x1234);
    // random bytes in bulk, then a normal query still answers
    let mut x: u32 = 12345;
    for len in 0..200usize {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&junk, p.addr).unwrap();
    }
    assert_eq!(
        rdata(&udp(p.addr, WEB, RecordType::A, None).await),
        vec!["127.96.0.10"]
    );
    assert_eq!(
        rdata(&tcp(p.addr, WEB, RecordType::A).await),
        vec!["127.96.0.10"]
    );
}

#[tokio::test]
async fn shutdown_stops_answering() {
    let mut p = Plane::start(Some(FIXTURE), |_| {}).await;
    let server = p.server.take().unwrap();
    server.shutdown(Duration::from_secs(1)).await;
    assert!(
        tokio::net::TcpStream::connect(p.addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn fast_path_answers_are_counted() {
    let p = Plane::start(Some(FIXTURE), |_| {}).await;
    for _ in 0..3 {
        let m = udp(p.addr, WEB, RecordType::A, None).await;
        assert_eq!(rdata(&m), vec!["127.96.0.10"]);
    }
    let m = udp(p.addr, "nope.cluster.local.", RecordType::TXT, Some(1232)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let metrics = p.metrics();
    for want in [
        "nodeway_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"} 3",
        "nodeway_dns_queries_total{qtype=\"TXT\",rcode=\"NXDOMAIN\"} 1",
        "nodeway_dns_request_duration_seconds_count 4",
    ] {
        assert!(metrics.contains(want), "{want} in {metrics}");
    }
}

#[tokio::test]
async fn answers_over_ipv6_loopback() {
    let p = Plane::start(Some(FIXTURE), |c| c.listen = "[::1]:0".parse().unwrap()).await;
    let sock = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    sock.connect(p.addr).await.unwrap();
    // Several at once: they arrive in one receive batch and leave in one send.
    for id in 0..8u16 {
        let mut q = query_msg(WEB, RecordType::A, None);
        q.metadata.id = id;
        sock.send(&q.to_vec().unwrap()).await.unwrap();
    }
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..8 {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(rdata(&m), vec!["127.96.0.10"]);
        ids.push(m.metadata.id);
    }
    ids.sort();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
}
