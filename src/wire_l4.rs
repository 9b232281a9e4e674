//! Wiring of the l4 plane into `nodeway run`: its flags and its start.

use crate::wire::{BoxFuture, Ctx, PlaneHandle};
use std::time::Duration;

/// Flags of the l4 plane.
#[derive(clap::Args, Debug, Clone)]
pub struct L4Args {
    /// Do not run the L4 plane (no ClusterIP/NodePort listeners).
    #[arg(long)]
    pub l4_disable: bool,
    /// Timeout of one endpoint connect; the next endpoint is tried after it.
    #[arg(long, default_value = "1s", value_parser = crate::parse_timeout)]
    pub l4_connect_timeout: Duration,
    /// Close TCP connections with no traffic either way for this long.
    #[arg(long, default_value = "1h", value_parser = crate::parse_timeout)]
    pub l4_tcp_idle_timeout: Duration,
    /// Default idle timeout of UDP sessions (per Service: annotation
    /// nodeway.io/udp-idle-timeout).
    #[arg(long, default_value = "30s", value_parser = crate::parse_timeout)]
    pub l4_udp_idle_timeout: Duration,
    /// Most UDP sessions per Service address; the oldest is evicted when full.
    #[arg(long, default_value_t = 65536)]
    pub l4_udp_max_sessions: usize,
    /// Copy TCP through user-space buffers instead of splice(2).
    #[arg(long)]
    pub l4_no_splice: bool,
    /// Give every TCP Service address a socket of its own instead of
    /// steering them with sk_lookup to one listener per address family
    /// (steering needs CAP_BPF and CAP_NET_ADMIN; without them this is
    /// what happens anyway).
    #[arg(long)]
    pub l4_no_steering: bool,
}

impl Default for L4Args {
    fn default() -> Self {
        let c = proxy::Config::default();
        L4Args {
            l4_disable: false,
            l4_connect_timeout: c.connect_timeout,
            l4_tcp_idle_timeout: c.tcp_idle_timeout,
            l4_udp_idle_timeout: c.udp_idle_timeout,
            l4_udp_max_sessions: c.udp_max_sessions,
            l4_no_splice: !c.splice,
            l4_no_steering: !c.steering,
        }
    }
}

struct Handle(proxy::Proxy);

impl PlaneHandle for Handle {
    fn name(&self) -> &'static str {
        "l4"
    }

    fn problems(&self) -> Vec<String> {
        self.0.problems()
    }

    fn applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.0.applied_generations())
    }

    fn shutdown(self: Box<Self>, grace: Duration) -> BoxFuture {
        Box::pin(self.0.shutdown(grace))
    }
}

/// Starts the plane (binds its listeners) and returns its handle.
/// `max_listeners` is its share of the open-file limit.
pub async fn start(
    args: &L4Args,
    ctx: &mut Ctx,
    max_listeners: usize,
) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    if args.l4_disable {
        return Ok(None);
    }
    let cfg = proxy::Config {
        node_ips: ctx.common.node_ips.clone(),
        node_name: ctx.common.node_name.clone(),
        node_zone: ctx.common.node_zone.clone(),
        connect_timeout: args.l4_connect_timeout,
        tcp_idle_timeout: args.l4_tcp_idle_timeout,
        udp_idle_timeout: args.l4_udp_idle_timeout,
        udp_max_sessions: args.l4_udp_max_sessions,
        splice: !args.l4_no_splice,
        max_listeners,
        steering: !args.l4_no_steering,
    };
    let p = proxy::Proxy::start(cfg, ctx.snapshots.clone(), &mut ctx.registry).await;
    Ok(Some(Box::new(Handle(p))))
}
