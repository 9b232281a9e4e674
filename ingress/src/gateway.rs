//! Gateway API requests: the rule a request matches (the model compiled
//! them in the spec's precedence), then its filters and action. Forwarded
//! requests take the same upstream path as Ingress routes.

use crate::body::Body;
use crate::proxy::{ConnInfo, Outcome, Shared, serve_route};
use crate::respond::{redirect, status};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::{Body as _, Incoming};
use model::gateway::types::{HeaderModifier, PathModifier, PathModifierType, RequestRedirect};
use model::gateway::{GatewayRule, Mirror, PortRoutes, RequestFacts, RuleAction, RuleFilters};
use model::snapshot::Listen;
use std::net::IpAddr;
use std::sync::Arc;

/// The Gateway listeners of the address a connection came to, if any.
pub(crate) fn port_for<'v>(
    view: &'v crate::L7View,
    conn: &ConnInfo,
    node_ips: &[IpAddr],
) -> Option<&'v PortRoutes> {
    if view.gateway.is_empty() {
        return None;
    }
    let port = view.gateway.port(&Listen::Addr(conn.local));
    let on_node_ip = || node_ips.contains(&conn.local.ip());
    port.or_else(|| {
        on_node_ip()
            .then(|| view.gateway.port(&Listen::NodePort(conn.local.port())))
            .flatten()
    })
    .filter(|p| p.tls == conn.tls)
}

/// The rule a request matches on these listeners.
pub(crate) fn find(
    port: &PortRoutes,
    req: &Request<Incoming>,
    host: &str,
    norm: &str,
) -> Option<Arc<GatewayRule>> {
    let headers = req.headers();
    let header = |name: &str| {
        let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        let first = values.next()?;
        Some(values.fold(first.to_string(), |mut all, v| {
            all.push(',');
            all.push_str(v);
            all
        }))
    };
    let facts = RequestFacts {
        host,
        path: norm,
        query: req.uri().query(),
        method: req.method().as_str(),
        header: &header,
    };
    port.find(&facts).cloned()
}

