//! UDP frontends. One socket per bound address; per client address a
//! session: a connected socket towards one endpoint plus a task relaying the
//! endpoint's replies back through the frontend socket, so they come from
//! the Service address and port the client sent to.
//!
//! Both directions receive in batches (`recvmmsg`) and treat a short batch
//! as "queue empty", which clears tokio's readiness without the extra,
//! empty receive a read-until-`WouldBlock` loop costs per wake-up.

use crate::Shared;
use crate::routes::Route;
use dgram::{BATCH, RecvBatch};
use model::Protocol;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug};

/// Largest UDP payload plus slack: DNS over UDP may use up to 64 KiB.
const DATAGRAM: usize = 64 * 1024;

/// Replies taken per wake-up of a session (usually one is queued).
const REPLY_BATCH: usize = 8;

thread_local! {
    // Receive batches per worker thread, not per socket or session (65536
    // sessions of 64 KiB would pin 4 GiB). Pages are touched only as far
    // as datagrams reach. Never held across an await.
    static CLIENT_BATCH: RefCell<RecvBatch> = RefCell::new(RecvBatch::new(BATCH, DATAGRAM));
    static REPLY_BATCH_BUF: RefCell<RecvBatch> =
        RefCell::new(RecvBatch::new(REPLY_BATCH, DATAGRAM));
}

/// Full batches read per wake-up before route changes and expiries get a
/// turn again.
const BATCHES_PER_WAKE: usize = 8;

struct Session {
    upstream: Arc<UdpSocket>,
    endpoint: SocketAddr,
    seq: u64,
    /// Milliseconds since `Table::epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    route: Arc<Route>,
    relay: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.relay.abort();
        self.route.metrics.udp_active.dec();
    }
}

/// The sessions of one frontend socket, owned by its receive task (no lock).
struct Table {
    by_client: HashMap<SocketAddr, Session>,
    /// Creation order, for evicting the oldest when full.
    order: BTreeMap<u64, SocketAddr>,
    next_seq: u64,
    max: usize,
    epoch: Instant,
}

impl Table {
    fn remove(&mut self, client: &SocketAddr) {
        if let Some(s) = self.by_client.remove(client) {
            self.order.remove(&s.seq);
        }
    }

    /// Keeps only sessions whose endpoint the current route of `local` still uses.
    fn prune_to(&mut self, shared: &Shared, local: SocketAddr) {
        let route = shared
            .view
            .load()
            .t
            .routes
            .get(&(local, Protocol::Udp))
            .cloned();
        self.prune(route.as_deref());
    }

    fn prune(&mut self, route: Option<&Route>) {
        let order = &mut self.order;
        self.by_client.retain(|client, s| {
            let keep = route.is_some_and(|r| r.endpoints.contains(&s.endpoint));
            if !keep {
                debug!(client.addr = %client, endpoint = %s.endpoint, "endpoint gone; UDP session dropped");
                order.remove(&s.seq);
            }
            keep
        });
    }
}

