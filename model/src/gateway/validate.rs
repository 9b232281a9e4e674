//! Per-object checks on Gateway API resources: what the CRDs' schemas and
//! validation rules make the API server refuse, so a folder is held to the
//! same rules as a cluster. Each error names the field.

use super::duration::parse_duration;
use super::types::*;
use crate::error::FieldError;
use crate::ingress::check_host;

const MAX_LISTENERS: usize = 64;
const MAX_PARENT_REFS: usize = 32;
const MAX_HOSTNAMES: usize = 16;
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;
const MAX_HEADER_MATCHES: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_BACKEND_REFS: usize = 16;
const MAX_WEIGHT: i32 = 1_000_000;

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(field, reason));
    }

    fn at_most<T>(&mut self, field: &str, items: &[T], max: usize) {
        if items.len() > max {
            self.push(field, format!("has {} items, more than {max}", items.len()));
        }
    }
}

pub fn gateway_class(c: &GatewayClass) -> Vec<FieldError> {
    let mut e = Errors(Vec::new());
    let name = &c.spec.controller_name;
    let valid = name.split_once('/').is_some_and(|(domain, path)| {
        crate::validate::is_dns1123_subdomain(domain) && !path.is_empty() && !path.contains(' ')
    });
    if !valid {
        e.push(
            "spec.controllerName",
            format!("{name:?} is not a domain-prefixed path (example.com/controller)"),
        );
    }
    e.0
}

pub fn gateway(g: &Gateway) -> Vec<FieldError> {
    let mut e = Errors(Vec::new());
    if g.spec.gateway_class_name.is_empty() {
        e.push("spec.gatewayClassName", "is required");
    }
    if g.spec.listeners.is_empty() {
        e.push("spec.listeners", "needs at least one listener");
    }
    e.at_most("spec.listeners", &g.spec.listeners, MAX_LISTENERS);
    for (i, l) in g.spec.listeners.iter().enumerate() {
        let f = format!("spec.listeners[{i}]");
        listener(l, &f, &mut e);
        if g.spec.listeners[..i].iter().any(|o| o.name == l.name) {
            e.push(
                format!("{f}.name"),
                format!("{:?} is used by another listener", l.name),
            );
        }
    }
    for (i, a) in g.spec.addresses.iter().enumerate() {
        if a.kind == "IPAddress" && a.value.parse::<std::net::IpAddr>().is_err() {
            e.push(
                format!("spec.addresses[{i}].value"),
                format!("{:?} is not an IP address", a.value),
            );
        }
    }
    e.0
}

fn listener(l: &Listener, f: &str, e: &mut Errors) {
    // SectionName: a DNS subdomain (dots allowed).
    if !crate::validate::is_dns1123_subdomain(&l.name) {
        e.push(
            format!("{f}.name"),
            format!("{:?} is not a valid section name", l.name),
        );
    }
    if !(1..=65535).contains(&l.port) {
        e.push(
            format!("{f}.port"),
            format!("{} is outside 1..65535", l.port),
        );
    }
    if let Some(h) = &l.hostname
        && let Err(why) = check_host(h)
    {
        e.push(format!("{f}.hostname"), why);
    }
    let needs_tls = matches!(l.protocol.as_str(), "HTTPS" | "TLS");
    match (&l.tls, needs_tls) {
        (None, true) => e.push(
            format!("{f}.tls"),
            format!("is required for protocol {}", l.protocol),
        ),
        (Some(_), false) if matches!(l.protocol.as_str(), "HTTP" | "TCP" | "UDP") => e.push(
            format!("{f}.tls"),
            format!("must not be set for protocol {}", l.protocol),
        ),
        _ => {}
    }
    if let Some(tls) = &l.tls {
        if tls.mode == TlsMode::Terminate
            && tls.certificate_refs.is_empty()
            && l.protocol == "HTTPS"
        {
            e.push(
                format!("{f}.tls.certificateRefs"),
                "needs a certificate when mode is Terminate",
            );
        }
        e.at_most(
            &format!("{f}.tls.certificateRefs"),
            &tls.certificate_refs,
            64,
        );
    }
    let ns = &l.allowed_routes.namespaces;
    if ns.from == FromNamespaces::Selector && ns.selector.is_none() {
        e.push(
            format!("{f}.allowedRoutes.namespaces.selector"),
            "is required when from is Selector",
        );
    }
}

