//! Gateway API objects in, [`GatewayTable`] out: classes, then listeners,
//! then routes attached to them, then each served port's lookup tables.

use super::listeners::{
    ListenerState, gateway_conditions, gateway_listeners, mark_shared_port_conflicts,
    set_programmed,
};
use super::routes::{CompiledRoute, attach, compile_route};
use super::status::{Condition, GatewayApiStatus, GatewayStatus, ObjectStatus, RouteStatus};
use super::table::{GatewayTable, ListenerRoutes, MatchEntry, PortRoutes, RequestMatch};
use super::types::{Gateway, HttpRoute};
use super::{CONTROLLER, GatewayInput, Grants};
use crate::error::ObjectKey;
use crate::snapshot::Listen;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub fn compile(mut input: GatewayInput<'_>) -> GatewayTable {
    let grants = Grants(input.grants.clone());
    let mut status = GatewayApiStatus::default();
    let mut gateways = our_gateways(&input, &mut status);
    gateways.sort_by_cached_key(|g| age_order(&g.metadata));
    let mut listeners = Vec::new();
    let mut per_gateway = Vec::new();
    for g in &gateways {
        let (ls, address_problem) = gateway_listeners(g, &input, &grants);
        per_gateway.push((listeners.len()..listeners.len() + ls.len(), address_problem));
        listeners.extend(ls);
    }
    mark_shared_port_conflicts(&mut listeners);

    let mut routes: Vec<&HttpRoute> = input.routes.clone();
    routes.sort_by_cached_key(|r| age_order(&r.metadata));
    let compiled: Vec<CompiledRoute<'_>> = routes
        .iter()
        .map(|r| compile_route(r, &mut input, &grants))
        .collect();
    let attached = attach_routes(&compiled, &listeners, &input, &mut status);

    for (i, l) in listeners.iter_mut().enumerate() {
        l.status.attached_routes = attached[i]
            .iter()
            .map(|a| a.route)
            .collect::<BTreeSet<_>>()
            .len();
        set_programmed(l);
    }
    let ports = served_ports(&listeners, &attached, &compiled);
    for (g, (range, address_problem)) in gateways.iter().zip(per_gateway) {
        let ls = &listeners[range];
        let meta = &g.metadata;
        status.gateways.push(GatewayStatus {
            object: ObjectStatus {
                key: ObjectKey::new(
                    "Gateway",
                    meta.namespace.as_deref().unwrap_or("default"),
                    meta.name.as_deref().unwrap_or(""),
                ),
                uid: meta.uid.clone(),
                generation: meta.generation,
                conditions: gateway_conditions(ls, address_problem.as_deref()),
            },
            listeners: ls.iter().map(|l| l.status.clone()).collect(),
            addresses: g
                .spec
                .addresses
                .iter()
                .filter(|a| a.kind == "IPAddress")
                .map(|a| a.value.clone())
                .collect(),
        });
    }
    GatewayTable { ports, status }
}

/// The Gateways of our classes (the classes get their status, the other
/// Gateways a line saying why they are not served).
fn our_gateways<'a>(input: &GatewayInput<'a>, status: &mut GatewayApiStatus) -> Vec<&'a Gateway> {
    let mut ours = BTreeSet::new();
    for c in &input.classes {
        if c.spec.controller_name == CONTROLLER {
            let name = c.metadata.name.clone().unwrap_or_default();
            status.classes.push(ObjectStatus {
                key: ObjectKey::new("GatewayClass", "", &name),
                uid: c.metadata.uid.clone(),
                generation: c.metadata.generation,
                conditions: vec![Condition::new("Accepted", true, "Accepted", "")],
            });
            ours.insert(name);
        }
    }
    let mut gateways: Vec<&Gateway> = Vec::new();
    for g in input.gateways.iter().copied() {
        let class = &g.spec.gateway_class_name;
        if ours.contains(class) {
            gateways.push(g);
            continue;
        }
        let why = match input
            .classes
            .iter()
            .find(|c| c.metadata.name.as_ref() == Some(class))
        {
            Some(c) => format!(
                "GatewayClass {class} is {}'s, not nodeway's: not served",
                c.spec.controller_name
            ),
            None => format!("GatewayClass {class} does not exist: not served"),
        };
        let m = &g.metadata;
        let key = ObjectKey::new(
            "Gateway",
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or(""),
        );
        status.skipped.push((key, why));
    }
    gateways
}

/// Oldest first, then by namespace/name: the spec's tie-breakers between
/// routes (and nodeway's between Gateways sharing a port). Objects without
/// a creation timestamp (as in folders) sort last, by name, as Ingresses do.
fn age_order(m: &ObjectMeta) -> (i64, String, String) {
    (
        m.creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone().unwrap_or_default(),
    )
}

/// A route attached to a listener, with the hostnames it serves there.
struct Attached {
    /// Index into the compiled routes (which are in precedence order).
    route: usize,
    hosts: Vec<String>,
}

