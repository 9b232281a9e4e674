//! Starting and stopping the plane: bind UDP and TCP, keep the table in
//! step with the Snapshot, shut down within a grace period.

use crate::cache::Cache;
use crate::forward::Forwarder;
use crate::handler::Handler;
use crate::metrics::Metrics;
use crate::table::{Table, TableOptions};
use crate::udp::UdpServer;
use crate::{Config, Error};
use control::{Change, Compiled, Snapshots, View, ViewCompiler};
use hickory_server::Server;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// Idle TCP connections are closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Upper bounds for cached TTLs (positive, negative).
const CACHE_MAX_TTL: u32 = 3600;
const CACHE_MAX_NEGATIVE_TTL: u32 = 300;

/// Binds UDP and TCP on the same address. With port 0, TCP takes the port
/// UDP was given; if that TCP port is taken (TCP and UDP ports are separate
/// spaces), another UDP port is tried, a bounded number of times.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let mut attempts = if listen.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| Error::Bind(listen, e))?;
        let port = udp.local_addr().map_err(|e| Error::Bind(listen, e))?.port();
        let want = SocketAddr::new(listen.ip(), port);
        match TcpListener::bind(want).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempts > 1 && e.kind() == std::io::ErrorKind::AddrInUse => attempts -= 1,
            Err(e) => return Err(Error::Bind(want, e)),
        }
    }
}

/// The DNS plane's view compiler: each Snapshot to a [`Table`], updated
/// from the previous one (only what changed is rebuilt).
pub struct TableCompiler {
    pub opts: TableOptions,
    pub metrics: Option<Metrics>,
}

impl ViewCompiler for TableCompiler {
    type View = Table;

    fn compile(&mut self, prev: Option<&Table>, change: Change<'_>) -> Compiled<Table> {
        let table = Table::update(prev, change.new, &self.opts);
        if let Some(m) = &self.metrics {
            m.generation.set(table.generation as i64);
            m.names.set(table.len() as i64);
        }
        Compiled {
            view: table,
            errors: Vec::new(),
        }
    }
}

/// A running DNS plane.
pub struct DnsServer {
    server: Server<Handler>,
    udp: UdpServer,
    follower: JoinHandle<()>,
    tables: View<Table>,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (returns once bound) and serves,
    /// following `snapshots`.
    pub async fn start(
        config: Config,
        snapshots: Snapshots,
        registry: &mut Registry,
    ) -> Result<DnsServer, Error> {
        if config.ttl > 3600 {
            return Err(Error::Config(format!(
                "ttl {} is outside 0..=3600",
                config.ttl
            )));
        }
        let metrics = Metrics::new(registry);
        let opts = TableOptions {
            zone: config.zone.clone(),
            ttl: config.ttl,
            pod_records: config.pod_records,
        };
        let compiler = TableCompiler {
            opts,
            metrics: Some(metrics.clone()),
        };
        let (tables, follower) = control::follow(snapshots, compiler, "dns").await;

        let (udp, tcp) = bind(config.listen).await?;
        let udp_addr = udp
            .local_addr()
            .map_err(|e| Error::Bind(config.listen, e))?;
        let tcp_addr = tcp.local_addr().map_err(|e| Error::Bind(udp_addr, e))?;

        let cache = Cache::new(config.cache_size, CACHE_MAX_TTL, CACHE_MAX_NEGATIVE_TTL);
        let forwarder = Forwarder::new(
            config.upstreams.clone(),
            config.upstream_timeout,
            cache,
            config.max_inflight_forwards,
            metrics.clone(),
        );
        let handler = Handler {
            tables: tables.clone(),
            forwarder: Arc::new(forwarder),
            allow_recursion: config.allow_recursion.clone().into(),
            metrics: metrics.clone(),
        };
        // UDP on our own loops (fast path, slow path in-process), one per
        // runtime worker; TCP on hickory's server with the same handler.
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let udp = UdpServer::start(udp, handler.clone(), workers.min(8));
        let mut server = Server::new(handler);
        server.register_listener(tcp, TCP_IDLE, 64);
        tracing::info!(udp = %udp_addr, tcp = %tcp_addr, upstreams = ?config.upstreams, "dns listening");
        Ok(DnsServer {
            server,
            udp,
            follower,
            tables,
            udp_addr,
            tcp_addr,
        })
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The generation the served table was built from (0: nothing loaded).
    pub fn generation(&self) -> u64 {
        self.tables.load().generation
    }

    /// The generation of each table put in service, as it happens.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tables.subscribe()
    }

    /// Waits until the served table was built from at least `generation`.
    pub async fn wait_applied(&self, generation: u64) {
        let _ = self.tables.wait_applied(generation).await;
    }

    /// Stop accepting; give in-flight answers up to `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        let until = std::time::Instant::now() + grace;
        self.follower.abort();
        self.server.shutdown_token().cancel();
        let udp = self.udp.shutdown(until);
        let tcp = tokio::time::timeout(grace, self.server.block_until_done());
        if tokio::join!(udp, tcp).1.is_err() {
            tracing::warn!("dns shutdown grace expired");
        }
    }
}