pub fn http_route(r: &HttpRoute) -> Vec<FieldError> {
    let mut e = Errors(Vec::new());
    let spec = &r.spec;
    e.at_most("spec.parentRefs", &spec.parent_refs, MAX_PARENT_REFS);
    for (i, p) in spec.parent_refs.iter().enumerate() {
        if p.name.is_empty() {
            e.push(format!("spec.parentRefs[{i}].name"), "is required");
        }
        if let Some(port) = p.port
            && !(1..=65535).contains(&port)
        {
            e.push(
                format!("spec.parentRefs[{i}].port"),
                format!("{port} is outside 1..65535"),
            );
        }
    }
    e.at_most("spec.hostnames", &spec.hostnames, MAX_HOSTNAMES);
    for (i, h) in spec.hostnames.iter().enumerate() {
        if let Err(why) = check_host(h) {
            e.push(format!("spec.hostnames[{i}]"), why);
        }
    }
    e.at_most("spec.rules", &spec.rules, MAX_RULES);
    for (i, rule) in spec.rules.iter().enumerate() {
        http_rule(rule, &format!("spec.rules[{i}]"), &mut e);
    }
    e.0
}

fn http_rule(rule: &HttpRouteRule, f: &str, e: &mut Errors) {
    e.at_most(&format!("{f}.matches"), &rule.matches, MAX_MATCHES);
    for (i, m) in rule.matches.iter().enumerate() {
        route_match(m, &format!("{f}.matches[{i}]"), e);
    }
    filters(&rule.filters, &format!("{f}.filters"), e);
    let has = |t: FilterType| rule.filters.iter().any(|x| x.kind == t);
    if has(FilterType::RequestRedirect) && has(FilterType::UrlRewrite) {
        e.push(
            format!("{f}.filters"),
            "may not contain both RequestRedirect and URLRewrite",
        );
    }
    let prefix_replaced = rule.filters.iter().any(|x| {
        let path = match x.kind {
            FilterType::RequestRedirect => {
                x.request_redirect.as_ref().and_then(|r| r.path.as_ref())
            }
            FilterType::UrlRewrite => x.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
            _ => None,
        };
        path.is_some_and(|p| p.kind == PathModifierType::ReplacePrefixMatch)
    });
    let one_prefix_match = rule.matches.len() == 1
        && rule.matches[0]
            .path
            .as_ref()
            .is_some_and(|p| p.kind == PathMatchType::PathPrefix);
    if prefix_replaced && !one_prefix_match {
        e.push(
            format!("{f}.filters"),
            "ReplacePrefixMatch needs exactly one match, of path type PathPrefix",
        );
    }
    e.at_most(
        &format!("{f}.backendRefs"),
        &rule.backend_refs,
        MAX_BACKEND_REFS,
    );
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let bf = format!("{f}.backendRefs[{i}]");
        backend_ref(&b.backend, &bf, e);
        if !(0..=MAX_WEIGHT).contains(&b.weight) {
            e.push(
                format!("{bf}.weight"),
                format!("{} is outside 0..{MAX_WEIGHT}", b.weight),
            );
        }
        filters(&b.filters, &format!("{bf}.filters"), e);
    }
    if let Some(t) = &rule.timeouts {
        timeouts(t, &format!("{f}.timeouts"), e);
    }
}

fn route_match(m: &HttpRouteMatch, f: &str, e: &mut Errors) {
    if let Some(p) = &m.path {
        let pf = format!("{f}.path.value");
        match p.kind {
            PathMatchType::Exact | PathMatchType::PathPrefix => {
                if let Err(why) = check_match_path(&p.value) {
                    e.push(pf, why);
                }
            }
            PathMatchType::RegularExpression => {
                if let Err(err) = super::anchored(&p.value) {
                    e.push(pf, format!("not a regular expression: {err}"));
                }
            }
        }
    }
    e.at_most(&format!("{f}.headers"), &m.headers, MAX_HEADER_MATCHES);
    for (i, h) in m.headers.iter().enumerate() {
        value_match(&h.name, h.kind, &h.value, &format!("{f}.headers[{i}]"), e);
        if m.headers[..i]
            .iter()
            .any(|o| o.name.eq_ignore_ascii_case(&h.name))
        {
            e.push(
                format!("{f}.headers[{i}].name"),
                format!("{:?} is matched twice", h.name),
            );
        }
    }
    e.at_most(
        &format!("{f}.queryParams"),
        &m.query_params,
        MAX_HEADER_MATCHES,
    );
    for (i, q) in m.query_params.iter().enumerate() {
        value_match(
            &q.name,
            q.kind,
            &q.value,
            &format!("{f}.queryParams[{i}]"),
            e,
        );
        if m.query_params[..i].iter().any(|o| o.name == q.name) {
            e.push(
                format!("{f}.queryParams[{i}].name"),
                format!("{:?} is matched twice", q.name),
            );
        }
    }
}

