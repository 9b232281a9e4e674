//! In-process harness for the dns crate's server tests: the plane on a free
//! loopback port, a stub upstream that counts queries, raw and hickory
//! clients. Nothing here leaves 127.0.0.1.
#![allow(dead_code)]

use control::MemorySource;
use dns::{Config, DnsServer};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use model::CompileOptions;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub const FIXTURE: &str = include_str!("../fixture.yaml");
const WAIT: Duration = Duration::from_secs(5);

pub struct Plane {
    pub server: Option<DnsServer>,
    pub addr: SocketAddr,
    pub source: MemorySource,
    pub registry: Registry,
}

impl Plane {
    /// The plane with `yaml` loaded (or nothing loaded: generation 0).
    pub async fn start(yaml: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Plane {
        let mut source = MemorySource::new(CompileOptions::default());
        let mut cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        tweak(&mut cfg);
        if let Some(y) = yaml {
            source.apply("x.yaml", y);
        }
        let mut registry = Registry::default();
        let server = DnsServer::start(cfg, source.store().snapshots(), &mut registry)
            .await
            .expect("start");
        let addr = server.udp_addr();
        assert_eq!(server.tcp_addr(), addr);
        Plane {
            server: Some(server),
            addr,
            source,
            registry,
        }
    }

    /// Publishes new manifests as the next generation.
    pub fn publish(&mut self, yaml: &str) -> u64 {
        self.source.apply("x.yaml", yaml).generation
    }

    pub fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }
}

pub fn query_msg(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// One query over UDP; `edns` = the buffer size offered, `None` for none.
pub async fn udp(addr: SocketAddr, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let bytes = query_msg(name, qtype, edns).to_vec().unwrap();
    let raw = udp_bytes(addr, &bytes).await.expect("an answer");
    Message::from_vec(&raw).expect("a DNS message")
}

/// Sends raw bytes; the answer's bytes, or `None` if none came within a
/// short wait (used to show garbage is dropped).
pub async fn udp_bytes(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_bytes_within(addr, bytes, WAIT).await
}

pub async fn udp_bytes_within(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    sock.send(bytes).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(wait, sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

pub async fn tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let bytes = query_msg(name, qtype, None).to_vec().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let len = tokio::time::timeout(WAIT, s.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// Answer rdata as sorted text.
pub fn rdata(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

pub fn has_soa(m: &Message) -> bool {
    m.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

/// Waits (bounded) until `f` holds for the answer to a UDP query.
pub async fn wait_answer(
    addr: SocketAddr,
    name: &str,
    qtype: RecordType,
    f: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = udp(addr, name, qtype, Some(1232)).await;
        if f(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} {qtype}: condition not met; last {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stub upstream resolver on loopback (UDP and TCP on one port):
/// `*.example.org` A -> 192.0.2.7 (TTL 60); `nx.example.org` -> NXDOMAIN
/// with an SOA; `big.example.org` -> TC over UDP, three records over TCP;
/// `slow.example.org` -> never answered. Counts what it receives.
pub struct Stub {
    pub addr: SocketAddr,
    pub udp_queries: Arc<AtomicUsize>,
    pub tcp_queries: Arc<AtomicUsize>,
}

impl Stub {
    pub async fn start() -> Stub {
        // UDP and TCP ports are separate spaces: the UDP port the kernel
        // picks may be taken for TCP (by another test's connection), so
        // try again, a bounded number of times.
        let mut attempts = 0;
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, addr, tcp),
                Err(e) if attempts < 20 => {
                    attempts += 1;
                    eprintln!("stub: TCP {addr} taken ({e}); another port");
                }
                Err(e) => panic!("stub: no port free for both UDP and TCP: {e}"),
            }
        };
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let count = udp_queries.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(ans) = stub_answer(&q, false) {
                    let _ = udp.send_to(&ans.to_vec().unwrap(), peer).await;
                }
            }
        });
        let count = tcp_queries.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let len = s.read_u16().await.unwrap_or(0) as usize;
                    let mut buf = vec![0u8; len];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let Ok(q) = Message::from_vec(&buf) else {
                        return;
                    };
                    if let Some(ans) = stub_answer(&q, true) {
                        let bytes = ans.to_vec().unwrap();
                        let _ = s.write_all(&(bytes.len() as u16).to_be_bytes()).await;
                        let _ = s.write_all(&bytes).await;
                    }
                });
            }
        });
        Stub {
            addr,
            udp_queries,
            tcp_queries,
        }
    }

    pub fn udp_count(&self) -> usize {
        self.udp_queries.load(Ordering::SeqCst)
    }
}

fn stub_answer(q: &Message, over_tcp: bool) -> Option<Message> {
    let query = q.queries.first()?.clone();
    let name = query.name().to_ascii().to_ascii_lowercase();
    if name == "slow.example.org." {
        return None;
    }
    let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_available = true;
    m.add_query(query.clone());
    let a =
        |last: u8| Record::from_rdata(query.name().clone(), 60, RData::A(A::new(192, 0, 2, last)));
    if name == "nx.example.org." {
        m.metadata.response_code = ResponseCode::NXDomain;
        let zone = Name::from_ascii("example.org.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 1, 1, 1, 60);
        m.add_authority(Record::from_rdata(zone, 60, RData::SOA(soa)));
    } else if name == "big.example.org." && !over_tcp {
        m.metadata.truncation = true;
    } else if name == "big.example.org." {
        m.add_answers([a(1), a(2), a(3)]);
    } else if name.ends_with("example.org.") && query.query_type() == RecordType::A {
        m.add_answer(a(7));
    }
    Some(m)
}
