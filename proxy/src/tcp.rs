//! TCP frontends: one accept loop per listening socket (a bound address, or
//! the shared listener steered frontends go to); each connection picks an
//! endpoint from the routes of the generation current when it arrived.

use crate::copy::{self, Counters, End};
use crate::routes::Route;
use crate::{Shared, pp2};
use model::Protocol;
use socket2::SockRef;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, warn};

/// Which frontend a listener's connections are for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Frontend {
    /// The listener's own address.
    Bound(SocketAddr),
    /// The address each client dialled: the listener takes every frontend
    /// steered to it (see the `steer` crate), and the accepted socket's
    /// local address names the one it is for.
    Dialled,
}

/// Accepts until the task is aborted (listener removed or shutdown); open
/// connections run in their own tasks and are not affected by that.
/// Each connection holds a clone of `drain` so shutdown can wait for them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    frontend: Frontend,
    shared: Arc<Shared>,
    drain: mpsc::Sender<()>,
) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                warn!(listen = ?listener.local_addr().ok(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = match frontend {
            Frontend::Bound(addr) => Some(addr),
            Frontend::Dialled => conn.local_addr().ok(),
        };
        // One Snapshot-derived lookup per connection; the guard is dropped
        // at the end of this statement, before any await.
        let route = local.and_then(|local| {
            let route = shared
                .view
                .load()
                .t
                .routes
                .get(&(local, Protocol::Tcp))
                .cloned();
            route.map(|r| (local, r))
        });
        let Some((local, route)) = route else {
            // The listener (or steering entry) is being removed by the
            // reconciler, or a client dialled the shared listener itself.
            reset(&conn);
            continue;
        };
        let span = tracing::debug_span!(
            "l4.tcp",
            client.addr = %peer,
            service = %route.service.id,
            endpoint = tracing::field::Empty,
        );
        let shared = shared.clone();
        let drain = drain.clone();
        tokio::spawn(
            async move {
                let _drain = drain;
                serve(conn, peer, local, route, &shared).await;
            }
            .instrument(span),
        );
    }
}

async fn serve(
    mut conn: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    route: Arc<Route>,
    shared: &Shared,
) {
    let m = &route.metrics;
    m.connections.inc();
    let Some(start) = route.start_index(peer.ip()) else {
        // kube-proxy REJECTs when a Service has no endpoints (and DROPs
        // for policy Local without local ones). The handshake is already
        // done, so the closest we can do is an immediate reset: the client
        // fails fast instead of hanging.
        m.no_endpoint.inc();
        debug!("no usable endpoint; reset");
        reset(&conn);
        return;
    };
    let Some((mut server, endpoint)) = connect(&route, start, shared, local).await else {
        debug!("every endpoint failed; reset");
        reset(&conn);
        return;
    };
    tracing::Span::current().record("endpoint", tracing::field::display(endpoint));
    route.remember(peer.ip(), endpoint);
    // TCP_NODELAY: set before connect on the server side; the client side
    // inherited it from the listener (bind_tcp).
    m.active.inc();
    let _active = Dec(&m.active);
    if route.proxy_protocol
        && let Err(e) = server.write_all(&pp2::header(peer, local)).await
    {
        debug!(error = %e, "PROXY header not sent; reset");
        reset(&conn);
        return;
    }
    let counters = Counters {
        client_to_server: &m.bytes_in,
        server_to_client: &m.bytes_out,
    };
    let mut kill = shared.kill.clone();
    let copy = copy::bidirectional(
        &mut conn,
        &mut server,
        shared.cfg.splice,
        shared.cfg.tcp_idle_timeout,
        counters,
    );
    tokio::select! {
        r = copy => match r {
            Ok(End::Done) => debug!("closed"),
            // A quiet close: neither side did anything wrong.
            Ok(End::Idle) => debug!("idle timeout"),
            Err(e) => {
                // Pass the failure on: each peer sees a reset rather than a
                // clean EOF that could pass for a complete response.
                debug!(error = %e, "copy failed; reset both sides");
                reset(&conn);
                reset(&server);
            }
        },
        _ = kill.wait_for(|k| *k) => {
            debug!("shutdown grace over; reset");
            reset(&conn);
            reset(&server);
        }
    }
}

/// Tries endpoints from `start`, each at most once, with a timeout each.
/// After a failure the next endpoint comes from the route as it is now: a
/// reload during a slow connect may have removed endpoints (a new
/// connection must never go to one) or added some.
async fn connect(
    route: &Route,
    start: usize,
    shared: &Shared,
    local: SocketAddr,
) -> Option<(TcpStream, SocketAddr)> {
    let timeout = shared.cfg.connect_timeout;
    let mut current: Option<Arc<Route>> = None;
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        let k = tried.len();
        let endpoints = current.as_ref().map_or(&route.endpoints, |r| &r.endpoints);
        let n = endpoints.len();
        let ep = (0..n)
            .map(|i| endpoints.get((start + k + i) % n))
            .find(|ep| !tried.contains(ep))?;
        match tokio::time::timeout(timeout, connect_one(ep)).await {
            Ok(Ok(s)) => return Some((s, ep)),
            Ok(Err(e)) => debug!(endpoint = %ep, error = %e, "connect failed; next endpoint"),
            Err(_) => debug!(endpoint = %ep, "connect timed out; next endpoint"),
        }
        route.metrics.connect_failures.inc();
        tried.push(ep);
        // The listener being removed, or its address now serving another
        // Service (or another PROXY-protocol setting, which decides what
        // the backend is sent first), leaves nothing to retry: reset.
        let now = shared
            .view
            .load()
            .t
            .routes
            .get(&(local, Protocol::Tcp))?
            .clone();
        if now.service.id != route.service.id || now.proxy_protocol != route.proxy_protocol {
            return None;
        }
        current = Some(now);
    }
}

/// A connection to `ep` with TCP_NODELAY (small writes such as RPCs and TLS
/// handshakes must not wait for Nagle). Success is read from the reactor's
/// readiness: an error or hang-up means the connect failed, and only then
/// is SO_ERROR asked for, so a good connect costs one syscall less than
/// `TcpStream::connect`.
async fn connect_one(ep: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(ep),
        socket2::Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )?;
    s.set_tcp_nodelay(true)?;
    match s.connect(&ep.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(s.into())?;
    let ready = stream.ready(Interest::WRITABLE).await?;
    if ready.is_write_closed() || ready.is_error() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| std::io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

/// Closes with RST (SO_LINGER 0) instead of FIN.
pub(crate) fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

struct Dec<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for Dec<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