/// Answers a request by its rule, within the rule's timeouts.
#[allow(clippy::too_many_arguments)] // the request's parts, each used
pub(crate) async fn serve(
    sh: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
    view: Arc<crate::L7View>,
    rule: Arc<GatewayRule>,
    host_hv: HeaderValue,
    norm: Option<String>,
    out: &mut Outcome,
) -> Response<Body> {
    let answer = act(sh, conn, req, view, &rule, host_hv, norm, out);
    // `request` bounds the whole exchange; `backendRequest` the upstream's
    // part of it, which here is the same span (no retries between).
    let deadline = match (rule.request_timeout, rule.backend_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let Some(deadline) = deadline else {
        return answer.await;
    };
    tokio::time::timeout(deadline, answer)
        .await
        .unwrap_or_else(|_| status(StatusCode::GATEWAY_TIMEOUT))
}

#[allow(clippy::too_many_arguments)]
async fn act(
    sh: &Shared,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    view: Arc<crate::L7View>,
    rule: &GatewayRule,
    host_hv: HeaderValue,
    mut norm: Option<String>,
    out: &mut Outcome,
) -> Response<Body> {
    let backends = match &rule.action {
        RuleAction::Fail(why) => {
            tracing::debug!(
                route = &*rule.route,
                rule = rule.index,
                why = &**why,
                "answered 500"
            );
            return status(StatusCode::INTERNAL_SERVER_ERROR);
        }
        RuleAction::Redirect(r) => {
            let path = norm.as_deref().unwrap_or(req.uri().path());
            return redirect_to(r, &rule.filters, conn, &host_hv, path, req.uri());
        }
        RuleAction::Forward(backends) => backends,
    };
    let Some(route) = RuleAction::pick(backends, sh.balancer.next(&rule.key)).cloned() else {
        // The share of a backendRef that does not resolve.
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    if let Some(m) = &rule.filters.request_headers {
        modify(req.headers_mut(), m);
    }
    let mut host_hv = host_hv;
    if let Some(rw) = &rule.filters.url_rewrite {
        if let Some(h) = rw
            .hostname
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok())
        {
            host_hv = h;
        }
        if let Some(p) = &rw.path {
            let path = new_path(
                p,
                rule.filters.prefix.as_deref(),
                norm.as_deref().unwrap_or(req.uri().path()),
            );
            *req.uri_mut() = with_path(req.uri(), &path);
            norm = Some(path);
        }
    }
    let mut resp = if rule.filters.mirrors.is_empty() {
        serve_route(sh, conn, req, view, route, norm, host_hv, out).await
    } else {
        let req = mirror(sh, &view, req, &rule.filters.mirrors, &host_hv);
        serve_route(sh, conn, req, view, route, norm, host_hv, out).await
    };
    if let Some(m) = &rule.filters.response_headers {
        modify(resp.headers_mut(), m);
    }
    resp
}

/// Frames a mirror may fall behind by before it is dropped.
const MIRROR_QUEUE: usize = 64;
/// Mirrored requests in flight at most (beyond: not mirrored), and how
/// long one may take: a mirror that never answers must not pile up
/// tasks and sockets.
const MIRRORS_IN_FLIGHT: usize = 1024;
const MIRROR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a mirrored request in flight while it lives.
struct InFlight;

impl InFlight {
    fn take() -> Option<InFlight> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = IN_FLIGHT.fetch_add(1, Relaxed);
        if n >= MIRRORS_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Relaxed);
            return None;
        }
        Some(InFlight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// RequestMirror: a copy of the request (as the filters before made it) to
/// an endpoint of each mirror backend (round robin), for the share of
/// requests the filter asks; its body teed from the request's, the answer
/// discarded. Fire and forget: a mirror never delays or fails the request.
fn mirror(
    sh: &Shared,
    view: &crate::L7View,
    req: Request<Incoming>,
    mirrors: &[Mirror],
    host_hv: &HeaderValue,
) -> Request<crate::body::Tee<Incoming>> {
    let (parts, body) = req.into_parts();
    let mut copies = Vec::new();
    for m in mirrors {
        let ticket = sh.balancer.next(&m.cursor);
        if !m.takes(ticket) {
            continue;
        }
        let port = view
            .services
            .get(&m.backend.service)
            .and_then(|s| s.ports.get(m.backend.port));
        let usable = port.map(|p| {
            model::usable_backends(&p.backends, None)
                .map(|b| b.addr())
                .collect::<Vec<_>>()
        });
        let Some(addr) = usable
            .filter(|u| !u.is_empty())
            .map(|u| u[m.copy_number(ticket) % u.len()])
        else {
            tracing::debug!(mirror = &*m.backend.key, "no usable endpoint; not mirrored");
            continue;
        };
        let Some(in_flight) = InFlight::take() else {
            tracing::debug!(
                mirror = &*m.backend.key,
                "too many mirrored requests in flight; not mirrored"
            );
            continue;
        };
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let Ok(uri) = Uri::try_from(format!("http://{addr}{target}")) else {
            continue;
        };
        let mut headers = parts.headers.clone();
        crate::headers::strip_hop_by_hop(&mut headers, false, false);
        headers.insert(http::header::HOST, host_hv.clone());
        let has_body = !body.is_end_stream();
        let (feed, copy_body) = crate::body::mirror_body(MIRROR_QUEUE);
        let mut copy = Request::new(if has_body {
            copy_body
        } else {
            crate::body::empty()
        });
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = uri;
        *copy.headers_mut() = headers;
        if has_body {
            copies.push(feed);
        }
        let client = sh.upstream.client(
            std::time::Duration::from_secs(5),
            model::ingress::BackendProtocol::Http,
        );
        let key = m.backend.key.clone();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            match tokio::time::timeout(MIRROR_TIMEOUT, client.request(copy)).await {
                Ok(Ok(resp)) => {
                    tracing::debug!(mirror = &*key, status = resp.status().as_u16(), "mirrored")
                }
                Ok(Err(e)) => tracing::debug!(mirror = &*key, error = %e, "mirror failed"),
                Err(_) => tracing::debug!(mirror = &*key, "mirror timed out"),
            }
        });
    }
    Request::from_parts(parts, crate::body::Tee::new(body, copies))
}

