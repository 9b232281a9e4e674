//! The echo backend (`nodeway echo`): what tests, the demo and load tests hit.
//! TCP speaks HTTP/1.1 and h2c: `GET /hostname` answers the name; anything
//! else answers JSON describing the request. UDP on the same port: `hostname`
//! gets the name, `echo X` gets X, anything else comes back unchanged.
//! A request asking `Upgrade` gets 101 and then its bytes echoed (for
//! WebSocket passthrough tests).

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};

/// Binds TCP and UDP on `addr` and serves until the returned task is dropped
/// or aborted. Returns once both sockets are bound.
pub async fn start(addr: SocketAddr, name: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tcp = bind_tcp(addr)?;
    let addr = tcp.local_addr()?;
    let udp = UdpSocket::bind(addr).await?;
    let name: Arc<str> = Arc::from(name);
    let n = name.clone();
    Ok(tokio::spawn(async move {
        let udp_task = tokio::spawn(serve_udp(udp, n));
        serve_tcp(tcp, name).await;
        udp_task.abort();
    }))
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into())?)
}

async fn serve_tcp(listener: TcpListener, name: Arc<str>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, name.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Body = Full<Bytes>;

async fn answer(req: Request<Incoming>, name: Arc<str>) -> Result<Response<Body>, hyper::Error> {
    if req.uri().path() == "/hostname" && req.method() == http::Method::GET {
        return Ok(text(StatusCode::OK, name.to_string()));
    }
    if req.headers().contains_key(header::UPGRADE) {
        return Ok(upgrade(req));
    }
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    // Read the body (uploads) so the client's request completes; report its size.
    let mut body_len = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            body_len += data.len() as u64;
        }
    }
    let json = serde_json::json!({
        "name": &*name,
        "method": parts.method.as_str(),
        "path": path,
        "host": host,
        "proto": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body_len,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Answers 101 and echoes raw bytes on the upgraded connection.
fn upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let proto = req.headers().get(header::UPGRADE).cloned();
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(&mut req).await {
            let mut io = TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    if let Some(p) = proto {
        r.headers_mut().insert(header::UPGRADE, p);
    }
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    r
}

async fn serve_udp(sock: UdpSocket, name: Arc<str>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let msg = &buf[..n];
        let reply: &[u8] = if msg.trim_ascii() == b"hostname" {
            name.as_bytes()
        } else if let Some(rest) = msg.strip_prefix(b"echo ") {
            rest
        } else {
            msg
        };
        let _ = sock.send_to(reply, peer).await;
    }
}
