//! In-process harness: tiny hyper backends on loopback, a plane started on
//! `127.0.0.1:0` over Snapshots built from YAML, and a client.
#![allow(dead_code)]

use bytes::Bytes;
use control::MemorySource;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use model::CompileOptions;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub type TBody = BoxBody<Bytes, Infallible>;

/// `n` zero bytes in 64 KiB chunks, streamed (never held whole).
pub struct Zeros(pub u64);

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        static CHUNK: [u8; 65536] = [0; 65536];
        let n = self.0.min(CHUNK.len() as u64);
        self.0 -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &CHUNK[..n as usize],
        )))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0)
    }
}

/// Like [`Zeros`] but with no declared size (sent chunked).
pub struct Unsized(pub Zeros);

impl Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
}

/// One data frame after a pause (a stalled response body).
struct Stall(Option<Pin<Box<tokio::time::Sleep>>>);

impl Body for Stall {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        use std::future::Future;
        match self.0.as_mut() {
            None => Poll::Ready(None),
            Some(s) => match s.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.0 = None;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"late")))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A body of data then trailers (gRPC-like responses).
struct WithTrailers(Option<Bytes>, Option<http::HeaderMap>);

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.0.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.1.take().map(|t| Ok(Frame::trailers(t))))
    }
}

pub fn text(s: impl Into<Bytes>) -> Response<TBody> {
    Response::new(Full::new(s.into()).boxed())
}

/// Requests to `/count-slow` and to a sick backend's `/unhealthy`, by
/// backend name (give a counted backend a name no other test uses).
static HITS: std::sync::Mutex<std::collections::BTreeMap<&'static str, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// How many requests backend `name` took on `/count-slow` or `/unhealthy`.
pub fn hits(name: &str) -> usize {
    HITS.lock().unwrap().get(name).copied().unwrap_or(0)
}

async fn backend_handle(
    name: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<TBody>, Infallible> {
    let path = req.uri().path().to_string();
    Ok(match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            text("slow")
        }
        // Counted, then as slow as /slow.
        "/count-slow" => {
            *HITS.lock().unwrap().entry(name).or_default() += 1;
            tokio::time::sleep(Duration::from_secs(3)).await;
            text("slow")
        }
        // A backend whose name starts with "sick" answers 503 here.
        "/unhealthy" if name.starts_with("sick") => {
            *HITS.lock().unwrap().entry(name).or_default() += 1;
            let mut r = text(name);
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        // A backend with CORS headers of its own.
        "/own-cors" => {
            let mut r = text(name);
            let h = r.headers_mut();
            h.insert(
                "access-control-allow-origin",
                http::HeaderValue::from_static("https://backend.example"),
            );
            h.insert("vary", http::HeaderValue::from_static("Origin"));
            r
        }
        // Takes the head, then neither reads the body nor answers: a hung pod.
        "/hang" => std::future::pending().await,
        "/ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(u) = on.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(u));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(_) => return Ok(text("error")),
                }
            }
            text(format!("{name} got {n}"))
        }
        "/download" => {
            let n: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            Response::new(Zeros(n).boxed())
        }
        "/stall" => {
            Response::new(Stall(Some(Box::pin(tokio::time::sleep(Duration::from_secs(3))))).boxed())
        }
        "/trailers" => {
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", "0".parse().unwrap());
            Response::new(WithTrailers(Some(Bytes::from_static(b"payload")), Some(t)).boxed())
        }
        _ => {
            let mut s = format!(
                "name={name}\nmethod={}\nuri={}\nversion={:?}\n",
                req.method(),
                req.uri(),
                req.version()
            );
            for (k, v) in req.headers() {
                s.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text(s)
        }
    })
}

/// Starts a backend speaking HTTP/1.1 and h2c; its name shows in every answer.
pub async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |req| backend_handle(name, req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A loopback address nothing listens on (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A Service `name` (port `http` 80) with one EndpointSlice per address.
pub fn service(name: &str, addrs: &[SocketAddr]) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: 10.96.{}.{}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n",
        n / 250,
        n % 250 + 1
    );
    for (i, a) in addrs.iter().enumerate() {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{}\"]}}]\nports: [{{name: http, port: {}}}]\n",
            a.ip(),
            a.port()
        ));
    }
    s
}

