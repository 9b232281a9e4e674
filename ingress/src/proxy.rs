//! One request: route on the normalized path, apply the route's annotations,
//! pick an endpoint, forward over a pooled connection, stream the answer back.

use crate::access_log;
use crate::balance::{self, Balancer, cookie_value, from_cookie, use_canary};
use crate::body::{self, Body, Idle, IdleTimeout, Watched};
use crate::cors;
use crate::gateway;
use crate::h1;
use crate::headers::{
    Forwarded, X_FORWARDED_PREFIX, add_forwarded, join_cookies, strip_hop_by_hop, wants_upgrade,
};
use crate::metrics::Metrics;
use crate::policy;
use crate::respond::{status, status_close};
use crate::upstream::Upstream;
use http::header::{
    CONTENT_LENGTH, HOST, ORIGIN, SERVER, SET_COOKIE, TRANSFER_ENCODING, USER_AGENT,
};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use model::ingress::path::{encode_path, is_valid_host};
use model::ingress::{
    BackendProtocol, PathKind, Rewritten, Route, SameSite, normalize_path,
    same_site_none_incompatible,
};
use model::usable_backends;
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// What every request of the plane shares.
pub struct Shared {
    /// The route table and certificates of the current generation.
    pub view: control::View<crate::tls::L7View>,
    pub upstream: Upstream,
    /// Pooled plain HTTP/1.1 connections, driven from the request's task.
    pub h1: h1::Pool,
    pub balancer: Balancer,
    pub metrics: Metrics,
    pub server: HeaderValue,
    /// Port of the HTTPS listener, for ssl-redirect Locations.
    pub https_port: Option<u16>,
    /// `--node-ip`: where Gateways without addresses are served.
    pub node_ips: Vec<std::net::IpAddr>,
}

/// The downstream connection a request came on.
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The address the connection came to (Gateway listeners are told apart by it).
    pub local: SocketAddr,
    /// It came to one of the Ingress listeners (`--http-listen`,
    /// `--https-listen`): requests no Gateway route takes go to the Ingresses.
    pub ingress: bool,
    pub tls: bool,
    /// X-Forwarded-* values of this connection.
    pub forwarded: Forwarded,
}

/// What the access log and metrics report about a request.
#[derive(Default)]
pub(crate) struct Outcome {
    route: Option<Arc<Route>>,
    upstream: Option<SocketAddr>,
    /// `Access-Control-Allow-Origin` for a request the route's CORS allows.
    cors_origin: Option<HeaderValue>,
}

/// The hyper service function.
pub async fn handle(
    sh: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    // Only what the access log needs, and only when it is on.
    let logged = access_log::enabled().then(|| (req.method().clone(), req.uri().clone()));
    let mut out = Outcome::default();
    let mut resp = serve(&sh, &conn, req, &mut out).await;
    resp.headers_mut().insert(SERVER, sh.server.clone());
    if let (Some(origin), Some(route)) = (out.cors_origin.take(), &out.route)
        && let Some(c) = &route.annotations.cors
    {
        cors::add_headers(resp.headers_mut(), c, origin);
    }
    let code = resp.status().as_u16();
    let elapsed = start.elapsed();
    sh.metrics.latency.observe(elapsed.as_secs_f64());
    static NONE: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    let none = NONE.get_or_init(|| Arc::from(""));
    let (ingress, host) = match &out.route {
        Some(r) => (&r.ingress, &r.host),
        None => (none, none),
    };
    sh.metrics.count(ingress, host, code);
    let Some((method, uri)) = logged else {
        return Ok(resp);
    };
    access_log::write(&access_log::Entry {
        method: &method,
        client: conn.client,
        path: uri.path(),
        ingress,
        route_path: out.route.as_ref().map(|r| &*r.path),
        upstream: out.upstream,
        status: code,
        bytes: resp.body().size_hint().exact(),
        duration_us: elapsed.as_micros() as u64,
    });
    Ok(resp)
}

