//! The routing table of one generation: every concrete (address, protocol)
//! the plane listens on, mapped to what a new connection there needs. Built
//! off the data path whenever a Snapshot is applied; connections only look up.

use crate::balance::{self, Affinity, BalanceState, PortId, PortKey};
use crate::metrics::{LazyServiceMetrics, Metrics};
use crate::{Config, Error};
use model::shared_map::Diff;
use model::{
    Backend, ConfigError, FieldError, Frontend, FrontendMap, Listen, ObjectKey, Protocol, Service,
    SharedMap, Snapshot,
};
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
    /// The frontend that made it (the routes of a frontend are replaced
    /// together).
    pub frontend: (Listen, Protocol),
    pub port_key: PortKey,
    /// The usable endpoints (kube-proxy's choice, traffic policy applied),
    /// computed once per generation.
    pub endpoints: Endpoints,
    pub cursor: Arc<AtomicUsize>,
    pub affinity: Option<(Arc<Affinity>, Duration)>,
    pub metrics: Arc<LazyServiceMetrics>,
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

/// A route's usable endpoints. Usually every backend of the Service port
/// is usable: the port's own list is then shared, not copied (10 addresses
/// of 32 bytes a frontend, 20,000 frontends at 10,000 Services).
#[derive(Clone)]
pub(crate) enum Endpoints {
    All(Arc<[Backend]>),
    Some(Arc<[SocketAddr]>),
}

impl Endpoints {
    fn new(all: &Arc<[Backend]>, usable: Vec<&Backend>) -> Endpoints {
        if usable.len() == all.len() {
            Endpoints::All(all.clone())
        } else {
            Endpoints::Some(usable.into_iter().map(|b| b.addr()).collect())
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Endpoints::All(b) => b.len(),
            Endpoints::Some(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th endpoint; `i < len()`.
    pub fn get(&self, i: usize) -> SocketAddr {
        match self {
            Endpoints::All(b) => b[i].addr(),
            Endpoints::Some(a) => a[i],
        }
    }

    pub fn position(&self, addr: SocketAddr) -> Option<usize> {
        (0..self.len()).position(|i| self.get(i) == addr)
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.position(*addr).is_some()
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..self.len()).map(|i| self.get(i)))
            .finish()
    }
}

pub(crate) type Key = (SocketAddr, Protocol);
pub(crate) type RouteMap = SharedMap<Key, Arc<Route>>;
/// The Service frontend listeners wanted, by address.
pub(crate) type WantedMap = SharedMap<Key, Wanted>;

/// A listener the plane should have, and the Service it is for (for logs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Wanted {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub service: Arc<str>,
    /// A load-balancer health-check port, not a Service frontend.
    pub health: bool,
    /// One of its endpoints is the address itself (a hostNetwork backend
    /// behind an externalIP on its own node): steered, the plane's own
    /// connect would come back to it, so it is never steered.
    pub loops: bool,
}

/// The routes of one generation and what is needed to update them per
/// change: every table is shared with the previous generation except the
/// entries of the frontends that changed.
#[derive(Clone, Default)]
pub(crate) struct Tables {
    pub routes: RouteMap,
    pub wanted: WantedMap,
    /// Health-check listeners (few: rebuilt each time).
    pub health_wanted: Arc<Vec<Wanted>>,
    /// Frontends that cannot be served (a NodePort on a node address that
    /// a ClusterIP also uses, SCTP...), by frontend.
    pub problems: SharedMap<ClaimKey, Arc<Vec<String>>>,
    /// Bad per-Service settings (annotations), by frontend.
    pub errors: SharedMap<ClaimKey, ConfigError>,
}

type ClaimKey = (Listen, Protocol);

/// Whether two frontends produce the same routes.
fn same_frontend(a: &Frontend, b: &Frontend) -> bool {
    Arc::ptr_eq(&a.service, &b.service) && a.port == b.port && a.external == b.external
}

/// Balancing state and metric handles kept per Service port while some
/// frontend uses them, so a reload neither resets round-robin fairness nor
/// forgets affinity, and a deleted Service's state goes with it.
#[derive(Default)]
pub(crate) struct Live {
    state: BalanceState,
    ports: HashMap<PortKey, usize>,
    services: HashMap<Arc<str>, usize>,
}

impl Live {
    fn hold(&mut self, key: &PortKey) {
        *self.ports.entry(key.clone()).or_default() += 1;
        *self.services.entry(key.0.clone()).or_default() += 1;
    }

    fn release(&mut self, key: &PortKey) {
        if let Some(n) = self.ports.get_mut(key) {
            *n -= 1;
        }
        if let Some(n) = self.services.get_mut(&key.0) {
            *n -= 1;
        }
    }