fn attach_routes(
    compiled: &[CompiledRoute<'_>],
    listeners: &[ListenerState<'_>],
    input: &GatewayInput<'_>,
    status: &mut GatewayApiStatus,
) -> Vec<Vec<Attached>> {
    let mut attached: Vec<Vec<Attached>> = listeners.iter().map(|_| Vec::new()).collect();
    for (route, cr) in compiled.iter().enumerate() {
        let mut parents = Vec::new();
        for parent in &cr.route.spec.parent_refs {
            let Some(a) = attach(cr, parent, listeners, input) else {
                continue;
            };
            for (i, hosts) in a.listeners {
                attached[i].push(Attached { route, hosts });
            }
            parents.push(a.status);
        }
        if !parents.is_empty() {
            let m = &cr.route.metadata;
            status.routes.push(RouteStatus {
                key: ObjectKey::new("HTTPRoute", cr.namespace, m.name.as_deref().unwrap_or("")),
                uid: m.uid.clone(),
                generation: m.generation,
                parents,
            });
        }
    }
    attached
}

/// The lookup tables of every served port: its ready listeners, most
/// specific hostname first, each with its routes' rules in precedence order.
fn served_ports(
    listeners: &[ListenerState<'_>],
    attached: &[Vec<Attached>],
    compiled: &[CompiledRoute<'_>],
) -> BTreeMap<Listen, PortRoutes> {
    let mut ports: BTreeMap<Listen, PortRoutes> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate().filter(|(_, l)| l.ready) {
        let routes = Arc::new(listener_routes(l, &attached[i], compiled));
        for bind in &l.binds {
            let port = ports.entry(*bind).or_default();
            port.tls = l.spec.protocol == "HTTPS";
            port.listeners.push(routes.clone());
        }
    }
    for port in ports.values_mut() {
        port.listeners
            .sort_by_key(|l| hostname_rank(l.hostname.as_deref()));
    }
    ports
}

/// Exact hostnames first, then wildcards with the longest suffix, then none.
fn hostname_rank(h: Option<&str>) -> (u8, Reverse<usize>) {
    match h {
        Some(h) if h.starts_with('*') => (1, Reverse(h.len())),
        Some(_) => (0, Reverse(0)),
        None => (2, Reverse(0)),
    }
}

fn listener_routes(
    l: &ListenerState<'_>,
    attached: &[Attached],
    compiled: &[CompiledRoute<'_>],
) -> ListenerRoutes {
    // Sorted once per hostname bucket by the spec's precedence: path type
    // and length, method, header and query counts, then the route's age
    // and name (its index), then rule and match order.
    type Key = (
        u8,
        Reverse<usize>,
        bool,
        Reverse<usize>,
        Reverse<usize>,
        usize,
        usize,
        usize,
    );
    let mut buckets: HashMap<&str, Vec<(Key, MatchEntry)>> = HashMap::new();
    for a in attached {
        for (rule, matches) in &compiled[a.route].rules {
            for (m_index, m) in matches.iter().enumerate() {
                let key = precedence(m, a.route, rule.index, m_index);
                for host in &a.hosts {
                    let entry = MatchEntry {
                        matcher: m.clone(),
                        rule: rule.clone(),
                    };
                    buckets.entry(host.as_str()).or_default().push((key, entry));
                }
            }
        }
    }
    let mut out = ListenerRoutes {
        gateway: l.gateway_key.clone(),
        name: l.spec.name.as_str().into(),
        hostname: l.spec.hostname.as_deref().map(Into::into),
        port: l.spec.port as u16,
        cert: l.cert.clone(),
        hosts: HashMap::new(),
        wildcards: Vec::new(),
        any_host: Vec::new(),
    };
    for (host, mut entries) in buckets {
        entries.sort_by_key(|a| a.0);
        let entries: Vec<MatchEntry> = entries.into_iter().map(|(_, e)| e).collect();
        match host.strip_prefix('*') {
            _ if host.is_empty() => out.any_host = entries,
            Some(suffix) => out.wildcards.push((suffix.into(), entries)),
            None => {
                out.hosts.insert(host.into(), entries);
            }
        }
    }
    out.wildcards
        .sort_by_key(|(suffix, _)| Reverse(suffix.len()));
    return out;

    fn precedence(m: &RequestMatch, route: usize, rule: usize, index: usize) -> Key {
        let (rank, len) = match &m.path {
            super::table::PathMatch::Exact(p) => (0, p.len()),
            super::table::PathMatch::Prefix(p) => (1, p.len()),
            super::table::PathMatch::Regex(re) => (2, re.as_str().len()),
        };
        (
            rank,
            Reverse(len),
            m.method.is_none(),
            Reverse(m.headers.len()),
            Reverse(m.query.len()),
            route,
            rule,
            index,
        )
    }
}