/// The CRD's rules for an Exact or PathPrefix value: an absolute path with
/// no empty, `.` or `..` segment and no encoded slash or fragment.
fn check_match_path(v: &str) -> Result<(), String> {
    if !v.starts_with('/') {
        return Err(format!("{v:?} must start with '/'"));
    }
    if v.len() > 1024 {
        return Err("is longer than 1024 characters".into());
    }
    if v.contains('#') {
        return Err(format!("{v:?} must not contain '#'"));
    }
    // The Ingress rules for a path (no `//`, no dot segments even encoded,
    // no encoded slash): the same as the CRD's.
    crate::ingress::path::check_spec_path(v)
}

fn value_match(name: &str, kind: ValueMatchType, value: &str, f: &str, e: &mut Errors) {
    if !is_header_name(name) {
        e.push(format!("{f}.name"), format!("{name:?} is not a valid name"));
    }
    if kind == ValueMatchType::RegularExpression
        && let Err(err) = super::anchored(value)
    {
        e.push(
            format!("{f}.value"),
            format!("not a regular expression: {err}"),
        );
    }
}

/// An HTTP header name (an RFC 7230 token), as the CRD's pattern allows.
pub fn is_header_name(s: &str) -> bool {
    s.len() <= 256 && crate::ingress::annotations::is_token(s)
}

fn filters(list: &[HttpRouteFilter], f: &str, e: &mut Errors) {
    e.at_most(f, list, MAX_FILTERS);
    for (i, x) in list.iter().enumerate() {
        filter(x, &format!("{f}[{i}]"), e);
        let repeatable = matches!(x.kind, FilterType::RequestMirror | FilterType::ExtensionRef);
        if !repeatable && list[..i].iter().any(|o| o.kind == x.kind) {
            e.push(
                format!("{f}[{i}].type"),
                format!("{} may appear once", x.kind.as_str()),
            );
        }
    }
}

fn filter(x: &HttpRouteFilter, f: &str, e: &mut Errors) {
    let field = match x.kind {
        FilterType::RequestHeaderModifier => {
            ("requestHeaderModifier", x.request_header_modifier.is_some())
        }
        FilterType::ResponseHeaderModifier => (
            "responseHeaderModifier",
            x.response_header_modifier.is_some(),
        ),
        FilterType::RequestMirror => ("requestMirror", x.request_mirror.is_some()),
        FilterType::RequestRedirect => ("requestRedirect", x.request_redirect.is_some()),
        FilterType::UrlRewrite => ("urlRewrite", x.url_rewrite.is_some()),
        FilterType::ExtensionRef => ("extensionRef", x.extension_ref.is_some()),
        FilterType::Cors | FilterType::ExternalAuth => return,
    };
    if !field.1 {
        e.push(
            format!("{f}.{}", field.0),
            format!("is required for type {}", x.kind.as_str()),
        );
    }
    for (name, m) in [
        ("requestHeaderModifier", &x.request_header_modifier),
        ("responseHeaderModifier", &x.response_header_modifier),
    ] {
        if let Some(m) = m {
            header_modifier(m, &format!("{f}.{name}"), e);
        }
    }
    if let Some(r) = &x.request_redirect {
        redirect(r, &format!("{f}.requestRedirect"), e);
    }
    if let Some(p) = x.url_rewrite.as_ref().and_then(|u| u.path.as_ref()) {
        path_modifier(p, &format!("{f}.urlRewrite.path"), e);
    }
    if let Some(h) = x.url_rewrite.as_ref().and_then(|u| u.hostname.as_deref())
        && let Err(why) = check_host(h).and_then(|_| no_wildcard(h))
    {
        e.push(format!("{f}.urlRewrite.hostname"), why);
    }
    if let Some(m) = &x.request_mirror {
        backend_ref(&m.backend_ref, &format!("{f}.requestMirror.backendRef"), e);
        let mf = format!("{f}.requestMirror");
        match (m.percent, &m.fraction) {
            (Some(_), Some(_)) => e.push(mf, "may set percent or fraction, not both"),
            (Some(p), None) if !(0..=100).contains(&p) => {
                e.push(format!("{mf}.percent"), format!("{p} is outside 0..100"))
            }
            (None, Some(fr))
                if fr.denominator < 1 || fr.numerator < 0 || fr.numerator > fr.denominator =>
            {
                e.push(
                    format!("{mf}.fraction"),
                    "needs 0 <= numerator <= denominator and a denominator of at least 1",
                )
            }
            _ => {}
        }
    }
}

