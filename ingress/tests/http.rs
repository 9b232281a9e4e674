//! Routing, headers and errors through a real listener with hyper clients.

mod common;
use common::*;
use http::StatusCode;
use std::collections::HashSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn forwards_with_proxy_headers() {
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("i", "x.test", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    let r = send(
        p.http,
        "GET",
        "x.test",
        "/some/path?q=1&r=%2F",
        &[
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-request-id", "given"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.field("name"), Some("a"));
    assert_eq!(r.field("uri"), Some("/some/path?q=1&r=%2F"));
    assert_eq!(r.field("version"), Some("HTTP/1.1"));
    assert_eq!(r.field("host"), Some("x.test"));
    assert_eq!(r.field("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.field("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(r.field("x-forwarded-proto"), Some("http"));
    assert_eq!(r.field("x-forwarded-host"), Some("x.test"));
    assert_eq!(
        r.field("x-forwarded-port"),
        Some(p.http.port().to_string().as_str())
    );
    assert_eq!(r.field("x-request-id"), Some("given"));
    assert_eq!(
        r.field("x-secret"),
        None,
        "a header named by Connection is hop-by-hop"
    );
    assert_eq!(r.version, http::Version::HTTP_11);
    assert_eq!(r.headers["server"], "nodeway");
    assert!(r.headers.contains_key("date"));
    assert_eq!(
        r.headers["content-length"],
        r.body.len().to_string().as_str()
    );
    // A request id is generated when absent.
    let r = get(p.http, "x.test", "/").await;
    assert_eq!(r.field("x-request-id").map(str::len), Some(32));
}

#[tokio::test]
async fn not_found_and_normalization_guards_prefixes() {
    let a = backend("public").await;
    let yaml = service("web", &[a]) + &ingress("i", "x.test", &[("Prefix", "/public", "web")], &[]);
    let p = Plane::start(&yaml).await;
    assert_eq!(
        get(p.http, "x.test", "/public/a").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(p.http, "x.test", "/publicity").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(p.http, "other.test", "/public").await.status,
        StatusCode::NOT_FOUND
    );
    for sneaky in [
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/..%2fprivate",
        "/public/%2E%2E%2Fprivate",
    ] {
        assert_eq!(
            get(p.http, "x.test", sneaky).await.status,
            StatusCode::NOT_FOUND,
            "{sneaky}"
        );
    }
    // Climbing above the root is refused outright.
    assert_eq!(
        get(p.http, "x.test", "/public/../../etc").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(p.http, "x.test", "/public/%zz").await.status,
        StatusCode::BAD_REQUEST
    );
    // `..;` is `..` to Java servers: refused, never routed as a name under /public.
    assert_eq!(
        get(p.http, "x.test", "/public/..;/private").await.status,
        StatusCode::BAD_REQUEST
    );
    // What is forwarded is what was routed: dot segments and encoded slashes resolved.
    let r = get(p.http, "x.test", "/public/a/../b%2f..%2fc//d?x=%2e").await;
    assert_eq!(r.field("uri"), Some("/public/c/d?x=%2e"));
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_never_two_requests() {
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("i", "", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    // The connection must be answered once and closed (read to EOF, bounded by a deadline).
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    // hyper answers the first request (as chunked, RFC 9112 §6.3) and closes
    // the connection; the smuggled one is never read.
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(!text.contains("/smuggled"), "{text}");
}

#[tokio::test]
async fn round_robin_reaches_every_endpoint_and_skips_dead_ones() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let dead = dead_addr().await;
    let yaml = service("web", &[a, b, c, dead]) + &ingress("i", "", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let r = get(p.http, "any", "/").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a dead endpoint is retried on the next one"
        );
        seen.insert(r.field("name").unwrap().to_string());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let m = p.metrics();
    assert!(
        m.lines().any(
            |l| l.starts_with("nodeway_ingress_upstream_connect_errors_total ")
                && !l.ends_with(" 0")
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "nodeway_ingress_requests_total{ingress=\"default/i\",host=\"\",status=\"2xx\"} 20"
        ),
        "{m}"
    );
    assert!(
        m.contains("nodeway_ingress_request_duration_seconds_count 20"),
        "{m}"
    );
    // Kept-alive upstream connections are pooled and counted.
    let open: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("nodeway_ingress_upstream_connections "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&open), "{open}");
}

#[tokio::test]
async fn upstream_failures_502_503_504() {
    let slow = backend("slow").await;
    let dead = dead_addr().await;
    let base = service("dead", &[dead])
        + &service("empty", &[])
        + &service("slow", &[slow])
        + &ingress(
            "t",
            "",
            &[("Prefix", "/slow", "slow")],
            &[("proxy-read-timeout", "1")],
        );
    let ghost = ingress("g", "", &[("Prefix", "/ghost", "ghost")], &[]);
    let mut b = model::Builder::new(model::CompileOptions::default());
    b.update_file(
        std::path::Path::new("t.yaml"),
        Some((base.clone() + &ghost).as_bytes()),
    );
    // A missing Service is a warning naming the field (the API server
    // accepts it); the path answers 503.
    let snap = b.build();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    assert!(snap.warnings.iter().any(|w| {
        w.message
            .starts_with("spec.rules[0].http.paths[0].backend.service.name: Service default/ghost")
    }));
    assert!(snap.ingress.find("h", "/ghost").unwrap().backend.is_none());
    let p = Plane::start(
        &(base
            + &ingress(
                "i",
                "",
                &[("Prefix", "/dead", "dead"), ("Prefix", "/empty", "empty")],
                &[],
            )),
    )
    .await;
    assert_eq!(
        get(p.http, "h", "/dead").await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        get(p.http, "h", "/empty").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(p.http, "h", "/slow").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn host_and_path_precedence_end_to_end() {
    let (a, b, c, d) = (
        backend("exact").await,
        backend("wild").await,
        backend("any").await,
        backend("deep").await,
    );
    let yaml = service("a", &[a])
        + &service("b", &[b])
        + &service("c", &[c])
        + &service("d", &[d])
        + &ingress(
            "one",
            "foo.x.test",
            &[
                ("Prefix", "/", "a"),
                ("Prefix", "/deep", "d"),
                ("Exact", "/deep", "a"),
            ],
            &[],
        )
        + &ingress("two", "*.x.test", &[("Prefix", "/", "b")], &[])
        + &ingress("three", "", &[("Prefix", "/", "c")], &[]);
    let p = Plane::start(&yaml).await;
    let name = |r: Resp| r.field("name").unwrap_or("-").to_string();
    assert_eq!(name(get(p.http, "FOO.x.test:80", "/").await), "exact");
    assert_eq!(name(get(p.http, "foo.x.test", "/deep").await), "exact");
    assert_eq!(name(get(p.http, "foo.x.test", "/deep/er").await), "deep");
    assert_eq!(name(get(p.http, "bar.x.test", "/").await), "wild");
    assert_eq!(name(get(p.http, "a.bar.x.test", "/").await), "any");
    assert_eq!(name(get(p.http, "127.0.0.1", "/").await), "any");
    // A "label" a wildcard would take but no DNS name has: refused.
    for host in ["a#b.x.test", "evil@bar.x.test"] {
        assert_eq!(
            get(p.http, host, "/").await.status,
            StatusCode::BAD_REQUEST,
            "{host}"
        );
    }
}

#[tokio::test]
async fn slow_headers_time_out_and_huge_headers_get_431() {
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("i", "", &[("Prefix", "/", "web")], &[]);
    let cfg = ingress::Config {
        header_read_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let p = Plane::start_with(&yaml, cfg).await;
    // A client that connects and never sends a byte is dropped.
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("idle connection closed")
        .unwrap();
    // A beginning of the HTTP/2 preface keeps protocol detection waiting:
    // it is bounded too.
    for start in [&b"P"[..], b"PRI * HTTP/2.0\r\n"] {
        let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
        s.write_all(start).await.unwrap();
        let mut buf = Vec::new();
        // Closed or reset: either way the read ends, and within the deadline.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("a half preface is dropped");
    }
    // Slowloris: a head that never completes is dropped.
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("connection closed")
        .unwrap();
    // A head larger than the limit: 431.
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let big = "a".repeat(100 * 1024);
    s.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test]
async fn external_name_service_is_proxied_by_name() {
    let a = backend("outside").await;
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: default}}\nspec:\n  type: ExternalName\n  externalName: localhost\n  ports: [{{name: http, port: {}}}]\n",
        a.port()
    ) + &ingress("i", "x.test", &[("Prefix", "/", "ext")], &[]);
    let p = Plane::start(&yaml).await;
    let r = get(p.http, "x.test", "/via-name").await;
    assert_eq!(
        (r.status, r.field("name")),
        (StatusCode::OK, Some("outside"))
    );
    assert_eq!(r.field("host"), Some("x.test"));
}
