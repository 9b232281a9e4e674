//! What every plane gets from the binary, and what the binary needs back.

use control::Snapshots;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;

/// Settings shared by several planes (from `nodeway run` flags).
#[derive(Clone, Debug)]
pub struct Common {
    pub node_ips: Vec<IpAddr>,
    pub node_name: Option<String>,
    pub node_zone: Option<String>,
    pub cluster_domain: String,
}

/// Handed to each plane's `start`.
pub struct Ctx {
    /// The published Snapshots, read-only: each plane follows them with
    /// its view compiler (`control::follow`).
    pub snapshots: Snapshots,
    /// Register plane metrics here (names `nodeway_*`).
    pub registry: Registry,
    pub common: Common,
}

pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running plane, as the binary sees it.
pub trait PlaneHandle: Send + Sync {
    fn name(&self) -> &'static str;
    /// Empty when healthy; else one line per problem (a listener that failed to bind...).
    /// Shown in `/readyz` detail.
    fn problems(&self) -> Vec<String>;
    /// The generation of each Snapshot the plane put in service, as it
    /// happens (`None`: it serves nothing from the Snapshot).
    fn applied(&self) -> Option<watch::Receiver<u64>>;
    /// Stop accepting, let in-flight work finish within `grace`, then return.
    fn shutdown(self: Box<Self>, grace: Duration) -> BoxFuture;
}
