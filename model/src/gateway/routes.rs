//! HTTPRoutes: each rule compiled once (backends resolved, filters
//! checked), then attached to the listeners its parentRefs select.

use super::listeners::ListenerState;
use super::status::{Condition, ParentStatus};
use super::table::{
    GatewayRule, Mirror, PathMatch, RequestMatch, RuleAction, RuleFilters, ValueMatch,
    ValuePattern, WeightedBackend,
};
use super::types::*;
use super::{GatewayInput, Grants, hostname_matches, parse_duration};
use crate::ingress::path::spec_key;
use crate::ingress::{Annotations, PathKind, Route, RouteBackend};
use std::sync::Arc;

/// A route's rules, compiled, and what its ResolvedRefs condition says.
pub(super) struct CompiledRoute<'a> {
    pub route: &'a HttpRoute,
    pub namespace: &'a str,
    pub rules: Vec<(Arc<GatewayRule>, Vec<RequestMatch>)>,
    pub resolved: Condition,
}

pub(super) fn compile_route<'a>(
    r: &'a HttpRoute,
    input: &mut GatewayInput<'_>,
    grants: &Grants<'_>,
) -> CompiledRoute<'a> {
    let namespace = r.metadata.namespace.as_deref().unwrap_or("default");
    let key: Arc<str> = format!("{namespace}/{}", r.metadata.name.as_deref().unwrap_or("")).into();
    let mut unresolved: Option<(&'static str, String)> = None;
    let mut rules = Vec::new();
    for (index, rule) in r.spec.rules.iter().enumerate() {
        let mut resolve = |b: &BackendRef| {
            let got = backend(b, namespace, input, grants);
            if let Err(e) = &got
                && unresolved.is_none()
            {
                unresolved = Some(e.clone());
            }
            got.ok()
        };
        let compiled = compile_rule(rule, index, key.clone(), &mut resolve);
        let matches = rule.matches.iter().map(request_match).collect();
        rules.push((Arc::new(compiled), matches));
    }
    let resolved = match unresolved {
        None => Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
        Some((reason, why)) => Condition::new("ResolvedRefs", false, reason, why),
    };
    CompiledRoute {
        route: r,
        namespace,
        rules,
        resolved,
    }
}

/// A rule's filters, and the action they decide (a redirect, or a 500
/// for a filter nodeway cannot apply), if any.
fn rule_filters(
    rule: &HttpRouteRule,
    index: usize,
    route: &str,
    resolve: &mut dyn FnMut(&BackendRef) -> Option<RouteBackend>,
) -> (RuleFilters, Option<RuleAction>) {
    let mut filters = RuleFilters::default();
    let mut action = None;
    for f in &rule.filters {
        match f.kind {
            FilterType::RequestHeaderModifier => {
                filters.request_headers = f.request_header_modifier.clone()
            }
            FilterType::ResponseHeaderModifier => {
                filters.response_headers = f.response_header_modifier.clone()
            }
            FilterType::UrlRewrite => filters.url_rewrite = f.url_rewrite.clone(),
            FilterType::RequestRedirect => {
                action.get_or_insert(RuleAction::Redirect(
                    f.request_redirect.clone().expect("validated"),
                ));
            }
            FilterType::RequestMirror => {
                if let Some(m) = &f.request_mirror
                    && let Some(backend) = resolve(&m.backend_ref)
                {
                    let (numerator, denominator) = m.share();
                    filters.mirrors.push(Mirror {
                        cursor: format!("{route}#{index} mirror {}", backend.key).into(),
                        backend,
                        numerator,
                        denominator,
                    });
                }
            }
            FilterType::ExtensionRef | FilterType::Cors | FilterType::ExternalAuth => {
                let why = format!("filter {} is not supported by nodeway", f.kind.as_str());
                action = Some(RuleAction::Fail(why.into()));
            }
        }
    }
    if rule.backend_refs.iter().any(|b| !b.filters.is_empty()) && action.is_none() {
        action = Some(RuleAction::Fail(
            "filters on backendRefs are not supported by nodeway".into(),
        ));
    }
    filters.prefix = match rule.matches.as_slice() {
        [m] => m
            .path
            .as_ref()
            .filter(|p| p.kind == PathMatchType::PathPrefix)
            .map(|p| p.value.clone().into()),
        _ => None,
    };
    (filters, action)
}

