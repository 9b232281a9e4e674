//! Plain HTTP/1.1 to an endpoint (the default backend protocol), driven
//! from the request's own task the way nginx drives it from its event loop:
//! the request head is written and the response head read right here, and
//! the response body is read from the socket by whoever polls it. A pooled
//! client with a task per connection (hyper-util's) costs two task
//! hand-offs and a channel per request; this costs none.
//! TLS and HTTP/2 upstreams, and ExternalName Services, keep hyper-util's
//! client (see `upstream.rs`).

mod codec;
mod pool;
mod response;
mod upload;

pub use pool::Pool;
pub use response::UpstreamBody;

use crate::body::{Body, BoxError};
use bytes::BytesMut;
use codec::Head;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Response, StatusCode, uri::PathAndQuery};
use hyper::body::Body as _;
use pool::Conn;
use response::Truncated;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use upload::Upload;

/// Largest response head accepted from an upstream (beyond: 502, as
/// nginx's "upstream sent too big header").
const MAX_HEAD: usize = 64 * 1024;

/// One request as it goes to the upstream.
pub struct Exchange<'a> {
    pub method: &'a Method,
    pub target: &'a PathAndQuery,
    /// Final upstream headers (hop-by-hop removed, forwarded added, Host set).
    pub headers: &'a HeaderMap,
    pub connect_timeout: Duration,
    /// How long the response head may take once the request is sent.
    pub read_timeout: Duration,
    /// How long one write to the upstream may wait for room.
    pub send_timeout: Duration,
    /// The client asked for a protocol switch: a 101 becomes a tunnel.
    pub upgrade: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint could not be reached: the caller may try another.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The client's request body failed (size limit, idle timeout, reset).
    #[error("request body: {0}")]
    RequestBody(BoxError),
    #[error("{0}")]
    Upstream(BoxError),
    #[error("no response head within the read timeout")]
    ReadTimeout,
    #[error("the upstream took no request bytes within the send timeout")]
    SendTimeout,
}

/// How an exchange failed: `Stale` before the upstream sent a single byte
/// (a pooled connection it had just closed), when an idempotent request
/// without a body may go again.
enum Failure {
    Stale(std::io::Error),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

/// The upstream's answer.
pub enum Answer {
    /// A response whose body streams from the connection.
    Response(Response<UpstreamBody>),
    /// `101 Switching Protocols`: its head, and the connection to tunnel.
    Switched(Response<()>, Tunnel),
}

/// An upstream connection after `101 Switching Protocols`.
pub struct Tunnel(Conn);

impl Tunnel {
    /// Relays bytes both ways until either side closes; bytes the upstream
    /// sent right behind its 101 go first.
    pub async fn run<D: AsyncRead + AsyncWrite + Unpin>(self, mut down: D) -> std::io::Result<()> {
        let mut conn = self.0;
        if !conn.rbuf.is_empty() {
            down.write_all(&conn.rbuf).await?;
            conn.rbuf.clear();
        }
        tokio::io::copy_bidirectional(&mut down, &mut conn.io)
            .await
            .map(|_| ())
    }
}

/// Sends one request to `addr` over a pooled or new connection. The body
/// stays in `body` until a connection is up: a request whose endpoint could
/// not be reached can go to another one, body and all.
pub async fn send(
    pool: &Pool,
    addr: SocketAddr,
    ex: &Exchange<'_>,
    body: &mut Option<Body>,
) -> Result<Answer, Error> {
    // A pooled connection the upstream has just closed fails before any
    // response byte. If the request head could not even be written, the
    // body is untouched and any request goes again on a new connection
    // (hyper-util does the same). Once the head went out, the upstream may
    // have acted on it: only an idempotent request without a body is sent
    // again (nginx never repeats a POST, LOCK or PATCH that reached an
    // upstream, and a body's bytes are gone).
    let has_body = body.as_ref().is_some_and(|b| !b.is_end_stream());
    let replayable = !has_body && is_idempotent(ex.method);
    let chunked = has_body && !ex.headers.contains_key(CONTENT_LENGTH);
    let mut pooled = pool.checkout(addr);
    // At most two rounds: `continue` only follows a pooled connection, and
    // the next round's connection is a new one.
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => pool
                .connect(addr, ex.connect_timeout)
                .await
                .map_err(Error::Connect)?,
        };
        codec::encode_head(&mut conn.wbuf, ex.method, ex.target, ex.headers, chunked);
        match timed(ex.send_timeout, conn.io.write_all(&conn.wbuf)).await {
            Ok(()) => {}
            Err(Error::Upstream(_)) if reused => continue,
            Err(e) => return Err(e),
        }
        let b = body.take().unwrap_or_else(crate::body::empty);
        match exchange(&mut conn, ex, b, has_body, chunked).await {
            Ok(head) => return answer(conn, ex, head),
            Err(Failure::Stale(_)) if reused && replayable => continue,
            Err(Failure::Stale(e)) => return Err(Error::Upstream(e.into())),
            Err(Failure::Other(e)) => return Err(e),
        }
    }
}

