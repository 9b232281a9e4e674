//! ingress-nginx annotations, end to end.

mod common;
use common::*;
use http::StatusCode;
use std::collections::HashSet;

#[tokio::test]
async fn rewrite_target_with_captures_keeps_query() {
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress(
            "rw",
            "x.test",
            &[("ImplementationSpecific", "/something(/|$)(.*)", "web")],
            &[("rewrite-target", "/$2")],
        )
        + &ingress("plain", "x.test", &[("Prefix", "/keep", "web")], &[]);
    let p = Plane::start(&yaml).await;
    assert_eq!(
        get(p.http, "x.test", "/something/new/path?a=1")
            .await
            .field("uri"),
        Some("/new/path?a=1")
    );
    assert_eq!(
        get(p.http, "x.test", "/something").await.field("uri"),
        Some("/")
    );
    // A decoded capture is re-encoded, never spliced raw into the URI.
    assert_eq!(
        get(p.http, "x.test", "/something/a%20b%3Fc")
            .await
            .field("uri"),
        Some("/a%20b%3Fc")
    );
    assert_eq!(
        get(p.http, "x.test", "/keep/x").await.field("uri"),
        Some("/keep/x")
    );
}

#[tokio::test]
async fn rewrite_target_with_its_own_query_puts_the_request_arguments_after() {
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress(
            "q",
            "q.test",
            &[("ImplementationSpecific", "/s/(.*)", "web")],
            &[("rewrite-target", "/search?q=$1")],
        )
        + &ingress(
            "drop",
            "d.test",
            &[("ImplementationSpecific", "/d/(.*)", "web")],
            &[("rewrite-target", "/plain/$1?")],
        );
    let p = Plane::start(&yaml).await;
    let uri = |host: &'static str, path: &'static str| async move {
        get(p.http, host, path)
            .await
            .field("uri")
            .map(str::to_string)
    };
    assert_eq!(
        uri("q.test", "/s/foo?x=1").await.as_deref(),
        Some("/search?q=foo&x=1")
    );
    assert_eq!(
        uri("q.test", "/s/foo").await.as_deref(),
        Some("/search?q=foo")
    );
    // A capture cannot add parameters of its own.
    assert_eq!(
        uri("q.test", "/s/a%26b%3Dc").await.as_deref(),
        Some("/search?q=a%26b%3Dc")
    );
    // A template ending in `?` drops the request's arguments, as in nginx.
    assert_eq!(uri("d.test", "/d/x?y=1").await.as_deref(), Some("/plain/x"));
}

#[tokio::test]
async fn redirects_app_root_permanent_temporal() {
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress(
            "root",
            "r.test",
            &[("Prefix", "/", "web")],
            &[("app-root", "/app1")],
        )
        + &ingress(
            "perm",
            "p.test",
            &[("Prefix", "/", "web")],
            &[("permanent-redirect", "https://new.test/x")],
        )
        + &ingress(
            "code",
            "c.test",
            &[("Prefix", "/", "web")],
            &[
                ("permanent-redirect", "https://new.test/y"),
                ("permanent-redirect-code", "308"),
            ],
        )
        + &ingress(
            "temp",
            "t.test",
            &[("Prefix", "/", "web")],
            &[("temporal-redirect", "/elsewhere")],
        )
        + &ingress(
            "vars",
            "v.test",
            &[("Prefix", "/", "web")],
            &[(
                "permanent-redirect",
                "$scheme://new.test$request_uri&from=$host&u=${http_x_user}&a=$arg_b",
            )],
        );
    let p = Plane::start(&yaml).await;
    // Absolute, as ingress-nginx sends it: $scheme://$http_host<app-root>.
    let r = get(p.http, "r.test", "/").await;
    assert_eq!(
        (r.status, r.headers["location"].to_str().unwrap()),
        (StatusCode::FOUND, "http://r.test/app1")
    );
    let r = get(p.http, "r.test:8080", "/").await;
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        "http://r.test:8080/app1"
    );
    assert_eq!(
        get(p.http, "r.test", "/app1").await.field("uri"),
        Some("/app1")
    );
    let r = get(p.http, "p.test", "/any").await;
    assert_eq!(
        (r.status, r.headers["location"].to_str().unwrap()),
        (StatusCode::MOVED_PERMANENTLY, "https://new.test/x")
    );
    assert_eq!(
        get(p.http, "c.test", "/").await.status,
        StatusCode::PERMANENT_REDIRECT
    );
    let r = get(p.http, "t.test", "/any").await;
    assert_eq!(
        (r.status, r.headers["location"].to_str().unwrap()),
        (StatusCode::FOUND, "/elsewhere")
    );
    // nginx variables, as ingress-nginx users write them.
    let r = send(
        p.http,
        "GET",
        "V.test:8080",
        "/p/q?b=2",
        &[("x-user", "ann")],
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.headers["location"].to_str().unwrap()),
        (
            StatusCode::MOVED_PERMANENTLY,
            "http://new.test/p/q?b=2&from=v.test&u=ann&a=2"
        )
    );
}