async fn serve(
    sh: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    let h = req.headers();
    // RFC 9112 §6.1: both framings at once is how requests get smuggled.
    if h.contains_key(CONTENT_LENGTH) && h.contains_key(TRANSFER_ENCODING) {
        return status_close(StatusCode::BAD_REQUEST);
    }
    let host_hv = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => h.get(HOST).cloned(),
    }
    .unwrap_or_else(|| HeaderValue::from_static(""));
    let Ok(host) = host_hv.to_str() else {
        return status(StatusCode::BAD_REQUEST);
    };
    if !is_valid_host(host) {
        return status(StatusCode::BAD_REQUEST);
    }
    // One generation for the whole request: its routes and the Services
    // (endpoints) they name.
    let view = sh.view.load_full();
    let raw = req.uri().path();
    let Ok(norm) = normalize_path(raw) else {
        return status(StatusCode::BAD_REQUEST);
    };
    // A Gateway API route wins over an Ingress for the same request.
    let gateway_rule = match gateway::port_for(&view, conn, &sh.node_ips) {
        // A Gateway's own socket whose listener is gone (or going): never
        // the Ingresses'.
        None if !conn.ingress => return status(StatusCode::NOT_FOUND),
        None => None,
        Some(port) => match gateway::find(port, &req, host, &norm) {
            None if !conn.ingress => return status(StatusCode::NOT_FOUND),
            found => found,
        },
    };
    let route = match gateway_rule {
        Some(_) => None,
        None => match view.table.find(host, &norm) {
            Some(r) => Some(r.clone()),
            None => return status(StatusCode::NOT_FOUND),
        },
    };
    // The request is moved on from here: keep the normalized path only
    // when it differs from the request's own.
    let norm = match norm {
        Cow::Borrowed(_) => None,
        Cow::Owned(path) => Some(path),
    };
    match (gateway_rule, route) {
        (Some(rule), _) => gateway::serve(sh, conn, req, view, rule, host_hv, norm, out).await,
        (None, Some(route)) => serve_route(sh, conn, req, view, route, norm, host_hv, out).await,
        (None, None) => status(StatusCode::NOT_FOUND),
    }
}

