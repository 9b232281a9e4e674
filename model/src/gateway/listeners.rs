//! Gateways of our classes: where each listener is served, whether it is
//! valid and distinct (the spec's conflict rules), and its certificate.

use super::status::{Condition, ListenerStatus};
use super::types::{FromNamespaces, GROUP, Gateway, Listener, SecretRef, TlsMode};
use super::{GatewayInput, Grants};
use crate::ingress::TlsEntry;
use crate::snapshot::Listen;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A listener of an accepted Gateway, with what routes need to attach.
pub(super) struct ListenerState<'a> {
    pub gateway: &'a Gateway,
    pub gateway_key: Arc<str>,
    pub spec: &'a Listener,
    /// Valid, distinct and with its references resolved: served.
    pub ready: bool,
    /// Accepted (a protocol and mode served, distinct): routes attach to it.
    pub accepted: bool,
    /// Whether it takes HTTPRoutes at all (protocol and allowedRoutes.kinds).
    pub takes_http_routes: bool,
    pub cert: Option<TlsEntry>,
    pub binds: Vec<Listen>,
    pub status: ListenerStatus,
}

impl ListenerState<'_> {
    /// Whether a route in `namespace` may attach (`allowedRoutes.namespaces`).
    pub fn allows_namespace(&self, namespace: &str, input: &GatewayInput<'_>) -> bool {
        let own = self
            .gateway
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default");
        let ns = &self.spec.allowed_routes.namespaces;
        match ns.from {
            FromNamespaces::All => true,
            FromNamespaces::Same => namespace == own,
            FromNamespaces::Selector => ns
                .selector
                .as_ref()
                .is_some_and(|s| super::selector::matches(s, &input.namespace_labels(namespace))),
        }
    }
}

/// The listeners of one Gateway, checked, and what is wrong with its
/// addresses (then none of them is served).
pub(super) fn gateway_listeners<'a>(
    g: &'a Gateway,
    input: &GatewayInput<'_>,
    grants: &Grants<'_>,
) -> (Vec<ListenerState<'a>>, Option<String>) {
    let ns = g.metadata.namespace.as_deref().unwrap_or("default");
    let key: Arc<str> = format!("{ns}/{}", g.metadata.name.as_deref().unwrap_or("")).into();
    let mut addresses = Vec::new();
    let mut unsupported = Vec::new();
    for a in &g.spec.addresses {
        match a.value.parse::<IpAddr>() {
            // An address a listener can be bound to and told apart by:
            // not `0.0.0.0`, `::` or multicast.
            Ok(ip) if a.kind == "IPAddress" && !ip.is_unspecified() && !ip.is_multicast() => {
                addresses.push(ip)
            }
            _ => unsupported.push(format!("{} {}", a.kind, a.value)),
        }
    }
    let mut listeners: Vec<ListenerState<'a>> = g
        .spec
        .listeners
        .iter()
        .map(|l| listener(g, key.clone(), l, &addresses, ns, input, grants))
        .collect();
    mark_conflicts(&mut listeners);
    if unsupported.is_empty() {
        return (listeners, None);
    }
    for l in &mut listeners {
        l.ready = false;
        l.accepted = false;
    }
    (
        listeners,
        Some(format!(
            "only IPAddress addresses are supported: {}",
            unsupported.join(", ")
        )),
    )
}

