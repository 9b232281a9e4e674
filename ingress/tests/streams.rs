//! Long-lived and large traffic: WebSocket passthrough, h2c and gRPC-style
//! trailers, 100 MB streamed both ways, reloads under load, graceful shutdown.

mod common;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "connection closed in the head"
        );
        buf.push(b[0]);
    }
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn websocket_passthrough_survives_reload() {
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("i", "", &[("Prefix", "/", "web")], &[]);
    let mut p = Plane::start(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let mut echo = [0u8; 5];
    s.write_all(b"hello").await.unwrap();
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    // Routes change and the endpoint leaves the Service: the open tunnel is not cut.
    p.apply(
        "test.yaml",
        &(service("web", &[]) + &ingress("i", "", &[("Prefix", "/other", "web")], &[])),
    )
    .await;
    assert_eq!(get(p.http, "x", "/").await.status, StatusCode::NOT_FOUND);
    s.write_all(b"again").await.unwrap();
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"again");
}

#[tokio::test]
async fn h2c_downstream_and_grpc_upstream_with_trailers() {
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress("h1", "h1.test", &[("Prefix", "/", "web")], &[])
        + &ingress(
            "g",
            "g.test",
            &[("Prefix", "/", "web")],
            &[("backend-protocol", "GRPC")],
        );
    let p = Plane::start(&yaml).await;
    let tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get2 = |host: &str, path: &str| {
        http::Request::get(format!("http://{host}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // h2c in, HTTP/1.1 to a plain backend.
    let r = send.send_request(get2("h1.test", "/x")).await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    let body =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        body.contains("version=HTTP/1.1") && body.contains("host: h1.test"),
        "{body}"
    );
    // Cookies split into HTTP/2 fields reach an HTTP/1.1 backend as one line.
    let mut req = get2("h1.test", "/x");
    req.headers_mut().append("cookie", "a=1".parse().unwrap());
    req.headers_mut().append("cookie", "b=2".parse().unwrap());
    let r = send.send_request(req).await.unwrap();
    let body =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(body.matches("cookie: ").count(), 1, "{body}");
    assert!(body.contains("cookie: a=1; b=2\n"), "{body}");
    // backend-protocol GRPC: HTTP/2 to the backend, trailers come back.
    let r = send.send_request(get2("g.test", "/x")).await.unwrap();
    let body =
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(body.contains("version=HTTP/2.0"), "{body}");
    let mut req = get2("g.test", "/trailers");
    req.headers_mut().insert("te", "trailers".parse().unwrap());
    let r = send.send_request(req).await.unwrap();
    let collected = r.into_body().collect().await.unwrap();
    assert_eq!(
        collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap()),
        Some("0")
    );
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"payload"));
}

#[tokio::test]
async fn streams_100_mb_up_and_down() {
    const N: u64 = 100 * 1024 * 1024;
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress(
            "i",
            "",
            &[("Prefix", "/", "web")],
            &[("proxy-body-size", "0")],
        );
    let p = Plane::start(&yaml).await;
    let mut send = h1::<Zeros>(p.http).await;
    let req = http::Request::post("/upload")
        .header("host", "x")
        .header("content-length", N.to_string())
        .body(Zeros(N))
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(std::str::from_utf8(&body).unwrap(), format!("a got {N}"));
    let req = http::Request::get(format!("/download?n={N}"))
        .header("host", "x")
        .body(Zeros(0))
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.headers()["content-length"], N.to_string().as_str());
    let mut body = r.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        got += f.unwrap().data_ref().map(|d| d.len() as u64).unwrap_or(0);
    }
    assert_eq!(got, N);
}

#[tokio::test]
async fn reload_under_traffic_fails_no_request() {
    let (a, b) = (backend("a").await, backend("b").await);
    let ing = |svc: &str| ingress("i", "", &[("Prefix", "/", svc)], &[]);
    let base = service("sa", &[a]) + &service("sb", &[b]);
    let mut p = Plane::start(&(base.clone() + &ing("sa"))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, names_b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, names_b, addr) = (stop.clone(), ok.clone(), names_b.clone(), p.http);
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = get(addr, "x", "/").await;
                if r.status != StatusCode::OK {
                    failures.push(r.status);
                }
                ok.fetch_add(1, Ordering::Relaxed);
                if r.field("name") == Some("b") {
                    names_b.fetch_add(1, Ordering::Relaxed);
                }
            }
            failures
        }));
    }
    for i in 0..20 {
        let before = ok.load(Ordering::Relaxed);
        p.apply(
            "test.yaml",
            &(base.clone() + &ing(if i % 2 == 0 { "sb" } else { "sa" })),
        )
        .await;
        let okc = ok.clone();
        wait_for(Duration::from_secs(10), "requests after a reload", || {
            let okc = okc.clone();
            async move { okc.load(Ordering::Relaxed) > before + 5 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert_eq!(w.await.unwrap(), Vec::<StatusCode>::new());
    }
    assert!(
        names_b.load(Ordering::Relaxed) > 0,
        "reloads switched the route"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("i", "", &[("Prefix", "/", "web")], &[]);
    let mut p = Plane::start(&yaml).await;
    let addr = p.http;
    let inflight = tokio::spawn(async move { get(addr, "x", "/slow").await });
    // Wait until the request is at the backend (the in-flight gauge shows it).
    let reg = &p;
    wait_for(
        Duration::from_secs(10),
        "the slow request in flight",
        || async move {
            reg.metrics()
                .contains("nodeway_ingress_upstream_in_flight 1")
        },
    )
    .await;
    p.handle
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(20))
        .await;
    let r = inflight.await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "slow"));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn body_limit_mid_stream_and_stalled_response_body() {
    let a = backend("a").await;
    let yaml = service("web", &[a])
        + &ingress(
            "small",
            "small.test",
            &[("Prefix", "/", "web")],
            &[("proxy-body-size", "1m")],
        )
        + &ingress(
            "slow",
            "slow.test",
            &[("Prefix", "/", "web")],
            &[("proxy-read-timeout", "1")],
        );
    let p = Plane::start(&yaml).await;
    // A chunked upload (no Content-Length) over the limit is cut off with 413.
    let mut send = h1::<Unsized>(p.http).await;
    let req = http::Request::post("/upload")
        .header("host", "small.test")
        .body(Unsized(Zeros(4 << 20)))
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Under the limit it passes.
    let mut send = h1::<Unsized>(p.http).await;
    let req = http::Request::post("/upload")
        .header("host", "small.test")
        .body(Unsized(Zeros(1000)))
        .unwrap();
    let r = send.send_request(req).await.unwrap();
    assert_eq!(
        r.into_body().collect().await.unwrap().to_bytes(),
        Bytes::from_static(b"a got 1000")
    );
    // Head arrives, then the body stalls past proxy-read-timeout: the response is aborted.
    let mut send = h1::<Empty<Bytes>>(p.http).await;
    let r = send
        .send_request(
            http::Request::get("/stall")
                .header("host", "slow.test")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.into_body().collect().await.is_err(),
        "a stalled body is cut, not waited on forever"
    );
}
