//! Cluster DNS: authoritative for the cluster domain (and the reverse names
//! of Service and endpoint addresses), answered from the current Snapshot;
//! everything else forwarded to upstream resolvers through a bounded cache.
//!
//! Each new Snapshot generation is compiled off the query path into a
//! [`table::Table`] of precomputed records, swapped in whole. Over UDP a
//! plain query is answered from the same table precompiled to wire bytes
//! ([`fast`]): a hash lookup and a copy in our own batched receive loop;
//! everything else, and TCP, goes through the hickory-server handler.

pub mod cache;
pub mod fast;
pub mod forward;
pub mod handler;
pub mod metrics;
pub mod names;
pub mod server;
pub mod table;
mod udp;
pub mod wire;

pub use forward::resolv_conf_upstreams;
pub use ipnet::IpNet;
pub use server::DnsServer;

use std::net::SocketAddr;
use std::time::Duration;

/// How the plane is set up (the binary fills it from flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// Resolvers for names outside our zones, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// The cluster domain, e.g. `cluster.local`.
    pub zone: String,
    /// Record TTL and SOA minimum, 0..=3600.
    pub ttl: u32,
    /// Answer `a-b-c-d.<ns>.pod.<zone>`.
    pub pod_records: bool,
    /// Client networks that may use the forwarder; others get REFUSED.
    pub allow_recursion: Vec<IpNet>,
    /// Forwarding cache entries (0 disables the cache).
    pub cache_size: usize,
    /// How long one upstream may take before we try the next / SERVFAIL.
    pub upstream_timeout: Duration,
    /// Forwards in flight at once; beyond it queries get SERVFAIL at once.
    pub max_inflight_forwards: usize,
}

impl Config {
    /// Loopback and private ranges: who may recurse by default.
    pub fn default_allow_recursion() -> Vec<IpNet> {
        [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ]
        .iter()
        .map(|s| s.parse().expect("literal CIDR"))
        .collect()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 1053)),
            upstreams: Vec::new(),
            zone: "cluster.local".into(),
            ttl: 5,
            pod_records: true,
            allow_recursion: Config::default_allow_recursion(),
            cache_size: 10_000,
            upstream_timeout: Duration::from_secs(2),
            max_inflight_forwards: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dns: cannot bind {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("dns: {0}")]
    Config(String),
}