/// An Ingress with one rule (`host` "" for host-less) and annotations
/// (names without the `nginx.ingress.kubernetes.io/` prefix).
pub fn ingress(
    name: &str,
    host: &str,
    paths: &[(&str, &str, &str)],
    ann: &[(&str, &str)],
) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    if !ann.is_empty() {
        s.push_str("  annotations:\n");
        for (k, v) in ann {
            s.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
        }
    }
    s.push_str("spec:\n  rules:\n  - ");
    if !host.is_empty() {
        s.push_str(&format!("host: \"{host}\"\n    "));
    }
    s.push_str("http:\n      paths:\n");
    for (ty, p, svc) in paths {
        s.push_str(&format!(
            "      - {{pathType: {ty}, path: \"{p}\", backend: {{service: {{name: {svc}, port: {{name: http}}}}}}}}\n"
        ));
    }
    s
}

pub struct Plane {
    pub handle: Option<ingress::Handle>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub registry: Registry,
    source: MemorySource,
}

impl Plane {
    pub async fn start(yaml: &str) -> Plane {
        Self::start_with(yaml, ingress::Config::default()).await
    }

    pub async fn start_with(yaml: &str, mut cfg: ingress::Config) -> Plane {
        let mut source = MemorySource::new(CompileOptions::default());
        let snap = source.apply("test.yaml", yaml);
        assert!(snap.errors.is_empty(), "config errors: {:?}", snap.errors);
        let mut registry = Registry::default();
        cfg.http_listen = Some(([127, 0, 0, 1], 0).into());
        cfg.https_listen = Some(([127, 0, 0, 1], 0).into());
        let handle = ingress::start(cfg, source.store().snapshots(), &mut registry)
            .await
            .unwrap();
        Plane {
            http: handle.http_addr().unwrap(),
            https: handle.https_addr().unwrap(),
            handle: Some(handle),
            registry,
            source,
        }
    }

    /// Replaces a manifest file, publishes the next Snapshot and waits
    /// until the plane serves it.
    pub async fn apply(&mut self, file: &str, yaml: &str) {
        let snap = self.source.apply(file, yaml);
        assert!(snap.errors.is_empty(), "config errors: {:?}", snap.errors);
        let handle = self.handle.as_ref().expect("running");
        tokio::time::timeout(
            Duration::from_secs(10),
            handle.wait_applied(snap.generation),
        )
        .await
        .expect("the plane applies the change");
    }

    pub fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }
}

/// One HTTP/1.1 connection to `addr` (its driver spawned), for tests that
/// need a body type of their own or a connection of their own.
pub async fn h1<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake::<_, B>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// POSTs `bytes` zeros to `path` on `host` over a new HTTP/1.1 connection;
/// the response head must come within 10 s (uploads that must not hang).
pub async fn post_zeros(
    addr: SocketAddr,
    host: &str,
    path: &str,
    bytes: u64,
) -> Response<Incoming> {
    let mut send = h1::<Zeros>(addr).await;
    let req = Request::post(path)
        .header("host", host)
        .body(Zeros(bytes))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("a response head in time, not a hang")
        .unwrap()
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub version: http::Version,
    pub body: String,
}

impl Resp {
    /// A `key=value` or `header: value` line of a backend's dump.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.body.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix('=').or_else(|| r.strip_prefix(": ")))
        })
    }
}

/// Sends a request through the plane's HTTP listener.
pub async fn send(
    plane_http: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{plane_http}{target}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body: String::from_utf8_lossy(&body).into(),
    }
}

pub async fn get(plane_http: SocketAddr, host: &str, target: &str) -> Resp {
    send(plane_http, "GET", host, target, &[], "").await
}

/// Polls `f` until it holds, failing after `deadline`.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A backend behind TLS (self-signed, ALPN h2 and http/1.1), for
/// backend-protocol HTTPS/GRPCS.
pub async fn tls_backend(name: &'static str) -> SocketAddr {
    let made = rcgen::generate_simple_self_signed(vec!["pod.invalid".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |req| backend_handle(name, req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}
