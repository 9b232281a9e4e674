//! L4: the userspace TCP/UDP Service balancer (what kube-proxy does), over
//! the Snapshot published by the control plane.
//!
//! Data flow: the reconciler task turns each Snapshot into a [`routes`]
//! table (one entry per bound address, usable endpoints precomputed) and a
//! listener diff. Accept/receive loops look their route up per connection or
//! UDP session, so endpoint changes apply to new traffic without rebinding.
//! Balancing state (round-robin cursors, ClientIP affinity) lives outside the
//! Snapshot, keyed by Service id and port, and survives reloads.

mod balance;
mod copy;
mod error;
mod health;
mod listener;
mod metrics;
mod pp2;
mod routes;
#[cfg(target_os = "linux")]
mod splice;
mod tcp;
mod udp;
mod view;

pub use error::Error;
pub use routes::{PROXY_PROTOCOL_ANNOTATION, UDP_IDLE_ANNOTATION, parse_duration, parse_timeout};
pub use view::{L4Compiler, L4View, check};

use control::{Snapshots, View};
use model::{ConfigError, Protocol};
use prometheus_client::registry::Registry;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Settings of the L4 plane.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where NodePorts are bound.
    pub node_ips: Vec<IpAddr>,
    /// This node, for traffic policy Local. Without it, no endpoint counts
    /// as local and Local Services drop traffic.
    pub node_name: Option<String>,
    /// This node's `topology.kubernetes.io/zone`, for topology-aware routing.
    pub node_zone: Option<String>,
    /// Per endpoint attempt; the next endpoint is tried after it.
    pub connect_timeout: Duration,
    pub tcp_idle_timeout: Duration,
    /// Default for UDP sessions; a Service may override it with
    /// [`UDP_IDLE_ANNOTATION`].
    pub udp_idle_timeout: Duration,
    /// Per UDP frontend address; the oldest session is evicted when full.
    pub udp_max_sessions: usize,
    /// Forward TCP with splice(2) (Linux); else a buffered copy.
    pub splice: bool,
    /// Most sockets the plane binds: each takes a file descriptor, and the
    /// process needs the rest for connections, DNS and Ingress. Addresses
    /// past it are not bound (shown in problems) rather than exhausting the
    /// limit for everyone.
    pub max_listeners: usize,
    /// Steer TCP frontends with a BPF `sk_lookup` program to one listener
    /// per address family when the process may (root, Linux 5.9+); else,
    /// or when false, each address gets a socket of its own.
    pub steering: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            node_name: None,
            node_zone: None,
            connect_timeout: Duration::from_secs(1),
            tcp_idle_timeout: Duration::from_secs(3600),
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_sessions: 65536,
            splice: true,
            max_listeners: usize::MAX,
            steering: true,
        }
    }
}

/// A frontend address being served. `serial` changes only when its socket
/// (or steering entry) is re-created, so callers can tell an untouched
/// listener from a rebound one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerInfo {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub serial: u64,
    /// Served by a steering entry to a shared listener, not a socket of
    /// its own.
    pub steered: bool,
}

/// What the data path shares.
pub(crate) struct Shared {
    pub cfg: Config,
    /// Routes and health answers of the current generation.
    pub view: View<L4View>,
    pub metrics: Arc<metrics::Metrics>,
    /// Fires when the shutdown grace is over: open connections reset.
    pub kill: watch::Receiver<bool>,
    pub problems: Mutex<Vec<String>>,
    /// The addresses bound now, changed only by the listener reconciler.
    pub bound: Mutex<std::collections::HashMap<listener::Key, listener::Bound>>,
}

/// The running L4 plane.
pub struct Proxy {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    kill: watch::Sender<bool>,
    drain: mpsc::Receiver<()>,
    applied: watch::Receiver<u64>,
    reconciler: JoinHandle<()>,
    follower: JoinHandle<()>,
}

impl Proxy {
    /// Binds the listeners of the current Snapshot (returns once that is
    /// done; failures are reported by [`Proxy::problems`]) and follows
    /// `snapshots` from then on. Must be called within a tokio runtime.
    pub async fn start(mut cfg: Config, snapshots: Snapshots, registry: &mut Registry) -> Proxy {
        if cfg.node_ips.is_empty() {
            cfg.node_ips = Config::default().node_ips;
        }
        let metrics = Arc::new(metrics::Metrics::new(registry));
        let compiler = L4Compiler::new(cfg.clone(), metrics.clone());
        let (view, follower) = control::follow(snapshots, compiler, "l4").await;
        let (kill, kill_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            view: view.clone(),
            metrics,
            kill: kill_rx,
            problems: Mutex::new(Vec::new()),
            bound: Mutex::default(),
        });
        // Nobody sends on `drain`: every connection holds a sender clone,
        // so `recv()` returning None means all of them have finished.
        let (drain_tx, drain) = mpsc::channel(1);
        let (applied_tx, applied) = watch::channel(0);
        let mut rec = listener::Reconciler::new(shared.clone(), drain_tx, applied_tx);
        rec.apply(&view.load_full());
        let (stop, stop_rx) = watch::channel(false);
        let reconciler = tokio::spawn(rec.run(view.subscribe(), stop_rx));
        Proxy {
            shared,
            stop,
            kill,
            drain,
            applied,
            reconciler,
            follower,
        }
    }

    /// Config errors of the current generation (bad annotations), each
    /// naming file, object and field.
    pub fn errors(&self) -> Arc<Vec<ConfigError>> {
        self.shared.view.errors()
    }

    /// One line per problem: listeners that failed to bind, frontends that
    /// cannot be served. Empty when healthy.
    pub fn problems(&self) -> Vec<String> {
        self.shared
            .problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The sockets currently bound, sorted by address.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let mut all: Vec<ListenerInfo> = self
            .shared
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&(addr, protocol), b)| ListenerInfo {
                addr,
                protocol,
                serial: b.serial,
                steered: b.kind == listener::Kind::Steered,
            })
            .collect();
        all.sort_by_key(|l| (l.addr, l.protocol));
        all
    }

    /// The generation of the last Snapshot applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The generation of each Snapshot applied (routes and listeners), as
    /// it happens.
    pub fn applied_generations(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Waits until a Snapshot of at least `generation` is applied.
    pub async fn wait_applied(&self, generation: u64) {
        let mut rx = self.applied.clone();
        let _ = rx.wait_for(|g| *g >= generation).await;
    }

    /// Stops accepting, lets open connections finish within `grace`, then
    /// resets the rest.
    pub async fn shutdown(self, grace: Duration) {
        let Proxy {
            stop,
            kill,
            mut drain,
            reconciler,
            follower,
            ..
        } = self;
        follower.abort();
        let _ = stop.send(true);
        let _ = reconciler.await;
        if tokio::time::timeout(grace, drain.recv()).await.is_err() {
            let _ = kill.send(true);
            // Resets are immediate; this only bounds a stuck task.
            let _ = tokio::time::timeout(Duration::from_secs(1), drain.recv()).await;
        }
    }
}