#[tokio::test]
async fn a_redirect_with_an_unknown_nginx_variable_is_a_config_error() {
    let yaml = ingress(
        "bad",
        "b.test",
        &[("Prefix", "/", "web")],
        &[("permanent-redirect", "https://x.test$no_such_var")],
    );
    let mut b = model::Builder::new(model::CompileOptions::default());
    b.update_file(std::path::Path::new("bad.yaml"), Some(yaml.as_bytes()));
    let snap = b.build();
    let errs: Vec<String> = snap.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        errs.iter().any(|e| e.contains("permanent-redirect")
            && e.contains("unknown nginx variable $no_such_var")),
        "{errs:?}"
    );
}

#[tokio::test]
async fn whitelist_vhost_prefix_and_body_size() {
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress(
            "deny",
            "deny.test",
            &[("Prefix", "/", "web")],
            &[("whitelist-source-range", "198.51.100.0/24,203.0.113.0/24")],
        )
        + &ingress(
            "allow",
            "allow.test",
            &[("Prefix", "/", "web")],
            &[("whitelist-source-range", "198.51.100.0/24, 127.0.0.0/8")],
        )
        + &ingress(
            "vh",
            "vh.test",
            &[("Prefix", "/", "web")],
            &[
                ("upstream-vhost", "internal.svc"),
                ("x-forwarded-prefix", "/api"),
            ],
        )
        + &ingress(
            "small",
            "small.test",
            &[("Prefix", "/", "web")],
            &[("proxy-body-size", "8")],
        );
    let p = Plane::start(&yaml).await;
    assert_eq!(
        get(p.http, "deny.test", "/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(p.http, "allow.test", "/").await.status, StatusCode::OK);
    let r = get(p.http, "vh.test", "/").await;
    assert_eq!(r.field("host"), Some("internal.svc"));
    assert_eq!(r.field("x-forwarded-host"), Some("vh.test"));
    assert_eq!(r.field("x-forwarded-prefix"), Some("/api"));
    assert_eq!(
        send(p.http, "POST", "small.test", "/", &[], "12345678")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(p.http, "POST", "small.test", "/", &[], "123456789")
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn canary_by_header_cookie_and_weight() {
    let (main, can) = (backend("main").await, backend("canary").await);
    let yaml = service("main", &[main])
        + &service("can", &[can])
        + &ingress("m", "x.test", &[("Prefix", "/", "main")], &[])
        + &ingress(
            "c",
            "x.test",
            &[("Prefix", "/", "can")],
            &[
                ("canary", "true"),
                ("canary-by-header", "x-canary"),
                ("canary-by-cookie", "beta"),
                ("canary-weight", "0"),
            ],
        )
        + &ingress("m2", "w.test", &[("Prefix", "/", "main")], &[])
        + &ingress(
            "c2",
            "w.test",
            &[("Prefix", "/", "can")],
            &[("canary", "true"), ("canary-weight", "50")],
        );
    let p = Plane::start(&yaml).await;
    let name = |r: Resp| r.field("name").unwrap_or("-").to_string();
    assert_eq!(name(get(p.http, "x.test", "/").await), "main");
    assert_eq!(
        name(send(p.http, "GET", "x.test", "/", &[("x-canary", "always")], "").await),
        "canary"
    );
    assert_eq!(
        name(send(p.http, "GET", "x.test", "/", &[("x-canary", "never")], "").await),
        "main"
    );
    let cookie = |v| [("cookie", v)];
    assert_eq!(
        name(
            send(
                p.http,
                "GET",
                "x.test",
                "/",
                &cookie("a=1; beta=always"),
                ""
            )
            .await
        ),
        "canary"
    );
    assert_eq!(
        name(send(p.http, "GET", "x.test", "/", &cookie("beta=never"), "").await),
        "main"
    );
    let mut seen = HashSet::new();
    for _ in 0..60 {
        seen.insert(name(get(p.http, "w.test", "/").await));
    }
    assert_eq!(seen.len(), 2, "weight 50 reaches both: {seen:?}");
}

#[tokio::test]
async fn affinity_cookie_sticks_to_one_endpoint() {
    let (a, b) = (backend("a").await, backend("b").await);
    let yaml = service("web", &[a, b])
        + &ingress(
            "s",
            "",
            &[("Prefix", "/", "web")],
            &[("affinity", "cookie"), ("session-cookie-name", "route")],
        );
    let p = Plane::start(&yaml).await;
    let r = get(p.http, "h", "/").await;
    let first = r.field("name").unwrap().to_string();
    let cookie = r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("route="), "{cookie}");
    for _ in 0..10 {
        let r = send(p.http, "GET", "h", "/", &[("cookie", &cookie)], "").await;
        assert_eq!(r.field("name"), Some(first.as_str()));
        assert!(!r.headers.contains_key("set-cookie"));
    }
    // Without the cookie, round-robin still spreads new clients.
    let names: HashSet<_> = futures_names(p.http).await;
    assert_eq!(names.len(), 2);
}

async fn futures_names(addr: std::net::SocketAddr) -> HashSet<String> {
    let mut s = HashSet::new();
    for _ in 0..4 {
        s.insert(get(addr, "h", "/").await.field("name").unwrap().to_string());
    }
    s
}

#[tokio::test]
async fn backend_protocol_https_and_grpcs() {
    let a = tls_backend("secure").await;
    let yaml = service("web", &[a])
        + &ingress(
            "s",
            "s.test",
            &[("Prefix", "/", "web")],
            &[("backend-protocol", "HTTPS")],
        )
        + &ingress(
            "g",
            "g.test",
            &[("Prefix", "/", "web")],
            &[("backend-protocol", "GRPCS")],
        )
        + &ingress("p", "p.test", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    let r = get(p.http, "s.test", "/x").await;
    assert_eq!(
        (r.status, r.field("name"), r.field("version")),
        (StatusCode::OK, Some("secure"), Some("HTTP/1.1"))
    );
    let r = get(p.http, "g.test", "/x").await;
    assert_eq!(
        (r.status, r.field("version")),
        (StatusCode::OK, Some("HTTP/2.0"))
    );
    // Plain HTTP to a TLS endpoint is not a valid answer: 502.
    assert_eq!(
        get(p.http, "p.test", "/x").await.status,
        StatusCode::BAD_GATEWAY
    );
}

/// Sends `left` chunks of 1 KiB, `gap` apart: an upload that flows,
/// slowly. Then it ends, or with `then_stall` sends nothing ever again.
struct Paced {
    left: u32,
    gap: std::time::Duration,
    then_stall: bool,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for Paced {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::future::Future;
        if self.left == 0 {
            return match self.then_stall {
                true => std::task::Poll::Pending,
                false => std::task::Poll::Ready(None),
            };
        }
        let gap = self.gap;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
        std::task::ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(
            bytes::Bytes::from_static(&[b'x'; 1024]),
        ))))
    }
}

impl Paced {
    fn new(left: u32, gap_ms: u64, then_stall: bool) -> Paced {
        Paced {
            left,
            gap: std::time::Duration::from_millis(gap_ms),
            then_stall,
            sleep: None,
        }
    }
}

/// The status a paced upload (`length`: its declared Content-Length) gets
/// through a route to an HTTPS upstream (hyper-util's path) with `timeout`.
async fn paced_upload_to_https(
    timeout: (&str, &str),
    body: Paced,
    length: Option<u64>,
) -> StatusCode {
    let a = tls_backend("secure").await;
    let yaml = service("web", &[a])
        + &ingress(
            "s",
            "s.test",
            &[("Prefix", "/", "web")],
            &[("backend-protocol", "HTTPS"), timeout],
        );
    let p = Plane::start(&yaml).await;
    let mut send = h1::<Paced>(p.http).await;
    let mut req = http::Request::post("/upload").header("host", "s.test");
    if let Some(n) = length {
        req = req.header("content-length", n);
    }
    let req = req.body(body).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), send.send_request(req))
        .await
        .expect("answered")
        .unwrap()
        .status()
}

