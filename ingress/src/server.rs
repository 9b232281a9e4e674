//! Listeners and connections: HTTP/1.1 + h2c on the plain listener, TLS with
//! ALPN on the other, every connection watched for graceful shutdown.

use crate::balance::Balancer;
use crate::headers::Forwarded;
use crate::io::DetectionDeadline;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Shared, handle};
use crate::tls::{GatewayScope, L7View, ViewCompiler, covers, server_config};
use crate::upstream::Upstream;
use crate::{Config, Error};
use control::{Snapshots, View};
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use model::snapshot::Listen;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A running ingress plane.
pub struct Handle {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    stop: watch::Sender<Option<Duration>>,
    tasks: Vec<JoinHandle<()>>,
    follower: JoinHandle<()>,
    view: View<L7View>,
}

impl Handle {
    /// Where the plain listener is bound.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Where the TLS listener is bound.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https
    }

    /// Stops accepting; in-flight requests get up to `grace` to finish.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        for t in self.tasks {
            let _ = t.await;
        }
        self.follower.abort();
    }

    /// The generation of each route table put in service, as it happens.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.view.subscribe()
    }

    /// Waits until the served routes were built from at least `generation`.
    pub async fn wait_applied(&self, generation: u64) {
        let _ = self.view.wait_applied(generation).await;
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let err = |source| Error::Bind { addr, source };
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(1024).map_err(err)?;
    TcpListener::from_std(s.into()).map_err(err)
}

/// Binds the listeners, then serves until [`Handle::shutdown`].
pub async fn start(
    cfg: Config,
    snapshots: Snapshots,
    registry: &mut Registry,
) -> Result<Handle, Error> {
    let http = cfg.http_listen.map(bind).transpose()?;
    let https = cfg.https_listen.map(bind).transpose()?;
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (http_addr, https_addr) = (local(&http), local(&https));

    let compiler = ViewCompiler::new(cfg.default_certificate.clone())?;
    let (view, follower) = control::follow(snapshots, compiler, "ingress").await;

    let metrics = Metrics::new(registry);
    let shared = Arc::new(Shared {
        view: view.clone(),
        upstream: Upstream::new(cfg.upstream_idle_per_host, metrics.upstream_open.clone()),
        h1: crate::h1::Pool::new(cfg.upstream_idle_per_host, metrics.upstream_open.clone()),
        balancer: Balancer::default(),
        metrics,
        server: HeaderValue::from_str(&cfg.server_name)
            .unwrap_or(HeaderValue::from_static("nodeway")),
        https_port: https_addr.map(|a| a.port()),
        node_ips: cfg.node_ips.clone(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_h2_streams)
        .max_header_list_size(cfg.max_header_bytes as u32)
        // A peer that vanished (no FIN, no RST) would hold its HTTP/2
        // connection forever: unanswered pings close it.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let (stop, stop_rx) = watch::channel(None);
    let mut tasks = Vec::new();
    let accept = Accept {
        shared,
        builder,
        handshake_timeout: cfg.header_read_timeout,
    };
    if let Some(l) = http {
        tasks.push(tokio::spawn(accept.clone().run(
            l,
            None,
            true,
            stop_rx.clone(),
        )));
    }
    if let Some(l) = https {
        let scope = GatewayScope::Shared {
            addr: https_addr.expect("bound above"),
            node_ips: cfg.node_ips.clone(),
        };
        let acceptor = TlsAcceptor::from(server_config(view.clone(), scope)?);
        tasks.push(tokio::spawn(accept.clone().run(
            l,
            Some(acceptor),
            true,
            stop_rx.clone(),
        )));
    }
    let ingress_addrs: Vec<SocketAddr> = [http_addr, https_addr].into_iter().flatten().collect();
    tasks.push(tokio::spawn(gateway_listeners(
        view.clone(),
        ingress_addrs,
        cfg.node_ips.clone(),
        accept,
        stop_rx,
    )));
    tracing::info!(http = ?http_addr, https = ?https_addr, "ingress plane listening");
    Ok(Handle {
        http: http_addr,
        https: https_addr,
        stop,
        tasks,
        follower,
        view,
    })
}

/// What every listener's connections are served with.
#[derive(Clone)]
struct Accept {
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: Duration,
}

impl Accept {
    /// Accepts until `stop` says how long in-flight requests may still take.
    /// `ingress`: an Ingress listener (else a Gateway listener of its own).
    async fn run(
        self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        ingress: bool,
        stop: watch::Receiver<Option<Duration>>,
    ) {
        accept_loop(listener, tls, ingress, self, stop).await
    }
}

/// Serves the plain-HTTP Gateway listeners the current routes ask for:
/// binds those that are new, stops those that are gone (their connections
/// finish), leaves the rest. An address that is also an Ingress listener's
/// is served by that listener.
async fn gateway_listeners(
    view: View<L7View>,
    ingress_addrs: Vec<SocketAddr>,
    node_ips: Vec<std::net::IpAddr>,
    accept: Accept,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    // By address, whether it is TLS, and the listener key its TLS
    // certificates are looked up by (each may change on its own).
    let mut running: HashMap<(SocketAddr, bool, Listen), Running> = HashMap::new();
    let mut generations = view.subscribe();
    loop {
        let want = {
            let v = view.load();
            gateway_addrs(&v.gateway, &node_ips, &ingress_addrs)
        };
        running.retain(|(addr, tls, at), r| {
            let keep = want.get(addr) == Some(&(*at, *tls));
            if !keep {
                tracing::info!(listen = %addr, "gateway listener closed");
                let _ = r.stop.send(Some(Duration::from_secs(30)));
            }
            keep
        });
        let mut unbound = false;
        for (addr, (at, tls)) in want {
            if running.contains_key(&(addr, tls, at)) {
                continue;
            }
            match start_listener(&view, &accept, addr, at, tls) {
                Ok(r) => {
                    running.insert((addr, tls, at), r);
                }
                // A socket being closed (a listener that changed protocol)
                // or taken by something else: tried again shortly.
                Err(e) => {
                    tracing::warn!(listen = %addr, error = %e, "gateway listener not bound; retrying");
                    unbound = true;
                }
            }
        }
        tokio::select! {
            r = generations.changed() => if r.is_err() { break },
            _ = stop.changed() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)), if unbound => {}
        }
    }
    let grace = stop.borrow().unwrap_or_default();
    for (_, r) in running {
        let _ = r.stop.send(Some(grace));
        let _ = r.task.await;
    }
}

