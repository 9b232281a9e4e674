//! The routing table of one generation: every concrete (address, protocol)
//! the plane listens on, mapped to what a new connection there needs. Built
//! off the data path whenever a Snapshot is applied; connections only look up.

use crate::balance::{self, Affinity, BalanceState, PortId, PortKey};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::{Config, Error};
use model::{ConfigError, FieldError, Listen, ObjectKey, Protocol, Service, Snapshot};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

/// Annotation asking for a PROXY protocol header towards the endpoints.
pub const PROXY_PROTOCOL_ANNOTATION: &str = "nodeway.io/proxy-protocol";
/// Annotation overriding the UDP session idle timeout (e.g. `2s`).
pub const UDP_IDLE_ANNOTATION: &str = "nodeway.io/udp-idle-timeout";

pub(crate) struct Route {
    pub service: Arc<Service>,
    /// The usable endpoints (kube-proxy's choice, traffic policy applied),
    /// computed once per generation.
    pub endpoints: Arc<[SocketAddr]>,
    pub cursor: Arc<AtomicUsize>,
    pub affinity: Option<(Arc<Affinity>, Duration)>,
    pub metrics: Arc<ServiceMetrics>,
    pub proxy_protocol: bool,
    pub udp_idle: Duration,
}

impl Route {
    pub fn start_index(&self, client: IpAddr) -> Option<usize> {
        let aff = self.affinity.as_ref().map(|(a, t)| (&**a, *t));
        balance::start_index(&self.endpoints, &self.cursor, aff, client)
    }

    /// Records the endpoint that served `client` (affinity only).
    pub fn remember(&self, client: IpAddr, endpoint: SocketAddr) {
        if let Some((a, timeout)) = &self.affinity {
            a.remember(client, endpoint, *timeout, Instant::now());
        }
    }
}

pub(crate) type RouteMap = HashMap<(SocketAddr, Protocol), Arc<Route>>;

/// A listener the plane should have, and the Service it is for (for logs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Wanted {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub service: Arc<str>,
    /// A load-balancer health-check port, not a Service frontend.
    pub health: bool,
}

pub(crate) struct Built {
    pub routes: RouteMap,
    pub wanted: Vec<Wanted>,
    /// Frontends that cannot be served (a NodePort on a node address that a
    /// ClusterIP also uses, SCTP...).
    pub problems: Vec<String>,
    /// Bad per-Service settings (annotations), naming file, object, field.
    pub errors: Vec<ConfigError>,
}

