//! Forwarding to upstream resolvers: one UDP exchange per query (retried
//! over TCP when the answer is truncated), through the cache, with a bound
//! on forwards in flight so a flood cannot grow tasks and sockets without
//! limit. Any failure is reported at once; the caller answers SERVFAIL.

use crate::cache::Cache;
use crate::metrics::{ForwardError, Metrics};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::LowerName;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// The EDNS buffer size we advertise upstream (the DNS flag day 2020 value).
const UPSTREAM_PAYLOAD: u16 = 1232;

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    cache: Cache,
    inflight: Arc<Semaphore>,
    metrics: Metrics,
}

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        cache: Cache,
        max_inflight: usize,
        metrics: Metrics,
    ) -> Self {
        Forwarder {
            upstreams,
            timeout,
            cache,
            inflight: Arc::new(Semaphore::new(max_inflight.max(1))),
            metrics,
        }
    }

    /// The upstream answer for `query` (from the cache when fresh).
    pub async fn resolve(&self, query: &Query) -> Result<Message, ForwardError> {
        let key = (LowerName::new(query.name()), query.query_type());
        if let Some(msg) = self.cache.get(&key, Instant::now()) {
            self.metrics.cache_hits.inc();
            return Ok(msg);
        }
        self.metrics.cache_misses.inc();
        let Ok(_permit) = self.inflight.clone().try_acquire_owned() else {
            self.metrics.forward_error(ForwardError::Overload);
            return Err(ForwardError::Overload);
        };
        let mut last = Err(ForwardError::Network);
        for up in &self.upstreams {
            let res = match tokio::time::timeout(self.timeout, exchange(*up, query)).await {
                Ok(Ok(msg)) => Ok(msg),
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %up, error = %e, "dns forward failed");
                    Err(ForwardError::Network)
                }
                Err(_) => Err(ForwardError::Timeout),
            };
            match res {
                Ok(msg) => {
                    self.cache.put(key, &msg, Instant::now());
                    self.metrics.cache_entries.set(self.cache.len() as i64);
                    return Ok(msg);
                }
                Err(e) => {
                    self.metrics.forward_error(e);
                    last = Err(e);
                }
            }
        }
        last
    }
}

/// One query to one upstream: UDP, then TCP if the answer was truncated.
async fn exchange(up: SocketAddr, query: &Query) -> std::io::Result<Message> {
    let id = random_id();
    let mut req = Message::new(id, MessageType::Query, OpCode::Query);
    req.metadata.recursion_desired = true;
    req.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    req.set_edns(edns);
    let bytes = req.to_vec().map_err(std::io::Error::other)?;

    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    // Ignore stray or spoofed datagrams; the caller's timeout bounds the wait.
    let msg = loop {
        let n = sock.recv(&mut buf).await?;
        if let Ok(msg) = Message::from_vec(&buf[..n])
            && answers(&msg, id, query)
        {
            break msg;
        }
    };
    if !msg.metadata.truncation {
        return Ok(msg);
    }
    let mut tcp = TcpStream::connect(up).await?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    framed.extend_from_slice(&bytes);
    tcp.write_all(&framed).await?;
    let len = tcp.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    tcp.read_exact(&mut buf).await?;
    let msg = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if !answers(&msg, id, query) {
        return Err(std::io::Error::other("TCP answer does not match the query"));
    }
    Ok(msg)
}

fn answers(msg: &Message, id: u16, query: &Query) -> bool {
    msg.metadata.id == id
        && msg.metadata.message_type == MessageType::Response
        && msg.queries.len() == 1
        && msg.queries[0].query_type() == query.query_type()
        && msg.queries[0].name().eq_ignore_root(query.name())
}

/// An unpredictable query ID (std's hasher keys are random per process).
fn random_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish() as u16
}

/// The nameservers of a resolv.conf (port 53), skipping `exclude` (our own
/// listener: forwarding to ourselves would loop).
pub fn resolv_conf_upstreams(text: &str, exclude: SocketAddr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "nameserver").then_some(())?;
            // Drop an IPv6 zone (`fe80::1%eth0`): not parseable as an address.
            let ip = it.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .filter(|a| *a != exclude)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver 127.0.0.1\noptions ndots:5\nnameserver bogus\n";
        let got = resolv_conf_upstreams(text, "127.0.0.1:53".parse().unwrap());
        assert_eq!(
            got,
            vec![
                "10.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
