//! L7 plane: an Ingress router on hyper. HTTP/1.1 + h2c on one listener,
//! TLS (rustls, ALPN h2/http1.1, SNI over the Snapshot's certificates) on
//! another; requests are routed by the Snapshot's [`model::ingress::IngressTable`]
//! and proxied to Service endpoints over pooled keep-alive connections.

pub mod access_log;
mod balance;
mod body;
mod cors;
mod counted;
mod gateway;
mod h1;
mod headers;
mod io;
mod metrics;
mod policy;
mod proxy;
mod respond;
mod server;
mod tls;
mod upstream;
mod upstream_tls;

pub use server::{Handle, start};
pub use tls::{L7View, ViewCompiler};

use std::net::SocketAddr;
use std::time::Duration;

/// Errors of the ingress plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// How the plane runs; built by the binary from its flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Plain HTTP/1.1 + h2c listener (`None`: off).
    pub http_listen: Option<SocketAddr>,
    /// TLS listener (`None`: off).
    pub https_listen: Option<SocketAddr>,
    /// `namespace/name` of a kubernetes.io/tls Secret for unknown SNI names;
    /// a self-signed certificate is made at start otherwise (and while it is missing).
    pub default_certificate: Option<(String, String)>,
    /// Slowloris guard: the whole request head must arrive within this.
    pub header_read_timeout: Duration,
    /// Largest request head (beyond: 431).
    pub max_header_bytes: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_h2_streams: u32,
    /// Idle upstream connections kept per endpoint (per worker thread for
    /// plain HTTP/1.1, whose pools are thread-local): size it to the
    /// concurrency, or requests pay a connect each.
    pub upstream_idle_per_host: usize,
    /// Value of the `Server` response header.
    pub server_name: String,
    /// `--node-ip`: Gateways without `spec.addresses` are served on each.
    pub node_ips: Vec<std::net::IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: Some(([127, 0, 0, 1], 8080).into()),
            node_ips: vec![std::net::Ipv4Addr::LOCALHOST.into()],
            https_listen: Some(([127, 0, 0, 1], 8443).into()),
            default_certificate: None,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_h2_streams: 256,
            upstream_idle_per_host: 1024,
            server_name: "nodeway".into(),
        }
    }
}
