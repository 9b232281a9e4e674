//! Wiring of the dns plane into `nodeway run`: its flags and its start.

use crate::wire::{BoxFuture, Ctx, PlaneHandle};
use anyhow::Context;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1053);

/// Flags of the dns plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DnsArgs {
    /// UDP and TCP address for cluster DNS [default: 127.0.0.1:1053]
    #[arg(long = "dns-listen", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Resolver for names outside the cluster zone, IP or IP:PORT; repeatable,
    /// tried in order [default: the nameservers in /etc/resolv.conf]
    #[arg(long = "dns-upstream", value_name = "ADDR", value_parser = parse_upstream)]
    pub upstreams: Vec<SocketAddr>,
    /// TTL of cluster records and SOA minimum, seconds [default: 5]
    #[arg(long = "dns-ttl", value_name = "SECS", value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub ttl: Option<u32>,
    /// Do not answer `a-b-c-d.<ns>.pod.<zone>` pod records
    #[arg(long = "dns-no-pod-records")]
    pub no_pod_records: bool,
    /// Client network (CIDR) allowed to use forwarding; repeatable
    /// [default: loopback and private ranges]. Others get REFUSED for
    /// names outside the cluster zone.
    #[arg(long = "dns-allow-recursion", value_name = "CIDR")]
    pub allow_recursion: Vec<dns::IpNet>,
    /// Entries in the forwarding cache; 0 disables it [default: 10000]
    #[arg(long = "dns-cache-size", value_name = "N")]
    pub cache_size: Option<usize>,
    /// Time one upstream may take before the next is tried or the query
    /// gets SERVFAIL, milliseconds [default: 2000]
    #[arg(long = "dns-upstream-timeout-ms", value_name = "MS")]
    pub upstream_timeout_ms: Option<u64>,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

/// The plane's Config from flags and the shared settings.
fn config(args: &DnsArgs, cluster_domain: &str) -> dns::Config {
    let d = dns::Config::default();
    let listen = args.listen.unwrap_or(DEFAULT_LISTEN);
    let upstreams = if args.upstreams.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        dns::resolv_conf_upstreams(&text, listen)
    } else {
        args.upstreams.clone()
    };
    dns::Config {
        listen,
        upstreams,
        zone: cluster_domain.to_string(),
        ttl: args.ttl.unwrap_or(d.ttl),
        pod_records: !args.no_pod_records,
        allow_recursion: if args.allow_recursion.is_empty() {
            d.allow_recursion
        } else {
            args.allow_recursion.clone()
        },
        cache_size: args.cache_size.unwrap_or(d.cache_size),
        upstream_timeout: args
            .upstream_timeout_ms
            .map_or(d.upstream_timeout, Duration::from_millis),
        max_inflight_forwards: d.max_inflight_forwards,
    }
}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(args: &DnsArgs, ctx: &mut Ctx) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    let cfg = config(args, &ctx.common.cluster_domain);
    if cfg.upstreams.is_empty() {
        tracing::warn!(
            "dns: no upstream resolvers (none given, none in /etc/resolv.conf): other names get SERVFAIL"
        );
    }
    let server = dns::DnsServer::start(cfg, ctx.snapshots.clone(), &mut ctx.registry)
        .await
        .context("starting DNS")?;
    Ok(Some(Box::new(DnsPlane { server })))
}

struct DnsPlane {
    server: dns::DnsServer,
}

impl PlaneHandle for DnsPlane {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn problems(&self) -> Vec<String> {
        if self.server.generation() == 0 {
            return vec!["dns: no Snapshot compiled into the DNS table yet".into()];
        }
        Vec::new()
    }

    fn applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.server.applied())
    }

    fn shutdown(self: Box<Self>, grace: Duration) -> BoxFuture {
        Box::pin(self.server.shutdown(grace))
    }
}

/// Where DNS listens (for the demo's guide).
pub fn listen_addr(args: &DnsArgs) -> SocketAddr {
    args.listen.unwrap_or(DEFAULT_LISTEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_take_an_optional_port() {
        assert_eq!(
            parse_upstream("10.0.0.1").unwrap(),
            "10.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_upstream("nope").is_err());
    }

    #[test]
    fn flags_fill_the_config() {
        let args = DnsArgs {
            upstreams: vec!["127.0.0.1:5300".parse().unwrap()],
            ttl: Some(30),
            no_pod_records: true,
            ..DnsArgs::default()
        };
        let c = config(&args, "corp.example");
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.ttl, 30);
        assert!(!c.pod_records);
        assert_eq!(c.zone, "corp.example");
        assert_eq!(c.upstreams, args.upstreams);
        assert_eq!(c.cache_size, 10_000);
    }
}
