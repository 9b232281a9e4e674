//! A request body on its way to the upstream, as a state machine that can
//! be polled from anywhere: first next to the wait for the response head,
//! then, if the upstream answers before the body is through (a full-duplex
//! stream, or an early error), from the response body's own poll, so the
//! upload goes on while the answer streams back (as hyper's client does).

use super::Error;
use crate::body::Body;
use bytes::{Buf, Bytes};
use http::HeaderMap;
use hyper::body::Body as _;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::io::AsyncWrite;

pub struct Upload {
    body: Body,
    chunked: bool,
    /// Framed bytes read from the body and not yet written.
    out: VecDeque<Bytes>,
    /// The body has ended; what is in `out` is the last of it.
    ended: bool,
    /// Since when a write has been waiting for the upstream to take bytes
    /// (proxy-send-timeout bounds it); `None` while writes go through or
    /// the body itself is what we wait for.
    pub blocked_since: Option<Instant>,
}

impl Upload {
    pub fn new(body: Body, chunked: bool) -> Upload {
        Upload {
            body,
            chunked,
            out: VecDeque::new(),
            ended: false,
            blocked_since: None,
        }
    }

    /// Writes what the socket takes; `Ready(Ok)` once the whole body (and
    /// for chunked framing its last chunk and trailers) is written.
    pub fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            while !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); 3];
                let n = self.out.len().min(slices.len());
                for (s, b) in slices.iter_mut().zip(&self.out) {
                    *s = IoSlice::new(b);
                }
                let wrote = match Pin::new(&mut *w).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Pending => {
                        self.blocked_since.get_or_insert_with(Instant::now);
                        return Poll::Pending;
                    }
                    Poll::Ready(r) => r.map_err(|e| Error::Upstream(e.into()))?,
                };
                self.blocked_since = None;
                if wrote == 0 {
                    return Poll::Ready(Err(Error::Upstream(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into(),
                    )));
                }
                self.advance(wrote);
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => self.end(None),
                Some(Err(e)) => return Poll::Ready(Err(Error::RequestBody(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.out
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.out.push_back(data);
                        self.out.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => self.out.push_back(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.end(Some(trailers));
                        }
                    }
                },
            }
            // Trailers end a body; so does a body that says it is done.
            if !self.ended && self.body.is_end_stream() {
                self.end(None);
            }
        }
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let front = self.out.front_mut().expect("wrote no more than queued");
            let k = n.min(front.len());
            front.advance(k);
            n -= k;
            if front.is_empty() {
                self.out.pop_front();
            }
        }
    }

    /// Queues the end of the body: for chunked framing the last chunk and
    /// the trailers.
    fn end(&mut self, trailers: Option<HeaderMap>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if !self.chunked {
            return;
        }
        let mut end = b"0\r\n".to_vec();
        for (name, value) in trailers.iter().flatten() {
            end.extend_from_slice(name.as_str().as_bytes());
            end.extend_from_slice(b": ");
            end.extend_from_slice(value.as_bytes());
            end.extend_from_slice(b"\r\n");
        }
        end.extend_from_slice(b"\r\n");
        self.out.push_back(Bytes::from(end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn sent(body: Body, chunked: bool) -> Vec<u8> {
        let mut up = Upload::new(body, chunked);
        let mut out = Vec::new();
        std::future::poll_fn(|cx| up.poll_send(&mut out, cx))
            .await
            .unwrap();
        out
    }

    /// Hands out its frames one per poll.
    struct Frames(VecDeque<hyper::body::Frame<Bytes>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = crate::body::BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn frames_chunks_and_trailers() {
        let mut t = HeaderMap::new();
        t.insert("x-sum", "7".parse().unwrap());
        let body = Frames(VecDeque::from([
            hyper::body::Frame::data(Bytes::from_static(b"hello")),
            hyper::body::Frame::data(Bytes::new()),
            hyper::body::Frame::data(Bytes::from_static(b" world!")),
            hyper::body::Frame::trailers(t),
        ]))
        .boxed();
        assert_eq!(
            sent(body, true).await,
            b"5\r\nhello\r\n7\r\n world!\r\n0\r\nx-sum: 7\r\n\r\n"
        );
        assert_eq!(sent(crate::body::full("abc"), false).await, b"abc");
        assert_eq!(
            sent(crate::body::full("abc"), true).await,
            b"3\r\nabc\r\n0\r\n\r\n"
        );
    }
}