/// Builds the routes of `snap`, updating the balancing state and metrics
/// caches (entries of gone ports and Services are forgotten).
pub(crate) fn build(
    snap: &Snapshot,
    cfg: &Config,
    state: &mut BalanceState,
    metrics: &Metrics,
) -> Built {
    let mut routes = RouteMap::new();
    let mut wanted = Vec::new();
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    let mut live_ports = HashSet::new();
    let mut live_services = HashSet::new();
    let now = Instant::now();
    // Sorted: a ClusterIP (Listen::Addr) wins over a NodePort on the same node address.
    for fe in snap.frontends_sorted() {
        let svc = &fe.service;
        let Some(port) = svc.ports.get(fe.port) else {
            continue;
        };
        if fe.protocol == Protocol::Sctp {
            problems.push(format!(
                "Service {} port {}: SCTP is not supported",
                svc.id, port.port
            ));
            continue;
        }
        let key: PortKey = (
            svc.id.clone(),
            if port.name.is_empty() {
                PortId::Number(port.protocol, port.port)
            } else {
                PortId::Name(port.name.clone())
            },
        );
        let local = if fe.external {
            svc.external_traffic_local
        } else {
            svc.internal_traffic_local
        };
        // Policy Local without a known node name: no endpoint is local, so
        // traffic is dropped rather than silently sent off-node.
        let local_node = local.then(|| cfg.node_name.as_deref().unwrap_or(""));
        let endpoints: Arc<[SocketAddr]> = if svc.topology_aware && !local {
            // Hints apply to cluster-wide policy only, as in kube-proxy.
            model::topology_backends(
                &port.backends,
                cfg.node_name.as_deref(),
                cfg.node_zone.as_deref(),
            )
            .into_iter()
            .map(|b| b.addr)
            .collect()
        } else {
            model::usable_backends(&port.backends, local_node)
                .map(|b| b.addr)
                .collect()
        };
        let affinity = svc.session_affinity.map(|t| {
            let a = state.affinity(&key);
            let all: HashSet<SocketAddr> = model::usable_backends(&port.backends, None)
                .map(|b| b.addr)
                .collect();
            a.prune(&all, t, now);
            (a, t)
        });
        let udp_idle = match svc.annotations.get(UDP_IDLE_ANNOTATION) {
            None => cfg.udp_idle_timeout,
            Some(v) => parse_timeout(v).unwrap_or_else(|e| {
                let error = ConfigError::field(
                    svc.source.to_path_buf(),
                    ObjectKey::new("Service", &svc.namespace, &svc.name),
                    FieldError::new(
                        format!("metadata.annotations[{UDP_IDLE_ANNOTATION}]"),
                        format!("{e}; the default {:?} is used", cfg.udp_idle_timeout),
                    ),
                );
                // One per Service, not one per frontend of it.
                if !errors.contains(&error) {
                    errors.push(error);
                }
                cfg.udp_idle_timeout
            }),
        };
        let route = Arc::new(Route {
            service: svc.clone(),
            endpoints,
            cursor: state.cursor(&key),
            affinity,
            metrics: metrics.service(&svc.id),
            proxy_protocol: svc
                .annotations
                .get(PROXY_PROTOCOL_ANNOTATION)
                .is_some_and(|v| v.eq_ignore_ascii_case("v2")),
            udp_idle,
        });
        live_ports.insert(key);
        live_services.insert(svc.id.clone());
        let addrs: Vec<SocketAddr> = match fe.listen {
            Listen::Addr(a) => vec![a],
            Listen::NodePort(p) => cfg
                .node_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, p))
                .collect(),
        };
        for addr in addrs {
            if let Some(other) = routes.get(&(addr, fe.protocol)) {
                problems.push(format!(
                    "{addr}/{} of Service {} is already used by Service {}",
                    fe.protocol.as_str(),
                    svc.id,
                    other.service.id
                ));
                continue;
            }
            routes.insert((addr, fe.protocol), route.clone());
            wanted.push(Wanted {
                addr,
                protocol: fe.protocol,
                service: svc.id.clone(),
                health: false,
            });
        }
    }
    for hc in snap.health_checks.iter() {
        for ip in &cfg.node_ips {
            let addr = SocketAddr::new(*ip, hc.port);
            if let Some(other) = routes.get(&(addr, Protocol::Tcp)) {
                problems.push(format!(
                    "health check {addr} of Service {} is already used by Service {}",
                    hc.service.id, other.service.id
                ));
                continue;
            }
            wanted.push(Wanted {
                addr,
                protocol: Protocol::Tcp,
                service: hc.service.id.clone(),
                health: true,
            });
        }
    }
    state.retain(&live_ports);
    metrics.retain(&live_services);
    Built {
        routes,
        wanted,
        problems,
        errors,
    }
}

/// Parses `500ms`, `2s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || Error::Duration(s.to_string());
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    Ok(d)
}

/// A timeout: a duration above zero. `0` would not mean "no timeout" but
/// "fail at once" (every connect, every idle check), so it is refused.
pub fn parse_timeout(s: &str) -> Result<Duration, Error> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(Error::ZeroTimeout(s.to_string())),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("2 days").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999h").is_err(), "overflow");
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0").is_err());
        assert_eq!(parse_timeout("1ms").unwrap(), Duration::from_millis(1));
    }
}