/// Binds one Gateway listener's socket and starts accepting on it.
fn start_listener(
    view: &View<L7View>,
    accept: &Accept,
    addr: SocketAddr,
    at: Listen,
    tls: bool,
) -> Result<Running, Error> {
    let acceptor = tls
        .then(|| server_config(view.clone(), GatewayScope::Bind(at)))
        .transpose()?
        .map(TlsAcceptor::from);
    let listener = bind(addr)?;
    tracing::info!(listen = %addr, tls, "gateway listener bound");
    let (stop, rx) = watch::channel(None);
    let task = tokio::spawn(accept.clone().run(listener, acceptor, false, rx));
    Ok(Running { stop, task })
}

/// A Gateway listener being served: its accept loop and how to stop it.
struct Running {
    stop: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
}

/// Where the Gateway listeners are to be bound: each listener address, or
/// the port on every node address; with the listener key and whether it
/// is TLS. Addresses an Ingress listener takes are left out (served there).
fn gateway_addrs(
    table: &model::gateway::GatewayTable,
    node_ips: &[std::net::IpAddr],
    ingress_addrs: &[SocketAddr],
) -> std::collections::BTreeMap<SocketAddr, (Listen, bool)> {
    let mut out = std::collections::BTreeMap::new();
    for (at, port) in table.ports() {
        match at {
            Listen::Addr(a) => {
                out.insert(*a, (*at, port.tls));
            }
            Listen::NodePort(p) => {
                for ip in node_ips {
                    out.insert(SocketAddr::new(*ip, *p), (*at, port.tls));
                }
            }
        }
    }
    // An Ingress listener on the port (on that address, or on all of them:
    // `0.0.0.0:80`) already takes these connections.
    out.retain(|a, _| !ingress_addrs.iter().any(|i| covers(*i, *a)));
    out
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ingress: bool,
    accept: Accept,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let graceful = GracefulShutdown::new();
    let grace = loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, client)) => {
                    let watcher = graceful.watcher();
                    let (tls, accept) = (tls.clone(), accept.clone());
                    tokio::spawn(async move {
                        serve_conn(tcp, client, tls, ingress, accept, watcher).await;
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break stop.borrow().unwrap_or_default(),
        }
    };
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; remaining connections are closed");
    }
}

async fn serve_conn(
    tcp: TcpStream,
    client: SocketAddr,
    tls: Option<TlsAcceptor>,
    ingress: bool,
    accept: Accept,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Accept {
        shared,
        builder,
        handshake_timeout,
    } = accept;
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(client);
    let info = Arc::new(ConnInfo {
        client,
        local,
        ingress,
        tls: tls.is_some(),
        forwarded: Forwarded::new(client.ip(), tls.is_some(), local.port()),
    });
    let svc = service_fn(move |req| handle(shared.clone(), info.clone(), req));
    let result = match tls {
        None => {
            watcher
                .watch(builder.serve_connection_with_upgrades(
                    TokioIo::new(DetectionDeadline::new(tcp, handshake_timeout)),
                    svc,
                ))
                .await
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(client.addr = %client, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            watcher
                .watch(builder.serve_connection_with_upgrades(
                    TokioIo::new(DetectionDeadline::new(stream, handshake_timeout)),
                    svc,
                ))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client.addr = %client, error = %e, "connection ended with an error");
    }
}