/// A request on its route (an Ingress path, or a Gateway API rule's
/// backend): the route's annotations, an endpoint, the upstream.
#[allow(clippy::too_many_arguments)] // the request's parts, each used
pub(crate) async fn serve_route<B>(
    sh: &Shared,
    conn: &ConnInfo,
    mut req: Request<B>,
    view: Arc<crate::L7View>,
    route: Arc<Route>,
    norm: Option<String>,
    host_hv: HeaderValue,
    out: &mut Outcome,
) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static,
{
    let Ok(host) = host_hv.to_str() else {
        return status(StatusCode::BAD_REQUEST);
    };
    // `None`: the request's path is already normalized.
    let owned = norm;
    let norm: &str = match &owned {
        Some(path) => path,
        None => req.uri().path(),
    };
    out.route = Some(route.clone());
    let ann = &route.annotations;
    // In nginx's rewrite phase, ahead of the HTTPS redirect and the access rules.
    if let Some(c) = &ann.cors {
        out.cors_origin = c.allow_origin(req.headers().get(ORIGIN));
        if out.cors_origin.is_some() && req.method() == Method::OPTIONS {
            return cors::preflight();
        }
    }
    if let Some(answer) = policy::before_proxy(&route, &req, norm, host, conn, sh.https_port) {
        return answer;
    }

    // A request already tied to one of the primary's endpoints by its
    // affinity cookie stays there: ingress-nginx's balancer checks that
    // before any canary rule.
    let pinned = ann.affinity.as_ref().is_some_and(|a| {
        route.backend.as_ref().is_some_and(|be| {
            let Some(port) = view
                .services
                .get(&be.service)
                .and_then(|s| s.ports.get(be.port))
            else {
                return false;
            };
            from_cookie(
                req.headers(),
                &a.name,
                usable_backends(&port.backends, None),
            )
            .is_some()
        })
    });
    let target = match &route.canary {
        Some(c)
            if !pinned
                && c.annotations
                    .canary
                    .as_ref()
                    .is_some_and(|cfg| use_canary(cfg, req.headers())) =>
        {
            c.clone()
        }
        _ => route.clone(),
    };
    let Some(be) = target.backend.as_ref() else {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    };
    let Some(service) = view.services.get(&be.service).cloned() else {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    };
    drop(view);
    let Some(port) = service.ports.get(be.port) else {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    };
    // An ExternalName Service is reached by its name and the Service port;
    // the connector resolves it per connection.
    let external = service
        .external_name
        .as_deref()
        .map(|name| format!("{}:{}", name.trim_end_matches('.'), port.port));
    let backends = port.backends.clone();
    let usable = usable_backends(&backends, None);
    let n = if external.is_some() {
        1
    } else {
        usable.clone().count()
    };
    if n == 0 {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    // Session affinity is the only thing a canary Ingress sets for itself
    // (ingress-nginx); everything else comes from the primary.
    let affinity = target
        .annotations
        .affinity
        .as_ref()
        .filter(|_| external.is_none());
    let sticky = affinity.map(|a| Sticky {
        pinned: from_cookie(req.headers(), &a.name, usable.clone()),
        same_site_ok: !a.conditional_same_site_none
            || a.same_site != Some(SameSite::None)
            || !req
                .headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(same_site_none_incompatible),
    });
    // The affinity cookie, else upstream-hash-by, else round robin (the
    // model drops hash-by when the route has affinity, as ingress-nginx; a
    // canary with its own affinity does the same here).
    let first = match (sticky.as_ref().and_then(|s| s.pinned), &ann.hash_by) {
        _ if external.is_some() => 0,
        (Some(i), _) => i,
        (None, Some(h)) if affinity.is_none() => {
            let key = h
                .key
                .render(|v, out| policy::variable(v, &req, norm, host, conn, out));
            balance::by_key(&key, h.subset_size, usable.clone(), || {
                sh.balancer.next(&be.key)
            })
        }
        (None, _) => sh.balancer.next(&be.key) % n,
    };
    // A pinned request stays with its endpoint on a retry unless
    // change-on-failure says otherwise (ingress-nginx).
    let stay = sticky.as_ref().is_some_and(|s| s.pinned.is_some())
        && affinity.is_some_and(|a| !a.change_on_failure);

    let pq = upstream_target(&route, norm, req.uri());
    let h2 = ann.backend_protocol.is_h2();
    let upgrade = req.version() <= Version::HTTP_11 && wants_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrade, h2);
    if parts.version == Version::HTTP_2 && !h2 {
        join_cookies(&mut headers);
    }
    add_forwarded(&mut headers, &conn.forwarded, &host_hv);
    if let Some(p) = &ann.x_forwarded_prefix
        && let Ok(v) = HeaderValue::from_str(p)
    {
        headers.insert(X_FORWARDED_PREFIX.clone(), v);
    }
    let vhost = ann
        .upstream_vhost
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok());
    headers.insert(HOST, vhost.unwrap_or(host_hv));

    let has_body = !incoming.is_end_stream();
    let body: Option<Body> = Some(match ann.body_size {
        Some(limit) if has_body => {
            Idle::wrap(Limited::new(incoming, limit as usize), ann.send_timeout)
        }
        _ if has_body => Idle::wrap(body::unboxed(incoming), ann.send_timeout),
        // Nothing to read: no box, no timer (a boxed empty body allocates nothing).
        _ => body::empty(),
    });
    let fwd = Forward {
        method: &parts.method,
        target: &pq,
        ann,
        external: external.as_deref(),
        upgrade,
    };
    let pick = |attempt: usize| {
        let i = if stay { first } else { (first + attempt) % n };
        usable.clone().nth(i).map(|b| b.addr())
    };
    // Tries can reach n endpoints, or only the pinned one.
    let reachable = if stay { 1 } else { n };
    let (resp, up) = forward(sh, &fwd, headers, body, reachable, pick, out).await;
    let Ok(resp) = resp else {
        return resp.unwrap_or_else(|r| r);
    };
    // A new client, or one whose endpoint failed under change-on-failure,
    // is pinned to the endpoint that answered.
    let set_cookie = match (affinity, sticky, out.upstream) {
        (Some(a), Some(st), Some(addr))
            if st
                .pinned
                .and_then(|i| usable.clone().nth(i))
                .map(|b| b.addr())
                != Some(addr) =>
        {
            let cookie = Cookie {
                route_path: &target.path,
                kind: target.kind,
                tls: conn.tls,
                same_site_ok: st.same_site_ok,
            };
            Some(cookie.set_cookie(a, &addr, SystemTime::now()))
        }
        _ => None,
    };
    finish(resp, on_upgrade, up, set_cookie)
}

