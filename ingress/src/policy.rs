//! What a route decides before any endpoint is involved, in ingress-nginx's
//! phase order: HTTPS redirect, permanent/temporal redirect, app-root (rewrite
//! phase), then source whitelist and body size (access phase).

use crate::body::Body;
use crate::proxy::ConnInfo;
use crate::respond::{redirect, status};
use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode};
use model::ingress::path::encode_path;
use model::ingress::template::Var;
use model::ingress::{Route, normalize_host};

/// Where ACME HTTP-01 challenges are answered.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge";

/// The response that ends the request here, if any.
pub fn before_proxy<B>(
    route: &Route,
    req: &Request<B>,
    norm: &str,
    host: &str,
    conn: &ConnInfo,
    https_port: Option<u16>,
) -> Option<Response<Body>> {
    let ann = &route.annotations;
    // The ACME HTTP-01 solvers' rules must stay reachable over plain HTTP
    // (ingress-nginx's default no-tls-redirect-locations, which it checks
    // against the rule's path, not the request's).
    if !conn.tls && route.ssl_redirect && !route.path.starts_with(ACME_CHALLENGE) {
        let port = match https_port {
            Some(443) | None => String::new(),
            Some(p) => format!(":{p}"),
        };
        let mut pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // As ingress-nginx: the redirect drops one trailing slash of the
        // request URI unless preserve-trailing-slash is set.
        if !ann.preserve_trailing_slash {
            pq = pq.strip_suffix('/').unwrap_or(pq);
        }
        let loc = format!("https://{}{port}{pq}", normalize_host(host));
        return Some(redirect(StatusCode::PERMANENT_REDIRECT, &loc));
    }
    if let Some((to, code)) = &ann.redirect {
        let loc = to.render(|v, out| variable(v, req, norm, host, conn, out));
        return Some(redirect(
            StatusCode::from_u16(*code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
            &loc,
        ));
    }
    if norm == "/"
        && let Some(root) = &ann.app_root
    {
        // ingress-nginx: `return 302 $scheme://$http_host<app-root>`.
        let scheme = if conn.tls { "https" } else { "http" };
        return Some(redirect(
            StatusCode::FOUND,
            &format!("{scheme}://{host}{root}"),
        ));
    }
    if !ann.whitelist.is_empty() && !ann.whitelist.iter().any(|n| n.contains(conn.client.ip())) {
        return Some(status(StatusCode::FORBIDDEN));
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let (Some(limit), Some(len)) = (ann.body_size, declared)
        && len > limit
    {
        return Some(status(StatusCode::PAYLOAD_TOO_LARGE));
    }

    None
}

/// The value of an nginx variable for this request, as nginx defines it.
pub fn variable<B>(
    v: &Var,
    req: &Request<B>,
    norm: &str,
    host: &str,
    conn: &ConnInfo,
    out: &mut String,
) {
    use std::fmt::Write;
    let query = req.uri().query().unwrap_or("");
    match v {
        Var::Scheme => out.push_str(if conn.tls { "https" } else { "http" }),
        Var::Host => out.push_str(&normalize_host(host)),
        Var::HttpHost => out.push_str(host),
        Var::ServerPort => out.push_str(conn.forwarded.port.to_str().unwrap_or("")),
        Var::RequestUri => out.push_str(req.uri().path_and_query().map_or("/", |p| p.as_str())),
        // The normalized path, encoded again so that it stays a valid URI.
        Var::Uri => out.push_str(&encode_path(norm)),
        Var::Args => out.push_str(query),
        Var::IsArgs if !query.is_empty() => out.push('?'),
        Var::IsArgs => {}
        Var::RemoteAddr => {
            let _ = write!(out, "{}", conn.client.ip());
        }
        Var::RequestMethod => out.push_str(req.method().as_str()),
        Var::Header(name) => {
            if let Some(h) = req
                .headers()
                .get(name.as_str())
                .and_then(|h| h.to_str().ok())
            {
                out.push_str(h);
            }
        }
        Var::Arg(name) => {
            let found = query
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| k == name);
            if let Some((_, value)) = found {
                out.push_str(value);
            }
        }
        Var::Cookie(name) => {
            if let Some(c) = crate::balance::cookie(req.headers(), name) {
                out.push_str(c);
            }
        }
    }
}
