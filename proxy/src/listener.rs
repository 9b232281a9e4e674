//! The listener reconciler: on every applied Snapshot, bind the addresses
//! that are new, close the ones that are gone (their established connections
//! finish on their own), and leave the rest untouched.

use crate::routes::Wanted;
use crate::view::L4View;
use crate::{Error, ListenerInfo, Shared, health, tcp, udp};
use model::Protocol;
use model::shared_map::Diff;
use socket2::{Domain, Socket, Type};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How often binds that failed are retried (an address may appear on an
/// interface, a port may be freed), besides on every new Snapshot.
const RETRY: Duration = Duration::from_secs(5);

const BACKLOG: i32 = 1024;

/// A bound address. Dropping it aborts its accept/receive task, which
/// closes the socket; connections already accepted run in their own tasks.
struct Bound {
    /// Serves kube-proxy's health check rather than proxying.
    health: bool,
    task: Option<JoinHandle<()>>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

type Key = (SocketAddr, Protocol);

pub(crate) struct Reconciler {
    shared: Arc<Shared>,
    bound: HashMap<Key, Bound>,
    /// What each address should serve (a Service frontend or a health check).
    desired: HashMap<Key, Wanted>,
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
        Reconciler {
            shared,
            bound: HashMap::new(),
            desired: HashMap::new(),
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
        for key in touched {
            let want = view.t.wanted.get(&key).cloned().or_else(|| {
                view.t
                    .health_wanted
                    .iter()
                    .find(|w| (w.addr, w.protocol) == key)
                    .cloned()
            });
            self.reconcile(key, want);
        }
        self.last = Some(view.clone());
        self.bind_missing();
        self.applied.send_replace(view.generation);
    }

    /// Makes one address serve what it should: keep, close, or queue a bind.
    fn reconcile(&mut self, key: Key, want: Option<Wanted>) {
        let (addr, proto) = key;
        match (self.bound.get_mut(&key), &want) {
            (Some(b), Some(w)) if b.health == w.health => {}
            (Some(b), Some(_)) => {
                info!(listen = %addr, protocol = proto.as_str(), "listener closed");
                if let Some(task) = b.task.take() {
                    // Same address, other kind: rebind once the socket is gone.
                    task.abort();
                    self.closing.insert(key);
                    let closed = self.closed.0.clone();
                    tokio::spawn(async move {
                        let _ = task.await;
                        let _ = closed.send(key);
                    });
                }
                self.unbind(&key);
            }
            (Some(_), None) => {
                info!(listen = %addr, protocol = proto.as_str(), "listener closed");
                self.unbind(&key);
            }
            (None, _) => {}
        }
        match want {
            Some(w) => {
                if !self.bound.contains_key(&key) {
                    self.unbound.insert(key);
                }
                self.desired.insert(key, w);
            }
            None => {
                self.unbound.remove(&key);
                self.desired.remove(&key);
            }
        }
    }

    /// Drops a bound socket (its accept task is aborted; its connections
    /// run on in their own tasks).
    fn unbind(&mut self, key: &Key) {
        self.bound.remove(key);
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
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
            if self.bound.len() + self.closing.len() >= self.shared.cfg.max_listeners {
                over_budget += 1;
                continue;
            }
            let Some(w) = self.desired.get(&key).cloned() else {
                self.unbound.remove(&key);
                continue;
            };
            match self.bind(&w) {
                Ok(task) => {
                    self.serial += 1;
                    info!(listen = %w.addr, protocol = w.protocol.as_str(), service = %w.service, "listening");
                    self.bound.insert(
                        key,
                        Bound {
                            health: w.health,
                            task: Some(task),
                        },
                    );
                    self.unbound.remove(&key);
                    self.shared
                        .listeners
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(
                            key,
                            ListenerInfo {
                                addr: w.addr,
                                protocol: w.protocol,
                                serial: self.serial,
                            },
                        );
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

    /// Binds one address and starts serving it.
    fn bind(&self, w: &Wanted) -> io::Result<JoinHandle<()>> {
        let shared = self.shared.clone();
        match w.protocol {
            Protocol::Tcp if w.health => {
                bind_tcp(w.addr).map(|l| tokio::spawn(health::serve(l, w.addr, shared)))
            }
            Protocol::Tcp => bind_tcp(w.addr)
                .map(|l| tokio::spawn(tcp::accept_loop(l, w.addr, shared, self.drain.clone()))),
            Protocol::Udp => bind_udp(w.addr).map(|s| {
                tokio::spawn(udp::recv_loop(
                    s,
                    w.addr,
                    shared,
                    self.route_gen.subscribe(),
                ))
            }),
            // Never wanted: routes report SCTP as a problem instead.
            Protocol::Sctp => Err(io::Error::other("SCTP is not supported")),
        }
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
        self.bound.clear();
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, socket2::Protocol::TCP)?;
    // Rebinding right after a close must not wait for TIME_WAIT. On Linux
    // this never lets two listeners share an address (that is SO_REUSEPORT).
    s.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
    // setsockopt per listener instead of one per connection.
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
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
        let l = bind_tcp("127.0.46.201:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert!(s.nodelay().unwrap());
    }
}