fn compile_rule(
    rule: &HttpRouteRule,
    index: usize,
    route: Arc<str>,
    resolve: &mut dyn FnMut(&BackendRef) -> Option<RouteBackend>,
) -> GatewayRule {
    let (filters, action) = rule_filters(rule, index, &route, resolve);
    let annotations = Arc::new(Annotations::default());
    let backends: Vec<WeightedBackend> = rule
        .backend_refs
        .iter()
        .map(|b| WeightedBackend {
            route: resolve(&b.backend).map(|backend| {
                Arc::new(Route {
                    ingress: route.clone(),
                    host: "".into(),
                    path: "".into(),
                    kind: PathKind::Prefix,
                    regex: None,
                    backend: Some(backend),
                    annotations: annotations.clone(),
                    ssl_redirect: false,
                    canary: None,
                })
            }),
            weight: b.weight.max(0) as u32,
        })
        .collect();
    let action = action.unwrap_or_else(|| {
        if backends.is_empty() {
            RuleAction::Fail("the rule has no backendRefs".into())
        } else if backends.iter().all(|b| b.weight == 0) {
            RuleAction::Fail("every backendRef has weight 0".into())
        } else {
            RuleAction::Forward(backends)
        }
    });
    let timeout = |v: &Option<String>| {
        v.as_deref()
            .and_then(|v| parse_duration(v).ok())
            .filter(|d| !d.is_zero())
    };
    let timeouts = rule.timeouts.clone().unwrap_or_default();
    GatewayRule {
        key: format!("{route}#{index}").into(),
        route,
        index,
        filters,
        action,
        request_timeout: timeout(&timeouts.request),
        backend_timeout: timeout(&timeouts.backend_request),
    }
}

/// A backendRef resolved to a Service port, or why it is not.
fn backend(
    b: &BackendRef,
    route_ns: &str,
    input: &mut GatewayInput<'_>,
    grants: &Grants<'_>,
) -> Result<RouteBackend, (&'static str, String)> {
    if !b.group.is_empty() || b.kind != "Service" {
        return Err((
            "InvalidKind",
            format!(
                "backend kind {}/{} is not supported (Service is)",
                b.group, b.kind
            ),
        ));
    }
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    if ns != route_ns && !grants.allows("HTTPRoute", route_ns, "Service", ns, &b.name) {
        // The message does not say whether the Service exists (the spec asks so).
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in {ns} lets HTTPRoutes of {route_ns} use Service {}",
                b.name
            ),
        ));
    }
    let key = (ns.to_string(), b.name.clone());
    input.named_services.insert(key.clone());
    let Some(svc) = input.services.get(&key) else {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} not found", b.name),
        ));
    };
    let want = b.port.unwrap_or(0);
    let Some(port) = svc.ports.iter().position(|p| i32::from(p.port) == want) else {
        return Err((
            "BackendNotFound",
            format!("Service {ns}/{} has no port {want}", b.name),
        ));
    };
    Ok(RouteBackend {
        key: format!("{ns}/{}:{want}", b.name).into(),
        service: key,
        port,
    })
}

fn request_match(m: &HttpRouteMatch) -> RequestMatch {
    // Validation compiled the same anchored form.
    let anchored = |v: &str| super::anchored(v).expect("validated");
    let path = match &m.path {
        None => PathMatch::Prefix("".into()),
        Some(p) => match p.kind {
            // Percent-decoded, as the request paths they are compared with.
            PathMatchType::Exact => PathMatch::Exact(spec_key(&p.value).into()),
            PathMatchType::PathPrefix => {
                PathMatch::Prefix(spec_key(&p.value).trim_end_matches('/').into())
            }
            PathMatchType::RegularExpression => PathMatch::Regex(anchored(&p.value)),
        },
    };
    let value = |kind: ValueMatchType, v: &str| match kind {
        ValueMatchType::Exact => ValuePattern::Exact(v.into()),
        ValueMatchType::RegularExpression => ValuePattern::Regex(anchored(v)),
    };
    RequestMatch {
        path,
        method: m.method,
        headers: m
            .headers
            .iter()
            .map(|h| ValueMatch {
                name: h.name.to_ascii_lowercase().into(),
                value: value(h.kind, &h.value),
            })
            .collect(),
        query: m
            .query_params
            .iter()
            .map(|q| ValueMatch {
                name: q.name.clone().into(),
                value: value(q.kind, &q.value),
            })
            .collect(),
    }
}

/// Where one parentRef attaches the route: listener indexes into `listeners`,
/// each with the hostnames the route serves there; and the parent's status.
pub(super) struct Attachment {
    pub listeners: Vec<(usize, Vec<String>)>,
    pub status: ParentStatus,
}

