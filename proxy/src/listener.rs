//! The listener reconciler: on every applied Snapshot, bind the addresses
//! that are new, close the ones that are gone (their established connections
//! finish on their own), and leave the rest untouched.
//!
//! With steering (root, Linux 5.9+) a TCP frontend is an entry in the
//! `sk_lookup` map, not a socket: every TCP frontend of a family shares one
//! listener, so ten thousand Services take two descriptors. Without it, and
//! for UDP frontends and health checks always, each address has its own
//! socket.

use crate::routes::Wanted;
use crate::view::L4View;
use crate::{Error, Shared, health, tcp, udp};
use model::Protocol;
use model::shared_map::Diff;
use socket2::{Domain, Socket, Type};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How often binds that failed are retried (an address may appear on an
/// interface, a port may be freed), besides on every new Snapshot.
const RETRY: Duration = Duration::from_secs(5);

const BACKLOG: i32 = 1024;

/// Backlog of a listener every steered frontend of a family shares.
const SHARED_BACKLOG: i32 = 4096;

/// How an address is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Its own socket, proxying.
    Socket,
    /// kube-proxy's load-balancer health check, on its own socket.
    Health,
    /// A steering entry to the shared TCP listener of its family.
    Steered,
}

/// A bound address. Dropping it aborts its accept/receive task, which
/// closes the socket; connections already accepted run in their own tasks.
pub(crate) struct Bound {
    pub(crate) kind: Kind,
    /// None for a steered address (and once a close is under way).
    task: Option<JoinHandle<()>>,
    /// Which bind this was (see [`crate::ListenerInfo::serial`]).
    pub(crate) serial: u64,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

pub(crate) type Key = (SocketAddr, Protocol);

/// `sk_lookup` steering and the shared listeners it hands connections to.
struct Steer {
    map: steer::Steering,
    /// The shared TCP listener of IPv4 (slot 0) and IPv6 (slot 1), bound
    /// on first use and kept while the plane runs.
    listeners: [Option<Bound>; 2],
}

pub(crate) struct Reconciler {
    shared: Arc<Shared>,
    /// None: one socket per address.
    steer: Option<Steer>,
    /// Sockets open (bound addresses with a socket of their own, shared
    /// listeners): what counts against `max_listeners`.
    sockets: usize,
    /// Desired but not bound (failed, over budget, or waiting for a close),
    /// in address order so the budget always goes to the same ones.
    unbound: BTreeSet<Key>,
    /// Addresses whose listener changed kind (a healthCheckNodePort that
    /// became a nodePort, or back): the old socket must be closed before
    /// the new one can bind. Each is reported on `closed` once it is.
    closing: HashSet<Key>,
    closed: (mpsc::UnboundedSender<Key>, mpsc::UnboundedReceiver<Key>),
    /// The view applied last: the next one is diffed against it.
    last: Option<Arc<L4View>>,
    route_problems: Vec<String>,
    bind_errors: Vec<String>,
    serial: u64,
    drain: mpsc::Sender<()>,
    route_gen: watch::Sender<u64>,
    applied: watch::Sender<u64>,
}

impl Reconciler {
    pub fn new(shared: Arc<Shared>, drain: mpsc::Sender<()>, applied: watch::Sender<u64>) -> Self {
        let steer = shared.cfg.steering.then(attach_steering).flatten();
        Reconciler {
            shared,
            steer,
            sockets: 0,
            unbound: BTreeSet::new(),
            closing: HashSet::new(),
            closed: mpsc::unbounded_channel(),
            last: None,
            route_problems: Vec::new(),
            bind_errors: Vec::new(),
            serial: 0,
            drain,
            route_gen: watch::Sender::new(0),
            applied,
        }
    }

    /// Applies a view: its routes are already in place (so a listener
    /// bound below finds its route at once); here the listener diff, for
    /// the addresses that changed since the last view only.
    pub fn apply(&mut self, view: &Arc<L4View>) {
        // Tells UDP frontends to drop sessions whose endpoint went away.
        self.route_gen.send_modify(|g| *g += 1);
        let problems = view.problems();
        for p in problems.iter().filter(|p| !self.route_problems.contains(p)) {
            warn!(generation = view.generation, "{p}");
        }
        self.route_problems = problems;
        let mut touched: BTreeSet<Key> = match &self.last {
            Some(old) => view
                .t
                .wanted
                .diff(&old.t.wanted, |a, b| a == b)
                .into_iter()
                .map(|d| match d {
                    Diff::Added(k, _) | Diff::Removed(k, _) | Diff::Changed(k, _, _) => *k,
                })
                .collect(),
            None => view.t.wanted.keys().copied().collect(),
        };
        let old_health = self.last.as_ref().map(|l| l.t.health_wanted.clone());
        if old_health
            .as_ref()
            .is_none_or(|h| !Arc::ptr_eq(h, &view.t.health_wanted))
        {
            let old = old_health.iter().flat_map(|h| h.iter());
            for w in old.chain(view.t.health_wanted.iter()) {
                touched.insert((w.addr, w.protocol));
            }
        }
        self.last = Some(view.clone());
        for key in touched {
            let want = self.wanted(&key);
            self.reconcile(key, want);
        }
        self.bind_missing();
        self.applied.send_replace(view.generation);
    }