/// A HeaderModifier: set replaces, add appends, remove drops (names are
/// case-insensitive; the model checked them).
fn modify(headers: &mut HeaderMap, m: &HeaderModifier) {
    let pair = |name: &str, value: &str| {
        Some((
            HeaderName::try_from(name).ok()?,
            HeaderValue::from_str(value).ok()?,
        ))
    };
    for h in &m.set {
        if let Some((n, v)) = pair(&h.name, &h.value) {
            headers.insert(n, v);
        }
    }
    for h in &m.add {
        if let Some((n, v)) = pair(&h.name, &h.value) {
            headers.append(n, v);
        }
    }
    for name in &m.remove {
        if let Ok(n) = HeaderName::try_from(name.as_str()) {
            headers.remove(n);
        }
    }
}

/// The path after a ReplaceFullPath or ReplacePrefixMatch modifier.
fn new_path(m: &PathModifier, matched_prefix: Option<&str>, path: &str) -> String {
    match m.kind {
        PathModifierType::ReplaceFullPath => {
            m.replace_full_path.clone().unwrap_or_else(|| "/".into())
        }
        PathModifierType::ReplacePrefixMatch => {
            let replacement = m.replace_prefix_match.as_deref().unwrap_or("/");
            replace_prefix(path, matched_prefix.unwrap_or("/"), replacement)
        }
    }
}

/// The spec's ReplacePrefixMatch: the matched prefix (segment-wise, a
/// trailing `/` ignored) is replaced, and the rest of the path kept, so
/// `/foo/bar` with `/foo` -> `/xyz` is `/xyz/bar`, and with `/foo` -> `` is `/bar`.
fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.get(prefix.len()..).unwrap_or("");
    let out = format!("{}{rest}", replacement.trim_end_matches('/'));
    if out.is_empty() { "/".into() } else { out }
}

fn with_path(uri: &Uri, path: &str) -> Uri {
    let encoded = model::ingress::path::encode_path(path);
    let pq = match uri.query() {
        Some(q) => format!("{encoded}?{q}"),
        None => encoded,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(pq).ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// A RequestRedirect's Location. The port: the filter's, else the scheme's
/// well-known port when the filter changes the scheme, else the listener's;
/// a well-known port is left out.
fn redirect_to(
    r: &RequestRedirect,
    filters: &RuleFilters,
    conn: &ConnInfo,
    host_hv: &HeaderValue,
    norm: &str,
    uri: &Uri,
) -> Response<Body> {
    let request_scheme = if conn.tls { "https" } else { "http" };
    let scheme = r.scheme.as_deref().unwrap_or(request_scheme);
    let request_host = host_hv.to_str().unwrap_or("");
    let host = match r.hostname.as_deref() {
        Some(h) => h,
        None => strip_port(request_host),
    };
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => p as u16,
        (None, Some(s)) => well_known(s),
        (None, None) => conn.local.port(),
    };
    let port = if port == well_known(scheme) {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = match &r.path {
        Some(m) => new_path(m, filters.prefix.as_deref(), norm),
        None => norm.to_string(),
    };
    let mut location = format!(
        "{scheme}://{host}{port}{}",
        model::ingress::path::encode_path(&path)
    );
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let code = StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::FOUND);
    redirect(code, &location)
}

fn well_known(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// A Host header without its port, as a Location names it (an IPv6
/// literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::replace_prefix;

    #[test]
    fn host_without_port() {
        use super::strip_port;
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    /// The spec's table for ReplacePrefixMatch.
    #[test]
    fn prefix_replacement() {
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
        ];
        for (path, prefix, replacement, want) in cases {
            assert_eq!(
                replace_prefix(path, prefix, replacement),
                want,
                "{path} {prefix} {replacement}"
            );
        }
    }
}