    /// Forgets what no frontend holds any more (after a whole update, so a
    /// changed frontend keeps its cursor).
    fn collect(&mut self, metrics: &Metrics) {
        let dead: HashSet<PortKey> = self
            .ports
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| k.clone())
            .collect();
        if !dead.is_empty() {
            self.ports.retain(|_, n| *n > 0);
            self.state.forget(&dead);
        }
        let gone: HashSet<Arc<str>> = self
            .services
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| k.clone())
            .collect();
        if !gone.is_empty() {
            self.services.retain(|_, n| *n > 0);
            metrics.forget(&gone);
        }
    }
}

/// Updates `t` from the frontends of `old` (what `t` was built from; none:
/// `t` is empty) to those of `new`, touching only frontends that changed.
pub(crate) fn update(
    t: &mut Tables,
    old: Option<&Snapshot>,
    new: &Snapshot,
    cfg: &Config,
    live: &mut Live,
    metrics: &Metrics,
) {
    let empty = FrontendMap::new();
    let before = old.map_or(&empty, |o| &o.frontends);
    let changes = new.frontends.diff(before, same_frontend);
    let mut removed = Vec::new();
    let mut added = Vec::new();
    for d in &changes {
        match d {
            Diff::Removed(k, f) => removed.push((**k, *f)),
            Diff::Added(k, f) => added.push((**k, *f)),
            Diff::Changed(k, o, f) => {
                removed.push((**k, *o));
                added.push((**k, *f));
            }
        }
    }
    for (ck, fe) in &removed {
        remove_frontend(t, *ck, fe, cfg, live);
    }
    // A ClusterIP that gave up a node address lets that node's NodePort
    // route back in.
    let mut readmit = Vec::new();
    for (ck, _) in &removed {
        if let (Listen::Addr(a), proto) = ck
            && cfg.node_ips.contains(&a.ip())
            && let Some(np) = new.frontends.get(&(Listen::NodePort(a.port()), *proto))
            && !added
                .iter()
                .any(|(k, _)| *k == (Listen::NodePort(a.port()), *proto))
        {
            readmit.push(((Listen::NodePort(a.port()), *proto), np));
        }
    }
    for (ck, fe) in readmit {
        remove_frontend(t, ck, fe, cfg, live);
        added.push((ck, fe));
    }
    // ClusterIPs first: they take a node address over a NodePort.
    added.sort_by_key(|(ck, _)| *ck);
    let now = Instant::now();
    for (ck, fe) in added {
        add_frontend(t, ck, fe, new, cfg, live, metrics, now);
    }
    live.collect(metrics);
    if old.is_none_or(|o| !Arc::ptr_eq(&o.health_checks, &new.health_checks)) || !changes.is_empty()
    {
        t.health_wanted = Arc::new(health_wanted(t, new, cfg));
    }
}

/// Every concrete address a frontend listens on.
fn addrs(fe: &Frontend, cfg: &Config) -> Vec<SocketAddr> {
    match fe.listen {
        Listen::Addr(a) => vec![a],
        Listen::NodePort(p) => cfg
            .node_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, p))
            .collect(),
    }
}

fn port_key(svc: &Service, port: &model::ServicePort) -> PortKey {
    (
        svc.id.clone(),
        if port.name.is_empty() {
            PortId::Number(port.protocol, port.port)
        } else {
            PortId::Name(port.name.clone())
        },
    )
}