    /// The addresses bound now. They are kept in [`Shared`] (one map, not a
    /// copy for [`crate::Proxy::listeners`]); only this reconciler changes
    /// them, off the data path.
    fn bound(&self) -> MutexGuard<'_, HashMap<Key, Bound>> {
        self.shared.bound.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `key` should serve (a Service frontend or a health check) in
    /// the view applied last: the view's own map, not a copy of it.
    fn wanted(&self, key: &Key) -> Option<Wanted> {
        let t = &self.last.as_ref()?.t;
        t.wanted.get(key).cloned().or_else(|| {
            t.health_wanted
                .iter()
                .find(|w| (w.addr, w.protocol) == *key)
                .cloned()
        })
    }

    /// How `w` is served here.
    fn kind(&self, w: &Wanted) -> Kind {
        if w.health {
            Kind::Health
        } else if self.steer.is_some() && w.protocol == Protocol::Tcp && !w.loops {
            Kind::Steered
        } else {
            Kind::Socket
        }
    }

    /// Whether serving `w` as `kind` opens a socket: its own, or the first
    /// shared listener of its family.
    fn takes_a_socket(&self, w: &Wanted, kind: Kind) -> bool {
        match (kind, &self.steer) {
            (Kind::Steered, Some(s)) => s.listeners[usize::from(w.addr.is_ipv6())].is_none(),
            _ => true,
        }
    }

    /// Makes one address serve what it should: keep, close, or queue a bind.
    fn reconcile(&mut self, key: Key, want: Option<Wanted>) {
        let (addr, proto) = key;
        let kind = want.as_ref().map(|w| self.kind(w));
        let changed = self.bound().get(&key).is_some_and(|b| Some(b.kind) != kind);
        if changed {
            info!(listen = %addr, protocol = proto.as_str(), "listener closed");
            let task = kind.and_then(|_| self.bound().get_mut(&key)?.task.take());
            if let Some(task) = task {
                // Same address, other kind: serve it again once the socket
                // is gone (a steering entry would not need to wait, but a
                // quick change back to a socket would find it taken).
                task.abort();
                self.closing.insert(key);
                let closed = self.closed.0.clone();
                tokio::spawn(async move {
                    let _ = task.await;
                    let _ = closed.send(key);
                });
                self.sockets -= 1;
            }
            self.unbind(&key);
        }
        if want.is_some() {
            if !self.bound().contains_key(&key) {
                self.unbound.insert(key);
            }
        } else {
            self.unbound.remove(&key);
        }
    }

    /// Drops a bound socket (its accept task is aborted; its connections
    /// run on in their own tasks) or steering entry.
    fn unbind(&mut self, key: &Key) {
        let Some(b) = self.bound().remove(key) else {
            return;
        };
        if b.task.is_some() {
            self.sockets -= 1;
        }
        if b.kind == Kind::Steered
            && let Some(s) = &self.steer
            && let Err(e) = s.map.unsteer(key.0)
        {
            warn!(listen = %key.0, error = %e, "steering entry not removed");
        }
    }

    /// Binds every wanted address that is not bound yet.
    fn bind_missing(&mut self) {
        let mut errors = Vec::new();
        let mut over_budget = 0usize;
        let pending: Vec<Key> = self.unbound.iter().copied().collect();
        for key in pending {
            if self.closing.contains(&key) {
                continue;
            }
            let Some(w) = self.wanted(&key) else {
                self.unbound.remove(&key);
                continue;
            };
            let kind = self.kind(&w);
            if self.takes_a_socket(&w, kind)
                && self.sockets + self.closing.len() >= self.shared.cfg.max_listeners
            {
                over_budget += 1;
                continue;
            }
            match self.bind(&w, kind) {
                Ok(task) => {
                    self.serial += 1;
                    info!(listen = %w.addr, protocol = w.protocol.as_str(), service = %w.service, steered = kind == Kind::Steered, "listening");
                    if task.is_some() {
                        self.sockets += 1;
                    }
                    let serial = self.serial;
                    self.bound().insert(key, Bound { kind, task, serial });
                    self.unbound.remove(&key);
                }
                Err(source) => {
                    let e = Error::Bind {
                        addr: w.addr,
                        protocol: w.protocol.as_str(),
                        service: w.service.to_string(),
                        source,
                    };
                    warn!("{e}");
                    self.shared.metrics.bind_failed(&w.service);
                    errors.push(e.to_string());
                }
            }
        }
        if over_budget > 0 {
            let e = format!(
                "{over_budget} Service addresses not bound: the listener budget ({} sockets, from the open-file limit) is used up",
                self.shared.cfg.max_listeners
            );
            warn!("{e}");
            errors.push(e);
        }
        self.bind_errors = errors;
        self.publish();
    }

