//! The response body, read straight from the upstream socket by whoever
//! polls it (hyper's server connection): no task or channel in between.
//! The same poll carries on an upload the upstream answered before it was
//! through. When both end cleanly the connection goes back to the pool.

use super::codec::{Chunk, Chunked, Framing};
use super::pool::Conn;
use super::upload::Upload;
use crate::body::BoxError;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

pub struct UpstreamBody {
    /// `None` once the body is complete.
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    /// The rest of the request body, still being sent.
    upload: Option<Upload>,
    /// How long that upload may wait for the upstream to take bytes.
    send_timeout: Duration,
    upload_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// The upstream closed before the body was complete.
#[derive(Debug, thiserror::Error)]
#[error("upstream closed the connection mid-body")]
pub struct Truncated;

impl UpstreamBody {
    pub(super) fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        (upload, send_timeout): (Option<Upload>, Duration),
    ) -> UpstreamBody {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive,
            upload,
            send_timeout,
            upload_timer: None,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// Returns the connection to the pool if it can carry another request.
    fn finish(&mut self) {
        self.state = State::Done;
        // An upload still under way leaves the connection out of step.
        let sent = self.upload.take().is_none();
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && sent
        {
            conn.release();
        }
    }

    /// Moves the unfinished upload on, as far as it goes without waiting.
    /// Its failure ends only the upload: the answer already started.
    fn push_upload(&mut self, cx: &mut Context<'_>) {
        let (Some(up), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) else {
            return;
        };
        let stalled = match up.poll_send(&mut conn.io, cx) {
            Poll::Pending => match up.blocked_since {
                // An upstream that takes none of the upload for the send
                // timeout gets no more of it (the connection is then not
                // reused). A timer wakes this body for that even while the
                // answer is quiet.
                Some(t) => {
                    let at = tokio::time::Instant::from_std(t + self.send_timeout);
                    let timer = self
                        .upload_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    timer.as_mut().poll(cx).is_ready()
                }
                None => false,
            },
            Poll::Ready(Ok(())) => {
                self.upload = None;
                return;
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "upload stopped after the response head");
                true
            }
        };
        if stalled {
            tracing::debug!("upload given up after the response head");
            self.upload = None;
            self.upload_timer = None;
            self.keep_alive = false;
        }
    }
}

/// Reads more from the upstream into the connection's buffer; 0 is EOF.
fn fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
        conn.rbuf.reserve(32 * 1024);
    }
    tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.rbuf)
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.push_upload(cx);
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(left) => {
                    if conn.rbuf.is_empty() {
                        if ready!(fill(conn, cx))? == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(Truncated.into())));
                        }
                        continue;
                    }
                    let take = (*left).min(conn.rbuf.len() as u64);
                    let data = conn.rbuf.split_to(take as usize).freeze();
                    *left -= take;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose => {
                    if conn.rbuf.is_empty() && ready!(fill(conn, cx))? == 0 {
                        this.keep_alive = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    let data = conn.rbuf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(dec) => match dec.decode(&mut conn.rbuf) {
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Ok(Chunk::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Chunk::End(trailers)) => {
                        this.finish();
                        if trailers.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Chunk::Need) => {
                        if ready!(fill(conn, cx))? == 0 {
                            this.conn = None;
                            return Poll::Ready(Some(Err(Truncated.into())));
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
