//! The plain HTTP/1.1 upstream path against a hand-written backend that
//! answers exactly the bytes a test needs: framing, reuse, stale pooled
//! connections, early answers, malformed heads.

mod common;
use common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one request head; `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A backend whose answer depends on the request path; every answer on the
/// default path names the connection (`conn=N`) so reuse is visible.
async fn scripted() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let id = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut served = 0;
                while let Some(head) = read_request(&mut s, &mut buf).await {
                    served += 1;
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let (reply, close): (Vec<u8>, bool) = match path.as_str() {
                        // Takes a second request on a kept-alive connection, then
                        // closes without a byte: the race every pool meets when an
                        // upstream's keep-alive timeout fires as a request leaves.
                        "/flaky" if served > 1 => return,
                        "/chunked" => (
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n".to_vec(),
                            false,
                        ),
                        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), true),
                        "/conn-close" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
                            true,
                        ),
                        // Answers, then closes what the client thinks is a kept-alive connection.
                        "/then-close" => {
                            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), true)
                        }
                        "/truncated" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b".to_vec(),
                            true,
                        ),
                        "/huge-head" => {
                            let mut r = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
                            r.extend(std::iter::repeat_n(b'a', 70 * 1024));
                            r.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
                            (r, true)
                        }
                        "/garbage" => (b"HTTP/1.1 2x0 nope\r\n\r\n".to_vec(), true),
                        // Heads that announce a body that is not there.
                        "/head" => (
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                            false,
                        ),
                        "/no-content" => (
                            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec(),
                            false,
                        ),
                        "/silent" => (Vec::new(), true),
                        // Full duplex: answers at once, then echoes the upload
                        // as it arrives (a streaming echo).
                        "/duplex" => {
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            let start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                            if s.write_all(start).await.is_err() {
                                return;
                            }
                            let mut left = len;
                            let mut chunk = vec![0u8; 16 * 1024];
                            while left > 0 {
                                let n = if buf.is_empty() {
                                    match s.read(&mut chunk).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => n,
                                    }
                                } else {
                                    let n = buf.len().min(chunk.len());
                                    chunk[..n].copy_from_slice(&buf[..n]);
                                    buf.drain(..n);
                                    n
                                };
                                let n = n.min(left);
                                left -= n;
                                let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
                                if s.write_all(&framed).await.is_err() {
                                    return;
                                }
                            }
                            if s.write_all(b"0\r\n\r\n").await.is_err() {
                                return;
                            }
                            continue;
                        }
                        // Takes the head, then neither reads nor answers: a hung pod.
                        "/stalled" => {
                            std::future::pending::<()>().await;
                            return;
                        }
                        // Refuses an upload without reading it.
                        "/early" => (
                            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope".to_vec(),
                            true,
                        ),
                        _ => {
                            let body = format!("conn={id}");
                            (
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                                    .into_bytes(),
                                false,
                            )
                        }
                    };
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                    if close {
                        // Lingering close, as real servers do: closing with
                        // unread input would send a reset that can destroy
                        // the answer before the peer reads it.
                        let _ = s.shutdown().await;
                        let mut sink = [0u8; 65536];
                        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

async fn plane_for(backend: SocketAddr) -> Plane {
    plane_with(backend, &[]).await
}

async fn plane_with(backend: SocketAddr, ann: &[(&str, &str)]) -> Plane {
    let yaml =
        service("raw", &[backend]) + &ingress("i", "raw.test", &[("Prefix", "/", "raw")], ann);
    Plane::start(&yaml).await
}

#[tokio::test]
async fn keep_alive_connections_are_reused_until_the_upstream_says_close() {
    let (be, conns) = scripted().await;
    let p = plane_for(be).await;
    let first = get(p.http, "raw.test", "/").await.body;
    for _ in 0..5 {
        assert_eq!(
            get(p.http, "raw.test", "/").await.body,
            first,
            "one pooled connection"
        );
    }
    // A chunked answer (with trailers) arrives whole and leaves the connection reusable.
    let r = get(p.http, "raw.test", "/chunked").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "hello world"));
    assert_eq!(get(p.http, "raw.test", "/").await.body, first);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // `Connection: close` and close-delimited bodies end the connection.
    assert_eq!(get(p.http, "raw.test", "/conn-close").await.body, "ok");
    let second = get(p.http, "raw.test", "/").await.body;
    assert_ne!(second, first);
    let r = get(p.http, "raw.test", "/until-close").await;
    assert_eq!(r.body, "until close");
    assert_ne!(get(p.http, "raw.test", "/").await.body, second);
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_costs_the_client_nothing() {
    let (be, _) = scripted().await;
    let p = plane_for(be).await;
    // Each answer is followed by the backend closing the connection the
    // proxy pooled; the next request must still succeed, whether the pool
    // noticed the close or the request is replayed on a new connection.
    for i in 0..30 {
        let r = get(p.http, "raw.test", "/then-close").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (StatusCode::OK, "ok"),
            "request {i}"
        );
    }
}

#[tokio::test]
async fn a_request_without_body_is_replayed_when_a_pooled_connection_dies_unanswered() {
    let (be, conns) = scripted().await;
    let p = plane_for(be).await;
    for i in 0..5 {
        let r = get(p.http, "raw.test", "/flaky").await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        5,
        "each replay used a new connection"
    );
    // With a body the request cannot be replayed: 502, as nginx answers.
    let r = send(p.http, "POST", "raw.test", "/flaky", &[], "payload").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_post_that_reached_the_upstream_is_never_sent_twice() {
    let (be, conns) = scripted().await;
    let p = plane_for(be).await;
    // The first request leaves a pooled connection; the upstream takes the
    // bodiless POST on it and dies without answering. It may have acted on
    // it, so the POST must not go again on a new connection.
    assert_eq!(
        get(p.http, "raw.test", "/flaky").await.status,
        StatusCode::OK
    );
    let r = send(p.http, "POST", "raw.test", "/flaky", &[], "").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "no second connection, no replay"
    );
}

#[tokio::test]
async fn a_full_duplex_upstream_gets_the_whole_upload_while_it_answers() {
    let (be, conns) = scripted().await;
    let p = plane_with(be, &[("proxy-body-size", "0")]).await;
    // 4 MiB: far more than the socket buffers, so the upstream's answer
    // starts long before the upload is through.
    let resp = post_zeros(p.http, "raw.test", "/duplex", 4 << 20).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        http_body_util::BodyExt::collect(resp.into_body()),
    )
    .await
    .expect("the echo completes")
    .unwrap()
    .to_bytes();
    assert_eq!(body.len(), 4 << 20, "every byte echoed");
    assert!(body.iter().all(|&b| b == 0));
    // Both directions ended cleanly: the connection is reused.
    assert_eq!(get(p.http, "raw.test", "/").await.body, "conn=1");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_that_stops_reading_an_upload_times_out_with_504() {
    let (be, _) = scripted().await;
    let p = plane_with(be, &[("proxy-body-size", "0"), ("proxy-send-timeout", "1")]).await;
    // 16 MiB: far more than the socket buffers between proxy and upstream.
    let resp = post_zeros(p.http, "raw.test", "/stalled", 16 << 20).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn broken_upstream_answers_are_502_and_truncation_reaches_the_client() {
    let (be, _) = scripted().await;
    let p = plane_for(be).await;
    for path in ["/huge-head", "/garbage", "/silent"] {
        let r = get(p.http, "raw.test", path).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
    }
    // A body cut short must not look complete: the connection closes before
    // the declared length (hyper may drop the buffered head with it).
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /truncated HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the proxy closes the client connection");
    let text = String::from_utf8_lossy(&got);
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            text.ends_with("only ten b"),
            "no more bytes than the upstream sent"
        );
    }
}

#[tokio::test]
async fn an_early_answer_to_an_upload_is_passed_on() {
    let (be, _) = scripted().await;
    let p = plane_with(be, &[("proxy-body-size", "0")]).await;
    // 8 MiB: far more than the socket buffers hold, so the proxy is still
    // sending when the upstream answers and stops reading.
    let resp = post_zeros(p.http, "raw.test", "/early", 8 << 20).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bodiless_answers_end_where_their_head_ends_and_keep_the_connection() {
    let (be, conns) = scripted().await;
    let p = plane_for(be).await;
    // HEAD: the Content-Length describes the GET body; none follows.
    let r = send(p.http, "HEAD", "raw.test", "/head", &[], "").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(
        r.headers["content-length"], "5",
        "HEAD keeps the upstream's length"
    );
    let r = get(p.http, "raw.test", "/no-content").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::NO_CONTENT, ""));
    // Neither left the pooled connection out of step.
    let r = get(p.http, "raw.test", "/").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "conn=1"));
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn expect_100_continue_uploads_go_through() {
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("i", "up.test", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let deadline = std::time::Duration::from_secs(5);
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    // The client waits for 100 Continue before it sends the body.
    while !String::from_utf8_lossy(&got).contains("100 Continue\r\n\r\n") {
        let n = tokio::time::timeout(deadline, s.read(&mut chunk))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before 100 Continue: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    s.write_all(b"hello").await.unwrap();
    while !String::from_utf8_lossy(&got).contains("a got 5") {
        let n = tokio::time::timeout(deadline, s.read(&mut chunk))
            .await
            .expect("final answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("HTTP/1.1 200 OK"));
}