    /// Binds one address and starts serving it: its own socket's task, or
    /// None for a steering entry.
    fn bind(&mut self, w: &Wanted, kind: Kind) -> io::Result<Option<JoinHandle<()>>> {
        let shared = self.shared.clone();
        let task = match (kind, w.protocol) {
            (Kind::Steered, _) => {
                self.steer_to_shared(w.addr)?;
                return Ok(None);
            }
            (Kind::Health, _) => {
                bind_tcp(w.addr, BACKLOG).map(|l| tokio::spawn(health::serve(l, w.addr, shared)))
            }
            (Kind::Socket, Protocol::Tcp) => bind_tcp(w.addr, BACKLOG).map(|l| {
                let frontend = tcp::Frontend::Bound(w.addr);
                tokio::spawn(tcp::accept_loop(l, frontend, shared, self.drain.clone()))
            }),
            (Kind::Socket, Protocol::Udp) => bind_udp(w.addr).map(|s| {
                tokio::spawn(udp::recv_loop(
                    s,
                    w.addr,
                    shared,
                    self.route_gen.subscribe(),
                ))
            }),
            // Never wanted: routes report SCTP as a problem instead.
            (Kind::Socket, Protocol::Sctp) => Err(io::Error::other("SCTP is not supported")),
        };
        task.map(Some)
    }

    /// Steers `addr` to its family's shared listener, binding that first
    /// if this is the first steered address of the family.
    fn steer_to_shared(&mut self, addr: SocketAddr) -> io::Result<()> {
        let slot = usize::from(addr.is_ipv6());
        let Some(s) = &mut self.steer else {
            return Err(io::Error::other("steering is off"));
        };
        if s.listeners[slot].is_none() {
            let local = if addr.is_ipv6() {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
            } else {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
            };
            let l = bind_tcp(local, SHARED_BACKLOG)?;
            s.map.set_socket(slot as u32, l.as_fd())?;
            info!(listen = ?l.local_addr().ok(), "shared listener for steered TCP frontends");
            let frontend = tcp::Frontend::Dialled;
            let task = tokio::spawn(tcp::accept_loop(
                l,
                frontend,
                self.shared.clone(),
                self.drain.clone(),
            ));
            s.listeners[slot] = Some(Bound {
                kind: Kind::Socket,
                task: Some(task),
                // Not listed by `Proxy::listeners`.
                serial: 0,
            });
            self.sockets += 1;
        }
        s.map.steer(addr, slot as u32)
    }

    fn publish(&self) {
        let mut problems = self.route_problems.clone();
        problems.extend(self.bind_errors.iter().cloned());
        *self
            .shared
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = problems;
    }

    /// Follows the view until `stop` fires; dropping `self` then closes
    /// every listener.
    pub async fn run(mut self, mut updates: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        let mut watching = true;
        loop {
            let retry = !self.bind_errors.is_empty();
            tokio::select! {
                r = updates.changed(), if watching => match r {
                    Ok(()) => {
                        let view = self.shared.view.load_full();
                        self.apply(&view);
                    }
                    // The Store is gone: keep serving the last Snapshot.
                    Err(_) => watching = false,
                },
                _ = tokio::time::sleep(RETRY), if retry => self.bind_missing(),
                Some(key) = self.closed.1.recv() => {
                    self.closing.remove(&key);
                    self.bind_missing();
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }
}

/// The bound addresses live in [`Shared`], which their own accept tasks
/// hold: they are closed when the reconciler ends, however it ends.
impl Drop for Reconciler {
    fn drop(&mut self) {
        self.bound().clear();
    }
}

fn socket(addr: SocketAddr, ty: Type, proto: socket2::Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // FREEBIND: a ClusterIP that is not (yet) on an interface still binds,
    // so listeners do not depend on address plumbing order.
    #[cfg(target_os = "linux")]
    {
        let r = if addr.is_ipv4() {
            s.set_freebind_v4(true)
        } else {
            s.set_freebind_v6(true)
        };
        if let Err(e) = r {
            tracing::debug!(listen = %addr, error = %e, "IP_FREEBIND not set");
        }
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Loads and attaches the steering program, or says why not (then each
/// address gets a socket of its own, as before).
fn attach_steering() -> Option<Steer> {
    match steer::Steering::attach() {
        Ok(map) => {
            info!("TCP frontends are steered by sk_lookup to one listener per address family");
            Some(Steer {
                map,
                listeners: [None, None],
            })
        }
        Err(e) => {
            info!(error = %e, "sk_lookup steering unavailable (it needs CAP_BPF and CAP_NET_ADMIN and Linux 5.9 or later): one socket per Service address");
            None
        }
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, socket2::Protocol::TCP)?;
    // Rebinding right after a close must not wait for TIME_WAIT. On Linux
    // this never lets two listeners share an address (that is SO_REUSEPORT).
    s.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
    // setsockopt per listener instead of one per connection.
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    TcpListener::from_std(s.into())
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    // No SO_REUSEADDR for UDP: it would let two sockets share the address
    // and silently split the traffic.
    let s = socket(addr, Type::DGRAM, socket2::Protocol::UDP)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data path relies on this instead of a setsockopt per connection.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let l = bind_tcp("127.0.46.201:0".parse().unwrap(), BACKLOG).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert!(s.nodelay().unwrap());
    }
}