pub(crate) async fn recv_loop(
    socket: UdpSocket,
    local: SocketAddr,
    shared: Arc<Shared>,
    mut route_gen: watch::Receiver<u64>,
) {
    let socket = Arc::new(socket);
    let (expired_tx, mut expired_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut table = Table {
        by_client: HashMap::new(),
        order: BTreeMap::new(),
        next_seq: 0,
        max: shared.cfg.udp_max_sessions.max(1),
        epoch: Instant::now(),
    };
    let fd = socket.as_raw_fd();
    loop {
        tokio::select! {
            // Biased, route changes first: a datagram sent after a reload
            // must never ride a session whose endpoint that reload removed.
            biased;
            Ok(()) = route_gen.changed() => {
                table.prune_to(&shared, local);
                continue;
            }
            Some((client, seq)) = expired_rx.recv() => {
                if table.by_client.get(&client).is_some_and(|s| s.seq == seq) {
                    table.remove(&client);
                }
                continue;
            }
            r = socket.readable() => if let Err(e) = r {
                debug!(listen = %local, error = %e, "UDP socket failed");
                return;
            },
        }
        for _ in 0..BATCHES_PER_WAKE {
            // Before each receive, as the select above: a datagram that
            // follows a reload must see that reload's sessions.
            if route_gen.has_changed().unwrap_or(false) {
                route_gen.borrow_and_update();
                table.prune_to(&shared, local);
            }
            let r = socket.try_io(Interest::READABLE, || {
                CLIENT_BATCH.with(|b| {
                    let mut b = b.borrow_mut();
                    let n = b.recv(fd)?;
                    for i in 0..n {
                        if let (data, Some(client)) = b.get(i) {
                            on_datagram(
                                data,
                                client,
                                local,
                                &socket,
                                &shared,
                                &mut table,
                                &expired_tx,
                            );
                        }
                    }
                    short_batch_is_empty(n, b.slots())
                })
            });
            match r {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors surface here on some kernels; they concern one
                // peer, not the socket.
                Err(e) => {
                    debug!(listen = %local, error = %e, "UDP receive error");
                    break;
                }
            }
        }
    }
}

/// After a batch of `n` from `slots`: a short batch means the queue was
/// drained, and answering `WouldBlock` lets tokio clear readiness now (a
/// datagram arriving meanwhile raises a new edge, so none is missed).
fn short_batch_is_empty(n: usize, slots: usize) -> io::Result<()> {
    if n < slots {
        Err(io::ErrorKind::WouldBlock.into())
    } else {
        Ok(())
    }
}

fn on_datagram(
    data: &[u8],
    client: SocketAddr,
    local: SocketAddr,
    socket: &Arc<UdpSocket>,
    shared: &Shared,
    table: &mut Table,
    expired: &mpsc::UnboundedSender<(SocketAddr, u64)>,
) {
    let now = table.epoch.elapsed().as_millis() as u64;
    if let Some(s) = table.by_client.get(&client) {
        s.last.store(now, Ordering::Relaxed);
        s.route.metrics.bytes_in.inc_by(data.len() as u64);
        send(&s.upstream, data);
        return;
    }
    let route = shared
        .view
        .load()
        .t
        .routes
        .get(&(local, Protocol::Udp))
        .cloned();
    let Some(route) = route else { return };
    let Some(start) = route.start_index(client.ip()) else {
        // No usable endpoint: drop, as kube-proxy does for UDP.
        route.metrics.no_endpoint.inc();
        return;
    };
    let endpoint = route.endpoints.get(start);
    let upstream = match connect(endpoint) {
        Ok(u) => Arc::new(u),
        Err(e) => {
            route.metrics.connect_failures.inc();
            debug!(endpoint = %endpoint, error = %e, "UDP upstream socket failed");
            return;
        }
    };
    route.remember(client.ip(), endpoint);
    if table.by_client.len() >= table.max
        && let Some((_, oldest)) = table.order.pop_first()
        && let Some(s) = table.by_client.remove(&oldest)
    {
        s.route.metrics.udp_evicted.inc();
    }
    let seq = table.next_seq;
    table.next_seq += 1;
    let last = Arc::new(AtomicU64::new(now));
    // One span per session, as TCP has one per connection.
    let span = tracing::debug_span!(
        "l4.udp",
        client.addr = %client,
        service = %route.service.id,
        endpoint = %endpoint,
    );
    let relay = tokio::spawn(
        relay(
            upstream.clone(),
            socket.clone(),
            client,
            last.clone(),
            table.epoch,
            route.udp_idle,
            route.clone(),
            (expired.clone(), seq),
        )
        .instrument(span),
    );
    route.metrics.udp_sessions.inc();
    route.metrics.udp_active.inc();
    route.metrics.bytes_in.inc_by(data.len() as u64);
    send(&upstream, data);
    debug!(client.addr = %client, service = %route.service.id, endpoint = %endpoint, "UDP session");
    table.order.insert(seq, client);
    table.by_client.insert(
        client,
        Session {
            upstream,
            endpoint,
            seq,
            last,
            route,
            relay,
        },
    );
}

/// A socket connected to `endpoint` (bind and connect do not block for UDP).
fn connect(endpoint: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if endpoint.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(endpoint)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s)
}

/// Sends straight through the socket, not through tokio's readiness (which
/// a new socket does not have yet). A full send buffer drops the datagram,
/// as the kernel's own queues do for UDP.
fn send(upstream: &UdpSocket, data: &[u8]) {
    if let Err(e) = socket2::SockRef::from(upstream).send(data) {
        // ECONNREFUSED from an earlier ICMP (the endpoint is down) or a full buffer.
        debug!(error = %e, "UDP send to endpoint failed");
    }
}

/// Relays replies to the client until the session is idle for `idle`
/// (traffic either way counts), then reports itself expired.
///
/// One timer per session, re-armed only when it fires: the hot path (a
/// reply) touches no timer, only an atomic store.
#[allow(clippy::too_many_arguments)]
async fn relay(
    upstream: Arc<UdpSocket>,
    frontend: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    epoch: Instant,
    idle: Duration,
    route: Arc<Route>,
    (expired, seq): (mpsc::UnboundedSender<(SocketAddr, u64)>, u64),
) {
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            r = upstream.readable() => {
                if let Err(e) = r {
                    debug!(error = %e, "UDP upstream failed");
                    let _ = expired.send((client, seq));
                    return;
                }
            }
            () = &mut timer => {
                let since = epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                match idle.checked_sub(since).filter(|d| !d.is_zero()) {
                    // Traffic since the timer was armed: wait for the rest.
                    Some(left) => timer.as_mut().reset(tokio::time::Instant::now() + left),
                    None => {
                        let _ = expired.send((client, seq));
                        return;
                    }
                }
                continue;
            }
        }
        let fd = upstream.as_raw_fd();
        let mut waiting = Vec::new();
        let r = upstream.try_io(Interest::READABLE, || {
            REPLY_BATCH_BUF.with(|b| {
                let mut b = b.borrow_mut();
                let n = b.recv(fd)?;
                last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                for i in 0..n {
                    let (data, _) = b.get(i);
                    route.metrics.bytes_out.inc_by(data.len() as u64);
                    match frontend.try_send_to(data, client) {
                        // Keep a copy and wait outside the borrow of the batch.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            waiting.push(data.to_vec())
                        }
                        Err(e) => debug!(error = %e, "UDP reply to client failed"),
                        Ok(_) => {}
                    }
                }
                short_batch_is_empty(n, b.slots())
            })
        });
        for data in waiting {
            let _ = frontend.send_to(&data, client).await;
        }
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // ICMP port unreachable from a dead endpoint; keep waiting.
            Err(e) => debug!(error = %e, "UDP receive from endpoint failed"),
        }
    }
}
