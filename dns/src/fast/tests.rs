//! The fast path must send exactly the bytes the hickory path sends: every
//! query here goes through both and the datagrams are compared.

use super::*;
use crate::cache::Cache;
use crate::forward::Forwarder;
use crate::handler::Handler;
use crate::metrics::Metrics;
use crate::table::{Table, TableOptions};
use crate::udp::encode_udp;
use control::View;
use hickory_proto::op::{Edns, Message, Query as HQuery};
use hickory_proto::rr::RecordType;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use model::{Builder, CompileOptions};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FIXTURE: &str = include_str!("../../tests/fixture.yaml");

/// A headless Service with `n` ready endpoints (TC over UDP without EDNS).
fn headless(n: usize) -> String {
    let mut y = String::from(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: big}\nspec: {clusterIP: None, ports: [{name: p, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{name: p, port: 80}]\nendpoints:\n",
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

fn handler(yaml: &str, allow_recursion: Vec<ipnet::IpNet>) -> Handler {
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("x.yaml"), Some(yaml.as_bytes()));
    let snap = b.build();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    let opts = TableOptions {
        zone: "cluster.local".into(),
        ttl: 5,
        pod_records: true,
    };
    let metrics = Metrics::new(&mut Registry::default());
    let forwarder = Forwarder::new(
        vec![],
        Duration::from_millis(50),
        Cache::new(0, 60, 60),
        8,
        metrics.clone(),
    );
    Handler {
        tables: View::fixed(Table::compile(&snap, &opts)),
        forwarder: Arc::new(forwarder),
        allow_recursion: allow_recursion.into(),
        metrics,
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode_udp(response)?;
        *self.0.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

const CLIENT: &str = "127.0.0.1:40000";

async fn slow(h: &Handler, pkt: &[u8]) -> Vec<u8> {
    let src: SocketAddr = CLIENT.parse().unwrap();
    let req = Request::from_bytes(pkt.to_vec(), src, Protocol::Udp).unwrap();
    let cap = Capture::default();
    h.handle_request::<_, TokioTime>(&req, cap.clone()).await;
    let bytes = cap.0.lock().unwrap().take();
    bytes.expect("the slow path answers")
}

fn fast(h: &Handler, pkt: &[u8]) -> Option<Vec<u8>> {
    let ra = h.may_recurse(CLIENT.parse::<SocketAddr>().unwrap().ip());
    let mut out = Vec::new();
    h.tables
        .load()
        .fast()
        .answer(pkt, ra, &mut out)
        .map(|_| out)
}

/// A query as a stub sends it; `flags` = (RD, CD).
fn query(name: &str, qtype: RecordType, edns: Option<u16>, flags: (bool, bool)) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0xBEEF;
    m.metadata.recursion_desired = flags.0;
    m.metadata.checking_disabled = flags.1;
    m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Both paths for every EDNS variant and flag mix; returns how many of
/// them the fast path answered.
async fn compare(h: &Handler, name: &str, qtype: RecordType) -> usize {
    let mut answered = 0;
    for edns in [None, Some(100), Some(1232), Some(4096), Some(65000)] {
        for flags in [(true, false), (false, true)] {
            let pkt = query(name, qtype, edns, flags);
            let want = slow(h, &pkt).await;
            if let Some(got) = fast(h, &pkt) {
                assert_eq!(
                    got,
                    want,
                    "{name} {qtype} edns {edns:?} flags {flags:?}\nfast {:?}\nslow {:?}",
                    Message::from_vec(&got),
                    Message::from_vec(&want)
                );
                answered += 1;
            }
        }
    }
    answered
}

const WEB: &str = "web.default.svc.cluster.local.";

#[tokio::test]
async fn every_kind_is_answered_fast_and_byte_for_byte_as_the_slow_path() {
    let h = handler(FIXTURE, crate::Config::default_allow_recursion());
    let all = 10;
    let cases = [
        (WEB, RecordType::A),
        ("WEB.Default.svc.CLUSTER.local.", RecordType::A),
        (WEB, RecordType::SRV),
        (WEB, RecordType::ANY),
        ("dual.default.svc.cluster.local.", RecordType::AAAA),
        ("dual.default.svc.cluster.local.", RecordType::A),
        ("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ("_HTTP._Tcp.web.default.svc.cluster.local.", RecordType::SRV),
        ("_dns._udp.web.default.svc.cluster.local.", RecordType::SRV),
        (
            "_web._tcp.nginx.default.svc.cluster.local.",
            RecordType::SRV,
        ),
        (
            "_WEB._TCP.nginx.default.svc.cluster.local.",
            RecordType::SRV,
        ),
        ("nginx.default.svc.cluster.local.", RecordType::SRV),
        (
            "_web._tcp.NGINX.default.svc.Cluster.local.",
            RecordType::SRV,
        ),
        ("NGINX.default.svc.cluster.local.", RecordType::SRV),
        ("nginx.default.svc.cluster.local.", RecordType::A),
        ("nginx.default.svc.cluster.local.", RecordType::AAAA),
        ("web-0.nginx.default.svc.cluster.local.", RecordType::A),
        ("Web-1.Nginx.default.svc.cluster.local.", RecordType::A),
        ("127-0-1-3.nginx.default.svc.cluster.local.", RecordType::A),
        ("dns-version.cluster.local.", RecordType::TXT),
        ("DNS-Version.Cluster.Local.", RecordType::TXT),
        ("cluster.local.", RecordType::SOA),
        ("cluster.local.", RecordType::NS),
        ("10.0.96.127.in-addr.arpa.", RecordType::PTR),
        ("1.1.0.127.in-addr.arpa.", RecordType::PTR),
        // NODATA
        (WEB, RecordType::AAAA),
        (WEB, RecordType::TXT),
        (WEB, RecordType::MX),
        ("Web.Default.Svc.Cluster.Local.", RecordType::AAAA),
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("pod.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::A),
        ("empty.svc.cluster.local.", RecordType::SRV),
        // NXDOMAIN
        ("nope.default.svc.cluster.local.", RecordType::A),
        ("NoPe.Default.SVC.Cluster.LOCAL.", RecordType::AAAA),
        ("gone.other.svc.cluster.local.", RecordType::A),
        ("a.b.c.web.default.svc.cluster.local.", RecordType::A),
        ("x.dns.cluster.local.", RecordType::A),
        ("dns.cluster.local.", RecordType::SOA),
        ("ns.dns.cluster.local.", RecordType::A),
        ("hostmaster.cluster.local.", RecordType::A),
        ("hostmaster.cluster.local.", RecordType::TXT),
        ("a.cluster.local.", RecordType::A),
        (
            "a-very-long-label-to-make-the-name-longer-than-usual-for-tests.nope.svc.cluster.local.",
            RecordType::A,
        ),
    ];
    for (name, qtype) in cases {
        assert_eq!(compare(&h, name, qtype).await, all, "{name} {qtype}");
    }
}

#[tokio::test]
async fn the_rest_is_left_to_the_slow_path() {
    let h = handler(
        &format!("{FIXTURE}\n{}", headless(100)),
        crate::Config::default_allow_recursion(),
    );
    // Over 512 bytes: without EDNS (or a small size) hickory truncates.
    let big = "big.default.svc.cluster.local.";
    let pkt = query(big, RecordType::A, None, (true, false));
    assert!(fast(&h, &pkt).is_none());
    let tc = Message::from_vec(&slow(&h, &pkt).await).unwrap();
    assert!(tc.metadata.truncation);
    // ... and with room for it, fast and equal (4 of 5 EDNS variants fit:
    // none and 100 (= 512) do not; 1232 does not either for 100 A records).
    assert_eq!(compare(&h, big, RecordType::A).await, 4);
    // Upper case whose answer compresses into the owner: the additional's
    // owner points into `web...`, so only the `_http._tcp` labels may vary.
    // (Headless SRV additionals point at the SRV targets instead, so any
    // spelling is fast there: see the cases above.)
    for name in [
        "_http._tcp.WEB.default.svc.cluster.local.",
        "_http._tcp.web.default.svc.cluster.LOCAL.",
    ] {
        assert_eq!(compare(&h, name, RecordType::SRV).await, 0, "{name}");
    }
    for (name, qtype) in [
        ("ext.other.svc.cluster.local.", RecordType::A), // ExternalName: chased
        ("ext.other.svc.cluster.local.", RecordType::CNAME),
        ("127-0-0-5.default.pod.cluster.local.", RecordType::A), // synthesized
        ("nope.default.pod.cluster.local.", RecordType::A),
        ("www.example.org.", RecordType::A), // forwarded
        ("9.9.9.127.in-addr.arpa.", RecordType::PTR),
        (WEB, RecordType::AXFR),
    ] {
        assert_eq!(compare(&h, name, qtype).await, 0, "{name} {qtype}");
    }
    // Endpoint names and reverse names of a Service that is not headless
    // are made by the slow path when asked; a miss below it is its
    // NXDOMAIN, not the fast path's.
    for (name, qtype, rcode, answers) in [
        (
            "127-0-0-1.web.default.svc.cluster.local.",
            RecordType::A,
            0,
            1,
        ),
        (
            "127-0-0-1.Web.default.svc.cluster.local.",
            RecordType::A,
            0,
            1,
        ),
        (
            "127-0-0-1.web.default.svc.cluster.local.",
            RecordType::AAAA,
            0,
            0,
        ),
        (
            "127-0-0-9.web.default.svc.cluster.local.",
            RecordType::A,
            3,
            0,
        ),
        ("2.0.0.127.in-addr.arpa.", RecordType::PTR, 0, 1),
    ] {
        assert_eq!(compare(&h, name, qtype).await, 0, "{name} {qtype}");
        let pkt = query(name, qtype, None, (true, false));
        let m = Message::from_vec(&slow(&h, &pkt).await).unwrap();
        assert_eq!(u16::from(m.metadata.response_code), rcode, "{name} {qtype}");
        assert_eq!(m.answers.len(), answers, "{name} {qtype}");
    }
    // Two questions, and garbage.
    let mut two = query(WEB, RecordType::A, None, (true, false));
    two[5] = 2;
    let question = two[12..].to_vec();
    two.extend_from_slice(&question);
    assert!(fast(&h, &two).is_none());
    assert!(fast(&h, b"\x12\x34").is_none());
}

#[tokio::test]
async fn recursion_available_follows_the_acl_on_both_paths() {
    let h = handler(FIXTURE, vec!["198.51.100.0/24".parse().unwrap()]);
    assert_eq!(compare(&h, WEB, RecordType::A).await, 10);
    let m = Message::from_vec(&fast(&h, &query(WEB, RecordType::A, None, (true, false))).unwrap())
        .unwrap();
    assert!(!m.metadata.recursion_available);
    assert!(m.metadata.authoritative && m.metadata.recursion_desired);
    assert_eq!(m.metadata.id, 0xBEEF);
}

#[tokio::test]
async fn nothing_is_fast_before_the_first_snapshot() {
    let opts = TableOptions {
        zone: "cluster.local".into(),
        ttl: 5,
        pod_records: true,
    };
    let h = Handler {
        tables: View::fixed(Table::empty(&opts)),
        ..handler("", crate::Config::default_allow_recursion())
    };
    assert_eq!(compare(&h, "cluster.local.", RecordType::SOA).await, 0);
    assert_eq!(compare(&h, "nope.cluster.local.", RecordType::A).await, 0);
}

#[test]
fn filler_names_have_the_asked_length() {
    for len in (1..=MAX_NAME).filter(|l| *l != 2) {
        let n = filler_name(len).unwrap();
        assert_eq!(n.len(), len);
        let parsed = Name::read(&mut BinDecoder::new(&n)).unwrap();
        assert_eq!(parsed.to_bytes().unwrap(), n);
    }
    assert!(filler_name(2).is_none());
}