/// A request's affinity cookie, as it came.
struct Sticky {
    /// Index (among usable endpoints) of the endpoint its cookie names.
    pinned: Option<usize>,
    /// `SameSite=None` may be sent to this client.
    same_site_ok: bool,
}

/// What every try of one request sends.
struct Forward<'a> {
    method: &'a Method,
    target: &'a PathAndQuery,
    ann: &'a model::ingress::Annotations,
    /// `host:port` of an ExternalName Service (resolved per connection).
    external: Option<&'a str>,
    upgrade: bool,
}

/// Sends the request to the endpoint `pick(0)` names, and on to `pick(1)`,
/// ... while the route's proxy-next-upstream rules allow: `Ok` with the
/// upstream's answer, or `Err` with the answer the client gets instead.
async fn forward(
    sh: &Shared,
    fwd: &Forward<'_>,
    mut headers: http::HeaderMap,
    body: Option<Body>,
    endpoints: usize,
    pick: impl Fn(usize) -> Option<SocketAddr>,
    out: &mut Outcome,
) -> (
    Result<Response<Body>, Response<Body>>,
    Option<UpstreamUpgrade>,
) {
    let rules = &fwd.ann.next_upstream;
    let has_body = body.as_ref().is_some_and(|b| !b.is_end_stream());
    let mut body = body;
    let tries = match rules.tries {
        _ if rules.is_off() => 1,
        0 => endpoints,
        t => (t as usize).min(endpoints * MAX_TRIES_PER_ENDPOINT),
    };
    // Plain HTTP/1.1 to endpoint addresses (the common case) is driven from
    // this task; TLS, HTTP/2 and ExternalName go through hyper-util's client.
    let direct = fwd.ann.backend_protocol == BackendProtocol::Http && fwd.external.is_none();
    // Only a time limit needs the clock.
    let started = rules.timeout.map(|_| Instant::now());
    let mut attempt = 0;
    loop {
        let endpoint = match fwd.external {
            Some(_) => None,
            None => pick(attempt),
        };
        out.upstream = endpoint;
        let last = attempt + 1 >= tries;
        sh.metrics.upstream_inflight.inc();
        let tried = match (endpoint, fwd.external) {
            (Some(addr), _) if direct => via_h1(sh, addr, fwd, &headers, &mut body).await,
            (_, Some(authority)) => {
                let hdrs = headers_for_try(&mut headers, !last && !has_body);
                let b = body.take().unwrap_or_else(body::empty);
                via_client(sh, authority, fwd, hdrs, b).await
            }
            (Some(addr), None) => {
                let hdrs = headers_for_try(&mut headers, !last && !has_body);
                let b = body.take().unwrap_or_else(body::empty);
                via_client(sh, &addr.to_string(), fwd, hdrs, b).await
            }
            (None, None) => Tried::Final(status(StatusCode::SERVICE_UNAVAILABLE)),
        };
        sh.metrics.upstream_inflight.dec();
        // Whether the request can go again: nothing of its body is gone.
        let replayable = !has_body || body.is_some();
        let again = |reached: bool| {
            !last
                && replayable
                && rules
                    .timeout
                    .zip(started)
                    .is_none_or(|(t, at)| at.elapsed() < t)
                && (!reached || rules.non_idempotent || !nginx_non_idempotent(fwd.method))
        };
        match tried {
            Tried::Answer(resp, up) => {
                if up.is_none() && rules.retries_status(resp.status().as_u16()) && again(true) {
                    tracing::debug!(upstream = ?endpoint, status = %resp.status(), "next upstream");
                } else {
                    return (Ok(resp), up);
                }
            }
            Tried::Final(resp) => return (Err(resp), None),
            Tried::Failed {
                kind,
                reached,
                answer,
            } => {
                if !reached {
                    sh.metrics.connect_errors.inc();
                }
                let wanted = match kind {
                    Failure::Error => rules.on_error,
                    Failure::Timeout => rules.on_timeout,
                };
                if !(wanted && again(reached)) {
                    return (Err(answer), None);
                }
            }
        }
        attempt += 1;
    }
}