/// The Gateway's Accepted and Programmed conditions, from its listeners.
pub(super) fn gateway_conditions(
    listeners: &[ListenerState<'_>],
    address_problem: Option<&str>,
) -> Vec<Condition> {
    if let Some(why) = address_problem {
        return vec![
            Condition::new("Accepted", false, "UnsupportedAddress", why),
            Condition::new("Programmed", false, "AddressNotUsable", why),
        ];
    }
    let valid = listeners.iter().filter(|l| l.ready).count();
    vec![
        match valid {
            _ if valid == listeners.len() => Condition::new("Accepted", true, "Accepted", ""),
            0 => Condition::new(
                "Accepted",
                false,
                "ListenersNotValid",
                "no listener is valid",
            ),
            _ => Condition::new(
                "Accepted",
                true,
                "ListenersNotValid",
                "some listeners are not valid",
            ),
        },
        if valid > 0 {
            Condition::new("Programmed", true, "Programmed", "")
        } else {
            Condition::new("Programmed", false, "Invalid", "no listener is served")
        },
    ]
}

/// Listeners of different Gateways on one address and port: the oldest
/// Gateway's keeps it; a later one with the other protocol, or with a
/// hostname already served there, is refused.
pub(super) fn mark_shared_port_conflicts(listeners: &mut [ListenerState<'_>]) {
    let mut kept: BTreeMap<Listen, Vec<usize>> = BTreeMap::new();
    for i in 0..listeners.len() {
        if !listeners[i].ready {
            continue;
        }
        let mut conflict = None;
        for bind in &listeners[i].binds {
            for &j in kept.get(bind).into_iter().flatten() {
                let (me, other) = (listeners[i].spec, listeners[j].spec);
                if other.protocol != me.protocol {
                    conflict = Some((
                        "Accepted",
                        "PortUnavailable",
                        format!(
                            "Gateway {} serves {} there",
                            listeners[j].gateway_key, other.protocol
                        ),
                    ));
                } else if other.hostname == me.hostname {
                    conflict = Some((
                        "Conflicted",
                        "HostnameConflict",
                        format!(
                            "Gateway {} serves that hostname there",
                            listeners[j].gateway_key
                        ),
                    ));
                }
            }
        }
        match conflict {
            None => {
                for bind in listeners[i].binds.clone() {
                    kept.entry(bind).or_default().push(i);
                }
            }
            Some((kind, reason, why)) => {
                let l = &mut listeners[i];
                l.ready = false;
                l.accepted = false;
                for c in &mut l.status.conditions {
                    if c.kind == kind {
                        *c = Condition::new(kind, kind == "Conflicted", reason, why.clone());
                    }
                }
            }
        }
    }
}

/// The listener's Accepted condition: HTTP and HTTPS (terminated) are
/// served.
fn accepted(l: &Listener) -> Condition {
    if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS") {
        let why = format!("protocol {} is not served (HTTP and HTTPS are)", l.protocol);
        return Condition::new("Accepted", false, "UnsupportedProtocol", why);
    }
    if l.tls
        .as_ref()
        .is_some_and(|t| t.mode == TlsMode::Passthrough)
    {
        return Condition::new(
            "Accepted",
            false,
            "UnsupportedValue",
            "TLS mode Passthrough is not served",
        );
    }
    Condition::new("Accepted", true, "Accepted", "")
}

fn listener<'a>(
    g: &'a Gateway,
    gateway_key: Arc<str>,
    l: &'a Listener,
    addresses: &[IpAddr],
    ns: &str,
    input: &GatewayInput<'_>,
    grants: &Grants<'_>,
) -> ListenerState<'a> {
    let port = l.port as u16;
    let binds = if addresses.is_empty() {
        vec![Listen::NodePort(port)]
    } else {
        addresses
            .iter()
            .map(|ip| Listen::Addr(SocketAddr::new(*ip, port)))
            .collect()
    };
    let accepted_condition = accepted(l);
    let accepted = accepted_condition.status;
    let http = matches!(l.protocol.as_str(), "HTTP" | "HTTPS");
    let mut conditions = vec![accepted_condition];
    let kinds = &l.allowed_routes.kinds;
    let http_route = |k: &super::types::RouteGroupKind| k.group == GROUP && k.kind == "HTTPRoute";
    let takes_http_routes = http && (kinds.is_empty() || kinds.iter().any(http_route));
    let mut resolved = Ok(());
    if let Some(bad) = kinds.iter().find(|k| !http_route(k)) {
        resolved = Err((
            "InvalidRouteKinds",
            format!("route kind {}/{} is not supported", bad.group, bad.kind),
        ));
    }
    let mut cert = None;
    if l.protocol == "HTTPS" && accepted {
        match l.tls.as_ref().and_then(|t| t.certificate_refs.first()) {
            Some(r) => match certificate(r, ns, input, grants) {
                Ok(c) => cert = Some(c),
                Err(e) => resolved = resolved.and(Err(e)),
            },
            None => {
                resolved = resolved.and(Err((
                    "InvalidCertificateRef",
                    "no certificateRefs".to_string(),
                )))
            }
        }
    }
    let refs_ok = resolved.is_ok();
    conditions.push(match resolved {
        Ok(()) => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
        Err((reason, why)) => Condition::new("ResolvedRefs", false, reason, why),
    });
    conditions.push(Condition::new("Conflicted", false, "NoConflicts", ""));
    let ready = accepted && refs_ok && takes_http_routes;
    // Routes attach to (and are counted on) accepted listeners, even with
    // unresolved references (conformance: an HTTPS listener without its
    // certificate still counts its routes).
    ListenerState {
        gateway: g,
        gateway_key,
        spec: l,
        ready,
        accepted,
        takes_http_routes,
        cert,
        binds,
        status: ListenerStatus {
            name: l.name.clone(),
            supported_kinds: if takes_http_routes {
                vec!["HTTPRoute"]
            } else {
                Vec::new()
            },
            attached_routes: 0,
            conditions,
        },
    }
}