#[tokio::test]
async fn read_timeout_starts_when_the_upload_ends_on_every_backend_protocol() {
    // 2.4 s of upload, never idle for longer than 300 ms: longer than the
    // read timeout, which must not count while the body still flows.
    let status =
        paced_upload_to_https(("proxy-read-timeout", "1"), Paced::new(8, 300, false), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_pinned_to_the_primary_never_bounces_to_the_canary() {
    let (a, b, can) = (
        backend("a").await,
        backend("b").await,
        backend("canary").await,
    );
    let sticky = [("affinity", "cookie"), ("session-cookie-name", "route")];
    let yaml = service("main", &[a, b])
        + &service("can", &[can])
        + &ingress("m", "p.test", &[("Prefix", "/app", "main")], &sticky)
        + &ingress(
            "c",
            "p.test",
            &[("Prefix", "/app", "can")],
            &[("canary", "true"), ("canary-weight", "50")],
        );
    let p = Plane::start(&yaml).await;
    // A first answer from the primary sets the cookie, for the route's path.
    let (first, cookie) = loop {
        let r = get(p.http, "p.test", "/app/x").await;
        if r.field("name") != Some("canary") {
            let set = r.headers["set-cookie"].to_str().unwrap().to_string();
            assert!(set.contains("; Path=/app;"), "{set}");
            let pair = set.split(';').next().unwrap().to_string();
            break (r.field("name").unwrap().to_string(), pair);
        }
    };
    // With the cookie, weight 50 never moves the client to the canary.
    for _ in 0..30 {
        let r = send(
            p.http,
            "GET",
            "p.test",
            "/app/x",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(r.field("name"), Some(first.as_str()));
        assert!(!r.headers.contains_key("set-cookie"));
    }
}

#[tokio::test]
async fn an_upstream_that_stops_reading_times_out_on_every_backend_protocol() {
    let a = tls_backend("secure").await;
    let mut yaml = service("web", &[a]);
    for (name, proto) in [("s", "HTTPS"), ("g", "GRPCS")] {
        yaml += &ingress(
            name,
            &format!("{name}.test"),
            &[("Prefix", "/", "web")],
            &[
                ("backend-protocol", proto),
                ("proxy-body-size", "0"),
                ("proxy-send-timeout", "1"),
            ],
        );
    }
    let p = Plane::start(&yaml).await;
    for host in ["s.test", "g.test"] {
        // 16 MiB: far more than the buffers and windows between proxy and upstream.
        let resp = post_zeros(p.http, host, "/hang", 16 << 20).await;
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT, "{host}");
    }
}

#[tokio::test]
async fn a_client_that_stalls_its_upload_gets_408_not_504() {
    // The upstream reads all it gets; the client is the one that stopped.
    let stalls = Paced::new(1, 0, true);
    let status = paced_upload_to_https(("proxy-send-timeout", "1"), stalls, Some(4096)).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
}

/// The statuses of `n` requests in a row (round robin alternates the first endpoint tried).
async fn statuses(
    p: &Plane,
    method: &str,
    host: &str,
    path: &str,
    body: &str,
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            send(p.http, method, host, path, &[], body)
                .await
                .status
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn proxy_next_upstream_error_is_the_default_and_off_turns_it_off() {
    let (a, dead) = (backend("a").await, dead_addr().await);
    let yaml = service("web", &[dead, a])
        + &ingress("retry", "on.test", &[("Prefix", "/", "web")], &[])
        + &ingress(
            "noretry",
            "off.test",
            &[("Prefix", "/", "web")],
            &[("proxy-next-upstream", "off")],
        )
        + &ingress(
            "one",
            "one.test",
            &[("Prefix", "/", "web")],
            &[("proxy-next-upstream-tries", "1")],
        );
    let p = Plane::start(&yaml).await;
    assert_eq!(statuses(&p, "GET", "on.test", "/", "", 4).await, [200; 4]);
    // The body was never sent to the dead endpoint: a POST goes on too, whole.
    for _ in 0..4 {
        let r = send(p.http, "POST", "on.test", "/upload", &[], "hello").await;
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "a got 5"));
    }
    for host in ["off.test", "one.test"] {
        let got = statuses(&p, "GET", host, "/", "", 4).await;
        assert_eq!(
            got.iter().filter(|s| **s == 502).count(),
            2,
            "{host}: {got:?}"
        );
    }
}

#[tokio::test]
async fn proxy_next_upstream_on_status_spares_post_unless_non_idempotent() {
    let (a, sick) = (backend("a").await, backend("sick").await);
    let yaml = service("web", &[sick, a])
        + &ingress("plain", "plain.test", &[("Prefix", "/", "web")], &[])
        + &ingress(
            "s",
            "s.test",
            &[("Prefix", "/", "web")],
            &[("proxy-next-upstream", "error timeout http_503")],
        )
        + &ingress(
            "all",
            "all.test",
            &[("Prefix", "/", "web")],
            &[("proxy-next-upstream", "http_503 non_idempotent")],
        );
    let p = Plane::start(&yaml).await;
    let two_of_four = |got: Vec<u16>| got.iter().filter(|s| **s == 503).count() == 2;
    assert!(two_of_four(
        statuses(&p, "GET", "plain.test", "/unhealthy", "", 4).await
    ));
    assert_eq!(
        statuses(&p, "GET", "s.test", "/unhealthy", "", 4).await,
        [200; 4]
    );
    // nginx never repeats a POST that reached an endpoint, by default.
    assert!(two_of_four(
        statuses(&p, "POST", "s.test", "/unhealthy", "", 4).await
    ));
    assert_eq!(
        statuses(&p, "POST", "all.test", "/unhealthy", "", 4).await,
        [200; 4]
    );
}

/// The `name=value` of a Set-Cookie, and which backend answered.
async fn pinned_cookie(p: &Plane, host: &str, to: &str) -> String {
    for _ in 0..20 {
        let r = get(p.http, host, "/").await;
        if r.field("name") == Some(to) {
            let set = r.headers["set-cookie"].to_str().unwrap();
            return set.split(';').next().unwrap().to_string();
        }
    }
    panic!("no answer from {to}");
}

#[tokio::test]
async fn change_on_failure_moves_a_pinned_client_and_its_cookie() {
    let (a, sick) = (backend("a").await, backend("sick-pinned").await);
    let sticky = |change: &'static str| {
        [
            ("affinity", "cookie"),
            ("session-cookie-name", "route"),
            ("proxy-next-upstream", "error timeout http_503"),
            ("session-cookie-change-on-failure", change),
        ]
    };
    let yaml = service("web", &[sick, a])
        + &ingress(
            "stay",
            "stay.test",
            &[("Prefix", "/", "web")],
            &sticky("false"),
        )
        + &ingress(
            "move",
            "move.test",
            &[("Prefix", "/", "web")],
            &sticky("true"),
        );
    let p = Plane::start(&yaml).await;
    // Pinned to "sick-pinned", whose /unhealthy answers 503.
    let cookie = pinned_cookie(&p, "stay.test", "sick-pinned").await;
    let r = send(
        p.http,
        "GET",
        "stay.test",
        "/unhealthy",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "retried on its own endpoint"
    );
    assert!(!r.headers.contains_key("set-cookie"));
    assert_eq!(hits("sick-pinned"), 3, "the default 3 tries, all on it");

    let cookie = pinned_cookie(&p, "move.test", "sick-pinned").await;
    let r = send(
        p.http,
        "GET",
        "move.test",
        "/unhealthy",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!((r.status, r.field("name")), (StatusCode::OK, Some("a")));
    let moved = r.headers["set-cookie"].to_str().unwrap();
    let moved = moved.split(';').next().unwrap().to_string();
    assert_ne!(
        moved, cookie,
        "the cookie follows the endpoint that answered"
    );
    let r = send(p.http, "GET", "move.test", "/", &[("cookie", &moved)], "").await;
    assert_eq!(r.field("name"), Some("a"));
    assert!(!r.headers.contains_key("set-cookie"));
}

#[tokio::test]
async fn proxy_next_upstream_timeout_stops_further_tries() {
    let (a, b) = (backend("limit-a").await, backend("limit-b").await);
    let (c, d) = (backend("free-c").await, backend("free-d").await);
    let yaml = service("limited", &[a, b])
        + &service("free", &[c, d])
        + &ingress(
            "l",
            "limited.test",
            &[("Prefix", "/", "limited")],
            &[
                ("proxy-read-timeout", "1"),
                ("proxy-next-upstream-timeout", "1"),
            ],
        )
        + &ingress(
            "f",
            "free.test",
            &[("Prefix", "/", "free")],
            &[("proxy-read-timeout", "1")],
        );
    let p = Plane::start(&yaml).await;
    let (limited, free) = tokio::join!(
        get(p.http, "limited.test", "/count-slow"),
        get(p.http, "free.test", "/count-slow")
    );
    assert_eq!(limited.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(free.status, StatusCode::GATEWAY_TIMEOUT);
    // The first try used up the second: no other try started.
    assert_eq!(hits("limit-a") + hits("limit-b"), 1);
    // Without a limit, a timeout goes on: three tries, the default.
    assert_eq!(hits("free-c") + hits("free-d"), 3);
}

#[tokio::test]
async fn proxy_next_upstream_tries_are_capped_at_three_per_endpoint() {
    let sick = backend("sick-capped").await;
    let yaml = service("web", &[sick])
        + &ingress(
            "many",
            "many.test",
            &[("Prefix", "/", "web")],
            &[
                ("proxy-next-upstream", "http_503"),
                ("proxy-next-upstream-tries", "30000"),
            ],
        );
    let p = Plane::start(&yaml).await;
    let r = get(p.http, "many.test", "/unhealthy").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits("sick-capped"), 3);
}

#[tokio::test]
async fn cors_headers_replace_the_backends_and_reach_nodeways_own_answers() {
    let (a, dead) = (backend("a").await, dead_addr().await);
    let cors = [
        ("enable-cors", "true"),
        ("cors-allow-origin", "https://app.test"),
    ];
    let mut denied = cors.to_vec();
    denied.push(("whitelist-source-range", "198.51.100.0/24"));
    let yaml = service("web", &[a])
        + &service("gone", &[dead])
        + &ingress("c", "c.test", &[("Prefix", "/", "web")], &cors)
        + &ingress("d", "d.test", &[("Prefix", "/", "web")], &denied)
        + &ingress("g", "g.test", &[("Prefix", "/", "gone")], &cors);
    let p = Plane::start(&yaml).await;
    let origin = [("origin", "https://app.test")];
    let r = send(p.http, "GET", "c.test", "/own-cors", &origin, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let acao: Vec<_> = r
        .headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(acao, ["https://app.test"], "the route's value, alone");
    assert_eq!(r.headers.get_all("vary").iter().count(), 1);
    // nginx's more_set_headers sets them on every status.
    for (host, status) in [
        ("d.test", StatusCode::FORBIDDEN),
        ("g.test", StatusCode::BAD_GATEWAY),
    ] {
        let r = send(p.http, "GET", host, "/", &origin, "").await;
        assert_eq!(r.status, status, "{host}");
        assert_eq!(
            r.headers["access-control-allow-origin"], "https://app.test",
            "{host}"
        );
    }
}
