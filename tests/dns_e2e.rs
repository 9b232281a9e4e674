//! Cluster DNS end to end: the real `nodeway run` binary on loopback, queried
//! over UDP and TCP, with a stub upstream on loopback for forwarded names.

mod support;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::{Nodeway, wait_for, write_manifests};

const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: 127.0.50.10\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec: {clusterIP: None, ports: [{name: pg, port: 5432}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nports: [{name: pg, port: 5432}]\nendpoints:\n";

fn manifests(web_ip: &str, db_endpoints: usize) -> String {
    let mut y = SERVICES.replace("127.0.50.10", web_ip);
    for i in 0..db_endpoints {
        y.push_str(&format!("- addresses: [127.0.60.{}]\n", i + 1));
        if i == 0 {
            y.push_str("  hostname: db-0\n");
        }
    }
    y
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn udp(addr: SocketAddr, name: &str, qtype: RecordType, edns: bool) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&query(name, qtype, edns), addr).unwrap();
    let mut buf = [0u8; 65535];
    let n = s.recv(&mut buf).expect("a DNS answer within 5 s");
    Message::from_vec(&buf[..n]).unwrap()
}

fn tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let bytes = query(name, qtype, false);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn rdata(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// A stub upstream: every A query gets 192.0.2.7 (TTL 60); counts queries.
struct Stub {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    fn start() -> Stub {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                s2.fetch_add(1, Ordering::SeqCst);
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                m.metadata.recursion_available = true;
                if let Some(query) = q.queries.first() {
                    m.add_query(query.clone());
                    let r = Record::from_rdata(
                        query.name().clone(),
                        60,
                        RData::A(A::new(192, 0, 2, 7)),
                    );
                    m.add_answer(r);
                }
                let _ = sock.send_to(&m.to_vec().unwrap(), peer);
            }
        });
        Stub { addr, seen, stop }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn dns_answers_the_cluster_zone_and_follows_reloads() {
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), "app.yaml", &manifests("127.0.50.10", 100));
    let stub = Stub::start();
    let up = stub.addr.to_string();
    let nw = Nodeway::start(dir.path(), &["--dns-upstream", &up, "--dns-ttl", "7"]);
    let dns = nw.dns;

    let m = udp(dns, "web.shop.svc.cluster.local.", RecordType::A, false);
    assert_eq!(rdata(&m), vec!["127.0.50.10"]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 7);
    let m = udp(
        dns,
        "_http._tcp.Web.Shop.svc.cluster.local.",
        RecordType::SRV,
        false,
    );
    assert_eq!(rdata(&m), vec!["0 100 80 web.shop.svc.cluster.local."]);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "_http._tcp.Web.Shop.svc.cluster.local."
    );
    assert_eq!(
        rdata(&udp(
            dns,
            "db-0.db.shop.svc.cluster.local.",
            RecordType::A,
            false
        )),
        vec!["127.0.60.1"]
    );
    assert_eq!(
        rdata(&udp(
            dns,
            "10.50.0.127.in-addr.arpa.",
            RecordType::PTR,
            false
        )),
        vec!["web.shop.svc.cluster.local."]
    );
    let m = udp(dns, "nope.shop.svc.cluster.local.", RecordType::A, false);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        m.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    );

    // 100 endpoints: truncated over UDP without EDNS, complete over TCP.
    let m = udp(dns, "db.shop.svc.cluster.local.", RecordType::A, false);
    assert!(m.metadata.truncation);
    let m = tcp(dns, "db.shop.svc.cluster.local.", RecordType::A);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);

    // Forwarded, then served from the cache.
    for _ in 0..2 {
        let m = udp(dns, "www.example.org.", RecordType::A, true);
        assert_eq!(rdata(&m), vec!["192.0.2.7"]);
    }
    assert_eq!(stub.seen.load(Ordering::SeqCst), 1);

    // A reload changes the answer.
    write_manifests(dir.path(), "app.yaml", &manifests("127.0.50.11", 1));
    wait_for(Duration::from_secs(10), "the new ClusterIP in DNS", || {
        rdata(&udp(
            dns,
            "web.shop.svc.cluster.local.",
            RecordType::A,
            false,
        )) == vec!["127.0.50.11"]
    });
    assert!(
        !udp(dns, "db.shop.svc.cluster.local.", RecordType::A, false)
            .metadata
            .truncation
    );

    let metrics = nw.metrics();
    assert!(
        metrics.contains("nodeway_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodeway_dns_cache_hits_total 1"),
        "{metrics}"
    );
}

#[test]
fn dns_upstream_down_is_servfail_and_garbage_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), "app.yaml", &manifests("127.0.50.10", 1));
    // support::Nodeway points --dns-upstream at a dead loopback port.
    let nw = Nodeway::start(dir.path(), &[]);
    let m = udp(nw.dns, "www.example.org.", RecordType::A, false);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [0usize, 1, 5, 11, 12, 13, 40, 512, 1500] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        s.send_to(&junk, nw.dns).unwrap();
    }
    assert_eq!(
        rdata(&udp(
            nw.dns,
            "web.shop.svc.cluster.local.",
            RecordType::A,
            false
        )),
        vec!["127.0.50.10"]
    );
}