fn certificate(
    r: &SecretRef,
    gateway_ns: &str,
    input: &GatewayInput<'_>,
    grants: &Grants<'_>,
) -> Result<TlsEntry, (&'static str, String)> {
    if !r.group.is_empty() || r.kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!("{}/{} is not a Secret", r.group, r.kind),
        ));
    }
    let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
    if ns != gateway_ns && !grants.allows("Gateway", gateway_ns, "Secret", ns, &r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {ns} lets Gateways of {gateway_ns} use Secret {}",
                r.name
            ),
        ));
    }
    let secret = input
        .secrets
        .get(&(ns.to_string(), r.name.clone()))
        .cloned();
    secret
        .map(|cert| TlsEntry {
            secret: format!("{ns}/{}", r.name).into(),
            cert,
        })
        .ok_or_else(|| {
            (
                "InvalidCertificateRef",
                format!(
                    "Secret {ns}/{} is not a valid kubernetes.io/tls Secret",
                    r.name
                ),
            )
        })
}

/// Listeners that are not distinct are all refused (the spec lets none of
/// them win): the same port with HTTP and HTTPS is a protocol conflict,
/// the same port, protocol and hostname a hostname conflict.
fn mark_conflicts(listeners: &mut [ListenerState<'_>]) {
    let mut by_port: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        by_port.entry(l.spec.port).or_default().push(i);
    }
    for indexes in by_port.values() {
        for &i in indexes {
            let me = listeners[i].spec;
            let others = indexes
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| listeners[j].spec);
            let mut conflict = None;
            for o in others {
                if o.protocol != me.protocol {
                    conflict = Some((
                        "ProtocolConflict",
                        format!("port {} is also used with {}", me.port, o.protocol),
                    ));
                    break;
                }
                if o.hostname == me.hostname {
                    conflict = Some((
                        "HostnameConflict",
                        format!("listener {} has the same port and hostname", o.name),
                    ));
                }
            }
            if let Some((reason, why)) = conflict {
                let l = &mut listeners[i];
                l.ready = false;
                l.accepted = false;
                for c in &mut l.status.conditions {
                    match c.kind {
                        "Conflicted" => {
                            *c = Condition::new("Conflicted", true, reason, why.clone())
                        }
                        "Accepted" if c.status => {
                            *c = Condition::new("Accepted", false, "Invalid", why.clone())
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Adds each listener's Programmed condition once routes and conflicts are known.
pub(super) fn set_programmed(l: &mut ListenerState<'_>) {
    l.status.conditions.push(if l.ready {
        Condition::new("Programmed", true, "Programmed", "")
    } else {
        Condition::new("Programmed", false, "Invalid", "the listener is not served")
    });
}
