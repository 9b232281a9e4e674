//! Wiring of the ingress plane into `nodeway run`: its flags and its start.

use crate::wire::{BoxFuture, Ctx, PlaneHandle};
use anyhow::Context;
use std::net::SocketAddr;
use std::time::Duration;

const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const DEFAULT_HTTPS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

/// Flags of the ingress plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IngressArgs {
    /// Plain HTTP listener, HTTP/1.1 and h2c [default: 127.0.0.1:8080]
    #[arg(long = "http-listen", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// TLS listener, ALPN h2 and http/1.1 [default: 127.0.0.1:8443]
    #[arg(long = "https-listen", value_name = "ADDR")]
    pub https_listen: Option<SocketAddr>,
    /// Ingress class to serve (spec.ingressClassName or the
    /// kubernetes.io/ingress.class annotation); repeatable [default: nodeway, nginx]
    #[arg(long = "ingress-class", value_name = "NAME")]
    pub classes: Vec<String>,
    /// Serve Ingresses that name no class [default: true]
    #[arg(long = "watch-ingress-without-class", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub watch_without_class: Option<bool>,
    /// kubernetes.io/tls Secret `namespace/name` for unknown SNI names
    /// [default: a self-signed certificate made at start]
    #[arg(long = "default-certificate", value_name = "NS/NAME", value_parser = parse_ns_name)]
    pub default_certificate: Option<(String, String)>,
    /// Idle upstream connections kept per endpoint (and worker thread, for
    /// plain HTTP/1.1 upstreams); size it to the expected concurrency
    /// [default: 1024]
    #[arg(long = "ingress-upstream-idle", value_name = "N")]
    pub upstream_idle: Option<usize>,
    /// Seconds a client may take to send a request head [default: 30]
    #[arg(long = "ingress-header-timeout", value_name = "SECS")]
    pub header_timeout: Option<u64>,
}

fn parse_ns_name(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not namespace/name")),
    }
}

/// The plane's Config from its flags.
fn config(args: &IngressArgs) -> ingress::Config {
    let d = ingress::Config::default();
    ingress::Config {
        http_listen: Some(http_addr(args)),
        https_listen: Some(https_addr(args)),
        default_certificate: args.default_certificate.clone(),
        header_read_timeout: args
            .header_timeout
            .map_or(d.header_read_timeout, Duration::from_secs),
        upstream_idle_per_host: args.upstream_idle.unwrap_or(d.upstream_idle_per_host),
        ..d
    }
}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(
    args: &IngressArgs,
    ctx: &mut Ctx,
) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    let cfg = ingress::Config {
        node_ips: ctx.common.node_ips.clone(),
        ..config(args)
    };
    let handle = ingress::start(cfg, ctx.snapshots.clone(), &mut ctx.registry)
        .await
        .context("starting the ingress plane")?;
    Ok(Some(Box::new(IngressPlane { handle })))
}

struct IngressPlane {
    handle: ingress::Handle,
}

impl PlaneHandle for IngressPlane {
    fn name(&self) -> &'static str {
        "ingress"
    }

    fn problems(&self) -> Vec<String> {
        // Listeners are bound before start returns; nothing can degrade later.
        Vec::new()
    }

    fn applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.handle.applied())
    }

    fn shutdown(self: Box<Self>, grace: Duration) -> BoxFuture {
        Box::pin(self.handle.shutdown(grace))
    }
}

/// Where plain HTTP listens (for the demo's guide).
pub fn http_addr(args: &IngressArgs) -> SocketAddr {
    args.http_listen.unwrap_or(DEFAULT_HTTP)
}

/// Where HTTPS listens (for the demo's guide).
pub fn https_addr(args: &IngressArgs) -> SocketAddr {
    args.https_listen.unwrap_or(DEFAULT_HTTPS)
}

/// Which Ingresses are ours.
pub fn ingress_options(args: &IngressArgs) -> model::ingress::IngressOptions {
    let d = model::ingress::IngressOptions::default();
    model::ingress::IngressOptions {
        classes: if args.classes.is_empty() {
            d.classes
        } else {
            args.classes.clone()
        },
        watch_without_class: args.watch_without_class.unwrap_or(d.watch_without_class),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_fill_config_and_options() {
        let args = IngressArgs {
            classes: vec!["edge".into()],
            watch_without_class: Some(false),
            default_certificate: Some(parse_ns_name("kube-system/wild").unwrap()),
            ..IngressArgs::default()
        };
        let o = ingress_options(&args);
        assert_eq!(
            (o.classes, o.watch_without_class),
            (vec!["edge".to_string()], false)
        );
        let d = ingress_options(&IngressArgs::default());
        assert_eq!(d.classes, vec!["nodeway".to_string(), "nginx".to_string()]);
        assert!(d.watch_without_class);
        let c = config(&args);
        assert_eq!(c.http_listen, Some(DEFAULT_HTTP));
        assert_eq!(
            c.default_certificate,
            Some(("kube-system".into(), "wild".into()))
        );
        assert!(parse_ns_name("nope").is_err());
        assert!(parse_ns_name("a/b/c").is_err());
    }
}