/// Methods a retry may repeat (RFC 9110 9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Bounds one write to the upstream by proxy-send-timeout, which nginx
/// applies between two successive writes: an upstream that stops reading
/// must not hold the request (and its client) forever.
async fn timed<F: std::future::Future<Output = std::io::Result<()>>>(
    t: Duration,
    write: F,
) -> Result<(), Error> {
    match tokio::time::timeout(t, write).await {
        Ok(r) => r.map_err(|e| Error::Upstream(e.into())),
        Err(_) => Err(Error::SendTimeout),
    }
}

/// After the head was written: sends the body (if any) and reads the
/// response head; returns it and the rest of the body if the upstream
/// answered before all of it went out.
async fn exchange(
    conn: &mut Conn,
    ex: &Exchange<'_>,
    body: Body,
    has_body: bool,
    chunked: bool,
) -> Result<(Head, Option<Upload>), Failure> {
    if has_body {
        return send_and_receive(conn, ex, Upload::new(body, chunked)).await;
    }
    let recv = read_head(&mut conn.io, &mut conn.rbuf, ex.method);
    match tokio::time::timeout(ex.read_timeout, recv).await {
        Ok(head) => Ok((head?, None)),
        Err(_) => Err(Error::ReadTimeout.into()),
    }
}

fn answer(
    conn: Conn,
    ex: &Exchange<'_>,
    (head, upload): (Head, Option<Upload>),
) -> Result<Answer, Error> {
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        if !ex.upgrade {
            return Err(Error::Upstream(
                "101 to a request that asked for no upgrade".into(),
            ));
        }
        return Ok(Answer::Switched(response, Tunnel(conn)));
    }
    // The rest of an upload goes on while the answer streams back; the
    // connection is reused only if both end cleanly.
    let body = UpstreamBody::new(
        conn,
        head.framing,
        head.keep_alive,
        (upload, ex.send_timeout),
    );
    Ok(Answer::Response(response.map(|()| body)))
}

/// Streams the request body while watching for the response head: an
/// upstream may answer early (an error, a redirect, or the start of a
/// full-duplex stream). Returns the head and, if it came first, the rest
/// of the upload.
async fn send_and_receive(
    conn: &mut Conn,
    ex: &Exchange<'_>,
    mut upload: Upload,
) -> Result<(Head, Option<Upload>), Failure> {
    let (mut rd, mut wr) = conn.io.split();
    let recv = read_head(&mut rd, &mut conn.rbuf, ex.method);
    tokio::pin!(recv);
    // While the body flows, proxy-send-timeout bounds how long a write may
    // wait for the upstream; once it is through, proxy-read-timeout bounds
    // the wait for the head (both as in nginx). A slow client is its
    // body's own idle timeout.
    let deadline = tokio::time::sleep(ex.send_timeout);
    tokio::pin!(deadline);
    let mut sending = true;
    loop {
        tokio::select! {
            biased;
            head = &mut recv => return Ok((head?, sending.then_some(upload))),
            r = std::future::poll_fn(|cx| upload.poll_send(&mut wr, cx)), if sending => {
                r?;
                sending = false;
                deadline.as_mut().reset(tokio::time::Instant::now() + ex.read_timeout);
            }
            () = &mut deadline => {
                if !sending {
                    return Err(Error::ReadTimeout.into());
                }
                let left = match upload.blocked_since {
                    Some(t) => ex.send_timeout.checked_sub(t.elapsed()).filter(|d| !d.is_zero()),
                    None => Some(ex.send_timeout),
                };
                match left {
                    Some(d) => deadline.as_mut().reset(tokio::time::Instant::now() + d),
                    None => return Err(Error::SendTimeout.into()),
                }
            }
        }
    }
}

async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Head, Failure> {
    let malformed = |e: codec::Malformed| Failure::Other(Error::Upstream(e.into()));
    loop {
        if let Some(head) = codec::parse_head(buf, method).map_err(malformed)? {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(malformed(codec::Malformed("response head too large")));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(8 * 1024);
        }
        let first = buf.is_empty();
        match io.read_buf(buf).await {
            Ok(0) if first => return Err(Failure::Stale(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(0) => return Err(Error::Upstream(Truncated.into()).into()),
            Ok(_) => {}
            Err(e) if first => return Err(Failure::Stale(e)),
            Err(e) => return Err(Error::Upstream(e.into()).into()),
        }
    }
}