pub(super) fn attach(
    route: &CompiledRoute<'_>,
    parent: &ParentRef,
    listeners: &[ListenerState<'_>],
    input: &GatewayInput<'_>,
) -> Option<Attachment> {
    if parent.group != GROUP || parent.kind != "Gateway" {
        return None;
    }
    let gateway = format!(
        "{}/{}",
        parent.namespace.as_deref().unwrap_or(route.namespace),
        parent.name
    );
    let of_gateway: Vec<usize> = (0..listeners.len())
        .filter(|&i| *listeners[i].gateway_key == *gateway)
        .collect();
    if of_gateway.is_empty() {
        // Not a Gateway of ours (or none at all): another controller's business.
        return None;
    }
    let mut status = ParentStatus {
        gateway,
        section_name: parent.section_name.clone(),
        port: parent.port,
        conditions: Vec::new(),
    };
    let selected: Vec<usize> = of_gateway
        .into_iter()
        .filter(|&i| {
            parent
                .section_name
                .as_deref()
                .is_none_or(|s| s == listeners[i].spec.name)
        })
        .filter(|&i| parent.port.is_none_or(|p| p == listeners[i].spec.port))
        .collect();
    let allowed: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&i| {
            let l = &listeners[i];
            l.accepted && l.takes_http_routes && l.allows_namespace(route.namespace, input)
        })
        .collect();
    let mut attached = Vec::new();
    for &i in &allowed {
        if let Some(hosts) = intersect(
            listeners[i].spec.hostname.as_deref(),
            &route.route.spec.hostnames,
        ) {
            attached.push((i, hosts));
        }
    }
    let accepted = match (selected.is_empty(), allowed.is_empty(), attached.is_empty()) {
        (true, ..) => Condition::new(
            "Accepted",
            false,
            "NoMatchingParent",
            "no listener matches the sectionName or port",
        ),
        (_, true, _) => Condition::new(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "the listeners' allowedRoutes do not admit this route",
        ),
        (.., true) => Condition::new(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no hostname of the route matches a listener's",
        ),
        _ => Condition::new("Accepted", true, "Accepted", ""),
    };
    status.conditions = vec![accepted, route.resolved.clone()];
    Some(Attachment {
        listeners: attached,
        status,
    })
}

/// The hostnames a route serves on a listener: its own hostnames that the
/// listener's covers, narrowed to the more specific of the two; the
/// listener's (`""`: any host) when the route names none; `None` when none
/// intersect.
fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    if route.is_empty() {
        // The listener's hostname, so such a route ranks with the routes
        // that name it (by path and the rest), not after them.
        return Some(vec![listener.unwrap_or("").to_string()]);
    }
    let Some(l) = listener else {
        return Some(route.to_vec());
    };
    let hosts: Vec<String> = route
        .iter()
        .filter_map(|r| {
            if hostname_matches(l, r.trim_start_matches("*."))
                && (!r.starts_with('*') || l.starts_with('*'))
            {
                // The route's is as or more specific: `*.a.example.com` under `*.example.com`.
                Some(r.clone())
            } else if r.starts_with('*')
                && (hostname_matches(r, l.trim_start_matches("*.")) || hostname_matches(r, l))
            {
                // The listener's is more specific: it narrows the route's wildcard.
                Some(l.to_string())
            } else {
                None
            }
        })
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

#[cfg(test)]
mod tests {
    use super::intersect;

    #[test]
    fn hostname_intersection() {
        let hosts = |l: Option<&str>, r: &[&str]| {
            intersect(l, &r.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(hosts(None, &[]), Some(vec!["".into()]));
        assert_eq!(
            hosts(Some("a.example.com"), &[]),
            Some(vec!["a.example.com".into()])
        );
        assert_eq!(
            hosts(Some("a.example.com"), &["*.example.com"]),
            Some(vec!["a.example.com".into()])
        );
        assert_eq!(hosts(Some("a.example.com"), &["b.example.com"]), None);
        assert_eq!(
            hosts(Some("*.example.com"), &["a.b.example.com"]),
            Some(vec!["a.b.example.com".into()])
        );
        assert_eq!(
            hosts(Some("*.example.com"), &["*.b.example.com"]),
            Some(vec!["*.b.example.com".into()])
        );
        assert_eq!(
            hosts(Some("*.b.example.com"), &["*.example.com"]),
            Some(vec!["*.b.example.com".into()])
        );
        assert_eq!(
            hosts(Some("*.example.com"), &["example.com", "x.example.net"]),
            None
        );
        // Conformance: a `*.specific.com` route under `very.specific.com` serves only that host.
        assert_eq!(
            hosts(Some("very.specific.com"), &["*.specific.com"]),
            Some(vec!["very.specific.com".into()])
        );
    }
}