/// However large proxy-next-upstream-tries is, a request tries each
/// endpoint at most this often: ingress-nginx's default of 3 then still
/// means 3 tries of a Service's only endpoint, and a typo such as 30000
/// cannot keep one request failing against a closed port.
const MAX_TRIES_PER_ENDPOINT: usize = 3;

/// The headers for one try: a copy when a later try may still need them
/// (`keep`; only a request without a body is ever sent again through
/// hyper-util's client, which takes the body), else the headers themselves.
fn headers_for_try(headers: &mut http::HeaderMap, keep: bool) -> http::HeaderMap {
    if keep {
        headers.clone()
    } else {
        std::mem::take(headers)
    }
}

/// The methods nginx never passes to a next upstream once they reached one,
/// unless `non_idempotent` is in proxy-next-upstream.
fn nginx_non_idempotent(m: &Method) -> bool {
    *m == Method::POST || *m == Method::PATCH || m.as_str() == "LOCK"
}

/// Where an affinity cookie is set.
struct Cookie<'a> {
    /// The path of the route that set it.
    route_path: &'a str,
    kind: PathKind,
    /// It is set over HTTPS.
    tls: bool,
    /// The client is no browser that mistakes `SameSite=None` for Strict.
    same_site_ok: bool,
}

impl Cookie<'_> {
    /// The Set-Cookie value pinning a client to `addr`, with ingress-nginx's
    /// attributes in its order: the path defaults to the route's own (so two
    /// sticky paths on one host keep separate cookies; `/` for regex paths),
    /// and the cookie is Secure over HTTPS or when session-cookie-secure says.
    fn set_cookie(
        &self,
        a: &model::ingress::CookieAffinity,
        addr: &SocketAddr,
        now: SystemTime,
    ) -> String {
        use std::fmt::Write;
        let path = match (&a.path, self.kind) {
            (Some(p), _) => p.as_str(),
            (None, PathKind::Regex) => "/",
            (None, _) if self.route_path.is_empty() => "/",
            (None, _) => self.route_path,
        };
        let mut c = format!("{}={}", a.name, cookie_value(addr));
        // The model caps `expires` at 100 years, so the date stays one an
        // HTTP date can hold (they end in year 9999).
        let expires = a
            .expires
            .and_then(|secs| now.checked_add(std::time::Duration::from_secs(secs)));
        if let Some(at) = expires {
            let _ = write!(c, "; Expires={}", httpdate::fmt_http_date(at));
        }
        if let Some(age) = a.max_age {
            let _ = write!(c, "; Max-Age={age}");
        }
        let _ = write!(c, "; Path={path}");
        if self.tls || a.secure {
            c.push_str("; Secure");
        }
        c.push_str("; HttpOnly");
        match a.same_site {
            Some(SameSite::None) if !self.same_site_ok => {}
            Some(s) => {
                let _ = write!(c, "; SameSite={}", s.as_str());
            }
            None => {}
        }
        c
    }
}

/// How a try failed, in the terms proxy-next-upstream names.
enum Failure {
    Error,
    Timeout,
}