fn remove_frontend(t: &mut Tables, ck: ClaimKey, fe: &Frontend, cfg: &Config, live: &mut Live) {
    t.problems.remove(&ck);
    t.errors.remove(&ck);
    for addr in addrs(fe, cfg) {
        let key = (addr, fe.protocol);
        if t.routes.get(&key).is_some_and(|r| r.frontend == ck) {
            if let Some(r) = t.routes.remove(&key) {
                live.release(&r.port_key);
            }
            t.wanted.remove(&key);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_frontend(
    t: &mut Tables,
    ck: ClaimKey,
    fe: &Frontend,
    snap: &Snapshot,
    cfg: &Config,
    live: &mut Live,
    metrics: &Metrics,
    now: Instant,
) {
    let svc = &fe.service;
    let Some(port) = svc.ports.get(fe.port) else {
        return;
    };
    let mut problems = Vec::new();
    if fe.protocol == Protocol::Sctp {
        problems.push(format!(
            "Service {} port {}: SCTP is not supported",
            svc.id, port.port
        ));
        t.problems.insert(ck, Arc::new(problems));
        return;
    }
    let key = port_key(svc, port);
    let local = if fe.external {
        svc.external_traffic_local
    } else {
        svc.internal_traffic_local
    };
    // Policy Local without a known node name: no endpoint is local, so
    // traffic is dropped rather than silently sent off-node.
    let local_node = local.then(|| cfg.node_name.as_deref().unwrap_or(""));
    let usable: Vec<&Backend> = if svc.topology_aware && !local {
        // Hints apply to cluster-wide policy only, as in kube-proxy.
        model::topology_backends(
            &port.backends,
            cfg.node_name.as_deref(),
            cfg.node_zone.as_deref(),
        )
    } else {
        model::usable_backends(&port.backends, local_node).collect()
    };
    let endpoints = Endpoints::new(&port.backends, usable);
    let affinity = svc.session_affinity.map(|timeout| {
        let a = live.state.affinity(&key);
        let all: HashSet<SocketAddr> = model::usable_backends(&port.backends, None)
            .map(|b| b.addr())
            .collect();
        a.prune(&all, timeout, now);
        (a, timeout)
    });
    let udp_idle = match svc.annotations.get(UDP_IDLE_ANNOTATION) {
        None => cfg.udp_idle_timeout,
        Some(v) => parse_timeout(v).unwrap_or_else(|e| {
            t.errors.insert(
                ck,
                ConfigError::field(
                    svc.source.to_path_buf(),
                    ObjectKey::new("Service", &svc.namespace, &svc.name),
                    FieldError::new(
                        format!("metadata.annotations[{UDP_IDLE_ANNOTATION}]"),
                        format!("{e}; the default {:?} is used", cfg.udp_idle_timeout),
                    ),
                ),
            );
            cfg.udp_idle_timeout
        }),
    };
    let route = Arc::new(Route {
        service: svc.clone(),
        frontend: ck,
        endpoints,
        cursor: live.state.cursor(&key),
        affinity,
        metrics: metrics.service(&svc.id),
        proxy_protocol: svc
            .annotations
            .get(PROXY_PROTOCOL_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("v2")),
        udp_idle,
        port_key: key,
    });
    for addr in addrs(fe, cfg) {
        let slot = (addr, fe.protocol);
        if let Listen::NodePort(_) = fe.listen
            && let Some(other) = snap.frontends.get(&(Listen::Addr(addr), fe.protocol))
        {
            problems.push(format!(
                "{addr}/{} of Service {} is already used by Service {}",
                fe.protocol.as_str(),
                svc.id,
                other.service.id
            ));
            continue;
        }
        if let Some(old) = t.routes.insert(slot, route.clone()) {
            // A NodePort that held this node address yields to a ClusterIP.
            live.release(&old.port_key);
            let mut p = t
                .problems
                .get(&old.frontend)
                .map(|p| p.to_vec())
                .unwrap_or_default();
            p.push(format!(
                "{addr}/{} of Service {} is already used by Service {}",
                fe.protocol.as_str(),
                old.service.id,
                svc.id
            ));
            t.problems.insert(old.frontend, Arc::new(p));
        }
        live.hold(&route.port_key);
        t.wanted.insert(
            slot,
            Wanted {
                addr,
                protocol: fe.protocol,
                service: svc.id.clone(),
                health: false,
                loops: route.endpoints.contains(&addr),
            },
        );
    }
    if !problems.is_empty() {
        t.problems.insert(ck, Arc::new(problems));
    }
}

/// Health-check listeners on every node address, unless a route has it.
fn health_wanted(t: &mut Tables, snap: &Snapshot, cfg: &Config) -> Vec<Wanted> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for hc in snap.health_checks.iter() {
        for ip in &cfg.node_ips {
            let addr = SocketAddr::new(*ip, hc.port);
            if let Some(other) = t.routes.get(&(addr, Protocol::Tcp)) {
                problems.push(format!(
                    "health check {addr} of Service {} is already used by Service {}",
                    hc.service.id, other.service.id
                ));
                continue;
            }
            out.push(Wanted {
                addr,
                protocol: Protocol::Tcp,
                service: hc.service.id.clone(),
                health: true,
                loops: false,
            });
        }
    }
    // Kept under a key no frontend has: NodePort 0.
    let key = (Listen::NodePort(0), Protocol::Tcp);
    if problems.is_empty() {
        t.problems.remove(&key);
    } else {
        t.problems.insert(key, Arc::new(problems));
    }
    out
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

    /// A route shares its port's backend list when all of them are usable,
    /// and keeps its own addresses otherwise.
    #[test]
    fn usable_endpoints_share_the_ports_list_when_all_are() {
        let be = |port: u16, ready: bool| Backend {
            ip: [127, 0, 0, 1].into(),
            port,
            ready,
            serving: ready,
            terminating: false,
            placement: None,
        };
        let all: Arc<[Backend]> = vec![be(1, true), be(2, true)].into();
        let e = Endpoints::new(&all, all.iter().collect());
        assert!(matches!(&e, Endpoints::All(b) if Arc::ptr_eq(b, &all)));
        assert_eq!(
            (e.len(), e.get(1), e.position(all[1].addr())),
            (2, all[1].addr(), Some(1))
        );
        let some: Arc<[Backend]> = vec![be(1, true), be(2, false)].into();
        let e = Endpoints::new(&some, model::usable_backends(&some, None).collect());
        assert!(matches!(e, Endpoints::Some(_)));
        assert_eq!(format!("{e:?}"), "[127.0.0.1:1]");
        assert!(!e.contains(&some[1].addr()));
    }

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