fn no_wildcard(h: &str) -> Result<(), String> {
    if h.starts_with("*.") {
        Err(format!("{h:?} must not be a wildcard"))
    } else {
        Ok(())
    }
}

fn header_modifier(m: &HeaderModifier, f: &str, e: &mut Errors) {
    for (list, name) in [(&m.set, "set"), (&m.add, "add")] {
        for (i, h) in list.iter().enumerate() {
            if !is_header_name(&h.name) {
                e.push(
                    format!("{f}.{name}[{i}].name"),
                    format!("{:?} is not a header name", h.name),
                );
            }
            if list[..i]
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(&h.name))
            {
                e.push(
                    format!("{f}.{name}[{i}].name"),
                    format!("{:?} appears twice", h.name),
                );
            }
        }
    }
    for (i, h) in m.remove.iter().enumerate() {
        if !is_header_name(h) {
            e.push(
                format!("{f}.remove[{i}]"),
                format!("{h:?} is not a header name"),
            );
        }
    }
}

fn redirect(r: &RequestRedirect, f: &str, e: &mut Errors) {
    if let Some(s) = &r.scheme
        && s != "http"
        && s != "https"
    {
        e.push(format!("{f}.scheme"), format!("{s:?} is not http or https"));
    }
    if let Some(h) = &r.hostname
        && let Err(why) = check_host(h).and_then(|_| no_wildcard(h))
    {
        e.push(format!("{f}.hostname"), why);
    }
    if let Some(p) = r.port
        && !(1..=65535).contains(&p)
    {
        e.push(format!("{f}.port"), format!("{p} is outside 1..65535"));
    }
    if ![301, 302, 303, 307, 308].contains(&r.status_code) {
        e.push(
            format!("{f}.statusCode"),
            format!("{} is not one of 301, 302, 303, 307, 308", r.status_code),
        );
    }
    if let Some(p) = &r.path {
        path_modifier(p, &format!("{f}.path"), e);
    }
}

fn path_modifier(p: &PathModifier, f: &str, e: &mut Errors) {
    let (value, field, other) = match p.kind {
        PathModifierType::ReplaceFullPath => (
            &p.replace_full_path,
            "replaceFullPath",
            &p.replace_prefix_match,
        ),
        PathModifierType::ReplacePrefixMatch => (
            &p.replace_prefix_match,
            "replacePrefixMatch",
            &p.replace_full_path,
        ),
    };
    match value {
        None => e.push(format!("{f}.{field}"), "is required for this type"),
        Some(v) if !v.is_empty() && !v.starts_with('/') => {
            e.push(format!("{f}.{field}"), format!("{v:?} must start with '/'"))
        }
        Some(_) => {}
    }
    if other.is_some() {
        e.push(
            format!("{f}.type"),
            format!("only {field} may be set for this type"),
        );
    }
}

fn backend_ref(b: &BackendRef, f: &str, e: &mut Errors) {
    if b.name.is_empty() {
        e.push(format!("{f}.name"), "is required");
    }
    match b.port {
        None if b.group.is_empty() && b.kind == "Service" => {
            e.push(format!("{f}.port"), "is required for a Service")
        }
        Some(p) if !(1..=65535).contains(&p) => {
            e.push(format!("{f}.port"), format!("{p} is outside 1..65535"))
        }
        _ => {}
    }
}

fn timeouts(t: &HttpRouteTimeouts, f: &str, e: &mut Errors) {
    let mut parsed = [None, None];
    for (i, (name, v)) in [
        ("request", &t.request),
        ("backendRequest", &t.backend_request),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = v {
            match parse_duration(v) {
                Ok(d) => parsed[i] = Some(d),
                Err(why) => e.push(format!("{f}.{name}"), why),
            }
        }
    }
    if let [Some(request), Some(backend)] = parsed
        && !request.is_zero()
        && backend > request
    {
        e.push(
            format!("{f}.backendRequest"),
            "must not be longer than request",
        );
    }
}