/// What one try at one endpoint came to.
enum Tried {
    /// The upstream answered (and how to reach it for a protocol switch).
    Answer(Response<Body>, Option<UpstreamUpgrade>),
    /// The endpoint failed before a response head: `reached` when the
    /// request (or part of it) may have got there; `answer` is what the
    /// client gets if no other endpoint is tried.
    Failed {
        kind: Failure,
        reached: bool,
        answer: Response<Body>,
    },
    /// Final whatever the retry rules say (the client's own body failed).
    Final(Response<Body>),
}

/// The upstream side of a 101, by the client that got it.
enum UpstreamUpgrade {
    Direct(h1::Tunnel),
    Client(hyper::upgrade::OnUpgrade),
}

async fn via_h1(
    sh: &Shared,
    addr: SocketAddr,
    fwd: &Forward<'_>,
    headers: &http::HeaderMap,
    body: &mut Option<Body>,
) -> Tried {
    let ann = fwd.ann;
    let ex = h1::Exchange {
        method: fwd.method,
        target: fwd.target,
        headers,
        connect_timeout: ann.connect_timeout,
        read_timeout: ann.read_timeout,
        send_timeout: ann.send_timeout,
        upgrade: fwd.upgrade,
    };
    match h1::send(&sh.h1, addr, &ex, body).await {
        Ok(h1::Answer::Response(r)) => {
            Tried::Answer(r.map(|b| Idle::wrap(b, ann.read_timeout)), None)
        }
        Ok(h1::Answer::Switched(r, tunnel)) => Tried::Answer(
            r.map(|()| body::empty()),
            Some(UpstreamUpgrade::Direct(tunnel)),
        ),
        Err(h1::Error::Connect(e)) => {
            tracing::warn!(upstream = %addr, error = %e, "connect to endpoint failed");
            unreachable(e.kind() == std::io::ErrorKind::TimedOut)
        }
        Err(h1::Error::ReadTimeout | h1::Error::SendTimeout) => Tried::Failed {
            kind: Failure::Timeout,
            reached: true,
            answer: status(StatusCode::GATEWAY_TIMEOUT),
        },
        Err(h1::Error::RequestBody(e)) => Tried::Final(request_body_failed(&*e)),
        Err(h1::Error::Upstream(e)) => {
            tracing::warn!(upstream = %addr, error = %source_chain(&*e), "upstream request failed");
            Tried::Failed {
                kind: Failure::Error,
                reached: true,
                answer: status(StatusCode::BAD_GATEWAY),
            }
        }
    }
}

/// The endpoint could not be reached: nothing of the request got there.
fn unreachable(timed_out: bool) -> Tried {
    let (kind, code) = match timed_out {
        true => (Failure::Timeout, StatusCode::GATEWAY_TIMEOUT),
        false => (Failure::Error, StatusCode::BAD_GATEWAY),
    };
    Tried::Failed {
        kind,
        reached: false,
        answer: status(code),
    }
}

