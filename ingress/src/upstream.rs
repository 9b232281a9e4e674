//! Upstream clients: pooled keep-alive HTTP/1.1, HTTP/2 prior knowledge
//! (h2c, gRPC), and both over TLS (HTTPS, GRPCS). One client per (connect
//! timeout, protocol), made on first use; pools are per endpoint address, so
//! endpoint changes need no flush.

use crate::body::Body;
use crate::counted::Counting;
use crate::upstream_tls::TlsConnect;
use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use model::ingress::BackendProtocol;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone)]
pub enum AnyClient {
    Plain(Client<Counting<HttpConnector>, Body>),
    Tls(Client<Counting<TlsConnect>, Body>),
}

impl AnyClient {
    pub fn request(&self, req: http::Request<Body>) -> ResponseFuture {
        match self {
            AnyClient::Plain(c) => c.request(req),
            AnyClient::Tls(c) => c.request(req),
        }
    }
}

pub struct Upstream {
    idle_per_host: usize,
    /// Open upstream connections (the pools' size).
    open: Gauge,
    clients: ArcSwap<HashMap<(Duration, BackendProtocol), AnyClient>>,
}

impl Upstream {
    pub fn new(idle_per_host: usize, open: Gauge) -> Upstream {
        Upstream {
            idle_per_host,
            open,
            clients: ArcSwap::default(),
        }
    }

    /// The client for a connect timeout and backend protocol.
    pub fn client(&self, connect_timeout: Duration, proto: BackendProtocol) -> AnyClient {
        let key = (connect_timeout, proto);
        if let Some(c) = self.clients.load().get(&key) {
            return c.clone();
        }
        let made = self.make(connect_timeout, proto);
        self.clients.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(key).or_insert_with(|| made.clone());
            m
        });
        self.clients.load().get(&key).cloned().unwrap_or(made)
    }

    fn make(&self, connect_timeout: Duration, proto: BackendProtocol) -> AnyClient {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        conn.set_keepalive(Some(Duration::from_secs(30)));
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(self.idle_per_host)
            // Host is set by the proxy (the client's Host, or upstream-vhost).
            .set_host(false)
            // A pooled connection the endpoint closed is retried on a fresh one.
            .retry_canceled_requests(true);
        if proto.is_h2() {
            b.http2_only(true);
        }
        if proto.is_tls() {
            let tls = TlsConnect::new(conn, proto.is_h2());
            AnyClient::Tls(b.build(Counting::new(tls, self.open.clone())))
        } else {
            AnyClient::Plain(b.build(Counting::new(conn, self.open.clone())))
        }
    }
}
