//! What every plane gets from the binary, and what the binary needs back.

use arc_swap::ArcSwap;
use model::Snapshot;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
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
    /// The current Snapshot: load it per connection/query, never hold the guard across `.await`.
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    /// Changes to the generation number whenever a new Snapshot is published.
    pub updates: watch::Receiver<u64>,
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
    /// Stop accepting, let in-flight work finish within `grace`, then return.
    fn shutdown(self: Box<Self>, grace: Duration) -> BoxFuture;
}