async fn via_client(
    sh: &Shared,
    authority: &str,
    fwd: &Forward<'_>,
    headers: http::HeaderMap,
    body: Body,
) -> Tried {
    let ann = fwd.ann;
    let Ok(uri) = Uri::builder()
        .scheme(if ann.backend_protocol.is_tls() {
            "https"
        } else {
            "http"
        })
        .authority(authority)
        .path_and_query(fwd.target.clone())
        .build()
    else {
        return Tried::Final(status(StatusCode::BAD_REQUEST));
    };
    let (body, sent) = if body.is_end_stream() {
        (body, None)
    } else {
        let (body, sent, progress) = Watched::wrap(body);
        (body, Some((sent, progress)))
    };
    let mut up = Request::new(body);
    *up.method_mut() = fwd.method.clone();
    *up.uri_mut() = uri;
    *up.version_mut() = if ann.backend_protocol.is_h2() {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *up.headers_mut() = headers;
    let read_deadline = upstream_deadline(sent, ann);
    let client = sh
        .upstream
        .client(ann.connect_timeout, ann.backend_protocol);
    let answer = tokio::select! {
        r = client.request(up) => Some(r),
        () = read_deadline => None,
    };
    match answer {
        None => Tried::Failed {
            kind: Failure::Timeout,
            reached: true,
            answer: status(StatusCode::GATEWAY_TIMEOUT),
        },
        Some(Err(e)) if e.is_connect() => {
            tracing::warn!(upstream = %authority, error = %source_chain(&e), "connect to endpoint failed");
            unreachable(is_timeout(&e))
        }
        Some(Err(e)) => {
            if has_source::<LengthLimitError>(&e) || has_source::<IdleTimeout>(&e) {
                return Tried::Final(request_body_failed(&e));
            }
            tracing::warn!(upstream = %authority, error = %source_chain(&e), "upstream request failed");
            Tried::Failed {
                kind: Failure::Error,
                reached: true,
                answer: status(StatusCode::BAD_GATEWAY),
            }
        }
        Some(Ok(resp)) => {
            let mut resp = resp;
            let up = (resp.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| UpstreamUpgrade::Client(hyper::upgrade::on(&mut resp)));
            Tried::Answer(
                resp.map(|b| Idle::wrap(body::unboxed(b), ann.read_timeout)),
                up,
            )
        }
    }
}

/// The client's own body failed: too large (413) or stalled (408); either
/// way its framing is lost, so the connection closes.
fn request_body_failed(e: &(dyn std::error::Error + 'static)) -> Response<Body> {
    if has_source::<LengthLimitError>(e) {
        status_close(StatusCode::PAYLOAD_TOO_LARGE)
    } else if has_source::<IdleTimeout>(e) {
        status_close(StatusCode::REQUEST_TIMEOUT)
    } else {
        status_close(StatusCode::BAD_REQUEST)
    }
}

/// When a request through hyper-util's client has waited too long for its
/// response head. While the body goes out, an upstream that takes none of
/// it for proxy-send-timeout ends it (504), as nginx's timer between two
/// writes; before the body is first polled, connect (and TLS) come first.
/// A slow client is its body's own idle timeout, not the upstream's fault.
/// Once the body is through, proxy-read-timeout.
async fn upstream_deadline(
    sent: Option<(tokio::sync::oneshot::Receiver<()>, Arc<body::Progress>)>,
    ann: &model::ingress::Annotations,
) {
    if let Some((mut sent, progress)) = sent {
        let begun = std::time::Instant::now();
        loop {
            let until = match progress.last() {
                None => begun + ann.connect_timeout + ann.send_timeout,
                Some(t) => t + ann.send_timeout,
            };
            let now = std::time::Instant::now();
            if now >= until && !progress.waiting_for_data() {
                return;
            }
            // Look again after at most one send timeout: the body may
            // start, or the client may send again, before `until`.
            let wake = if now >= until {
                now + ann.send_timeout
            } else {
                until.min(now + ann.send_timeout)
            };
            tokio::select! {
                _ = &mut sent => break,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
    tokio::time::sleep(ann.read_timeout).await;
}

/// The request target sent upstream: the rewrite-target if the route has
/// one, else the request's own when routing changed nothing, else exactly
/// the normalized path that was routed (a backend must never see `..` or
/// `%2f`), with the query.
fn upstream_target(route: &Route, norm: &str, uri: &Uri) -> PathAndQuery {
    let query = uri.query();
    match route.rewrite(norm) {
        // Captures come from the decoded path: encode them back for the URI.
        Some(Rewritten { path, query: None }) => with_query(&encode_path(&path), query),
        // nginx's rewrite: the template's arguments, then the request's
        // (`?` alone drops them).
        Some(Rewritten {
            path,
            query: Some(q),
        }) => {
            let q = match (q, query) {
                (q, Some(orig)) if !q.is_empty() => Some(format!("{q}&{orig}")),
                (q, _) if !q.is_empty() => Some(q),
                _ => None,
            };
            with_query(&encode_path(&path), q.as_deref())
        }
        None if norm == uri.path() => match uri.path_and_query() {
            Some(pq) => pq.clone(),
            None => PathAndQuery::from_static("/"),
        },
        None => with_query(&encode_path(norm), query),
    }
}

fn with_query(path: &str, query: Option<&str>) -> PathAndQuery {
    let s = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    // The pieces come from a parsed URI or an encoded path; a rewrite
    // template with bytes a URI cannot hold falls back to "/".
    PathAndQuery::try_from(s).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

fn has_source<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

fn finish(
    resp: Response<Body>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    up: Option<UpstreamUpgrade>,
    set_cookie: Option<String>,
) -> Response<Body> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let (Some(down), Some(up)) = (on_upgrade, up) {
        // The tunnel lives outside any Snapshot: a reload never cuts it.
        tokio::spawn(async move {
            let Ok(d) = down.await else { return };
            let d = TokioIo::new(d);
            let r = match up {
                UpstreamUpgrade::Direct(t) => t.run(d).await,
                UpstreamUpgrade::Client(u) => match u.await {
                    Ok(u) => {
                        let (mut d, mut u) = (d, TokioIo::new(u));
                        tokio::io::copy_bidirectional(&mut d, &mut u)
                            .await
                            .map(|_| ())
                    }
                    Err(_) => return,
                },
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching, false);
    if let Some(c) = set_cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        parts.headers.append(SET_COOKIE, v);
    }
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::ingress::CookieAffinity;

    fn affinity() -> CookieAffinity {
        CookieAffinity {
            name: "route".into(),
            path: None,
            max_age: Some(60),
            expires: None,
            secure: false,
            same_site: None,
            conditional_same_site_none: false,
            change_on_failure: false,
        }
    }

    fn at<'a>(route_path: &'a str, kind: PathKind, tls: bool) -> Cookie<'a> {
        Cookie {
            route_path,
            kind,
            tls,
            same_site_ok: true,
        }
    }

    #[test]
    fn affinity_cookie_attributes_follow_ingress_nginx() {
        let a = affinity();
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v = cookie_value(&addr);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            at("/shop", PathKind::Prefix, false).set_cookie(&a, &addr, now),
            format!("route={v}; Max-Age=60; Path=/shop; HttpOnly")
        );
        assert_eq!(
            at("/shop/(.*)", PathKind::Regex, true).set_cookie(&a, &addr, now),
            format!("route={v}; Max-Age=60; Path=/; Secure; HttpOnly"),
            "a regex is no cookie path; HTTPS makes it Secure"
        );
        assert_eq!(
            at("", PathKind::Prefix, false).set_cookie(&a, &addr, now),
            format!("route={v}; Max-Age=60; Path=/; HttpOnly"),
            "defaultBackend"
        );
        let set = CookieAffinity {
            path: Some("/x".into()),
            max_age: None,
            expires: Some(3600),
            secure: true,
            same_site: Some(SameSite::Lax),
            ..affinity()
        };
        assert_eq!(
            at("/shop", PathKind::Prefix, false).set_cookie(&set, &addr, now),
            format!(
                "route={v}; Expires=Thu, 01 Jan 1970 01:00:00 GMT; Path=/x; Secure; HttpOnly; SameSite=Lax"
            )
        );
        // The longest lifetime the model keeps still makes a date from now.
        let longest = CookieAffinity {
            expires: Some(model::ingress::annotations::MAX_COOKIE_SECONDS),
            ..affinity()
        };
        let c = at("/", PathKind::Prefix, false).set_cookie(&longest, &addr, SystemTime::now());
        assert!(c.contains("; Expires=") && c.contains(" 212"), "{c}");
        let none = CookieAffinity {
            same_site: Some(SameSite::None),
            max_age: None,
            ..affinity()
        };
        let old_browser = Cookie {
            same_site_ok: false,
            ..at("/", PathKind::Prefix, true)
        };
        assert_eq!(
            old_browser.set_cookie(&none, &addr, now),
            format!("route={v}; Path=/; Secure; HttpOnly")
        );
        assert!(
            at("/", PathKind::Prefix, true)
                .set_cookie(&none, &addr, now)
                .ends_with("; SameSite=None")
        );
    }
}
