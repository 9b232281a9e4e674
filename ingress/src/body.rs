//! The one body type both directions use: streamed, boxed, never buffered whole.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An incoming body with the common error type, not yet boxed (to be
/// wrapped once, e.g. by [`Idle::wrap`]).
pub fn unboxed<B>(b: B) -> http_body_util::combinators::MapErr<B, fn(hyper::Error) -> BoxError>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error>,
{
    b.map_err(|e| Box::new(e) as BoxError)
}

/// A request body as it streams to the upstream, each data frame also
/// offered to mirrors. A mirror that cannot take a frame at once (its
/// queue is full, or it went away) is dropped, so a slow mirror never
/// slows the request; its body then fails (a cut copy is never sent as a
/// whole request).
pub struct Tee<B> {
    inner: B,
    copies: Vec<MirrorFeed>,
}

/// The sending side of a mirror's body.
pub struct MirrorFeed {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    /// Set when the tee lets the mirror go before the body's end.
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<B> Tee<B> {
    pub fn new(inner: B, copies: Vec<MirrorFeed>) -> Tee<B> {
        Tee { inner, copies }
    }
}

/// A mirror's body, and the feed a [`Tee`] fills it from (at most `queue`
/// frames ahead of the mirror).
pub fn mirror_body(queue: usize) -> (MirrorFeed, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(queue);
    let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    (
        MirrorFeed {
            tx,
            cut: cut.clone(),
        },
        Channel { rx, cut }.boxed(),
    )
}

impl<B> hyper::body::Body for Tee<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(data) = frame
            .as_ref()
            .and_then(|f| f.as_ref().ok())
            .and_then(|f| f.data_ref())
        {
            self.copies.retain(|feed| {
                let sent = feed.tx.try_send(data.clone()).is_ok();
                if !sent {
                    feed.cut.store(true, std::sync::atomic::Ordering::Release);
                }
                sent
            });
        }
        if frame.is_none() {
            self.copies.clear();
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body fed by a [`Tee`]: the frames a mirror was given, ending when the
/// tee drops its sender, with an error if it was let go early.
struct Channel {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A mirror that fell behind (its copy is incomplete).
#[derive(Debug, thiserror::Error)]
#[error("mirror fell behind the request; copy cut")]
pub struct MirrorCut;

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let data = std::task::ready!(self.rx.poll_recv(cx));
        // Read once the channel is closed: the tee marks the cut before it
        // drops its sender.
        let cut = || self.cut.load(std::sync::atomic::Ordering::Acquire);
        std::task::Poll::Ready(match data {
            Some(d) => Some(Ok(hyper::body::Frame::data(d))),
            None if cut() => Some(Err(MirrorCut.into())),
            None => None,
        })
    }
}

/// A gap between two body frames longer than the route's timeout (nginx's
/// proxy_read_timeout / proxy_send_timeout semantics: between two reads or writes).
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub struct IdleTimeout(pub std::time::Duration);

/// A body that fails with [`IdleTimeout`] when no frame arrives in time. The
/// timer is armed only once the body actually waits, so bodies that are
/// already buffered cost no timer.
pub struct Idle<B> {
    inner: B,
    timeout: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Idle<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin + Send + Sync + 'static,
{
    /// Wraps and boxes in one step (one allocation, one indirection).
    pub fn wrap(inner: B, timeout: std::time::Duration) -> Body {
        Idle {
            inner,
            timeout,
            sleep: None,
        }
        .boxed()
    }
}

impl<B> hyper::body::Body for Idle<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                if let Some(s) = this.sleep.as_mut() {
                    s.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(f)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let s = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match s.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A body that reports when it is done (its last frame was taken, it
/// failed, or it was dropped: the receiver resolves either way) and how it
/// is going, for telling a stalled upstream from a slow client. Frames go
/// out in pieces of at most [`PIECE`] bytes, so progress shows at that
/// grain even while a client sends large frames.
pub struct Watched {
    inner: Body,
    /// The part of the last frame not handed out yet.
    rest: Bytes,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    progress: std::sync::Arc<Progress>,
}

/// Largest piece a [`Watched`] body hands out at once.
const PIECE: usize = 16 * 1024;

/// How far a [`Watched`] body has been taken.
pub struct Progress {
    base: std::time::Instant,
    /// Nanoseconds after `base` of the first poll or the last piece taken;
    /// `u64::MAX` before the first poll.
    last: std::sync::atomic::AtomicU64,
    waiting_for_data: std::sync::atomic::AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            base: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(u64::MAX),
            waiting_for_data: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.last.store(ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the body was first polled or last gave a piece; `None` while
    /// it has never been polled (connect, TLS handshake, a stream slot).
    pub fn last(&self) -> Option<std::time::Instant> {
        match self.last.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(self.base + std::time::Duration::from_nanos(ns)),
        }
    }

    /// The last poll found no data yet, or the sender failed: the sender is
    /// what the body waits for.
    pub fn waiting_for_data(&self) -> bool {
        self.waiting_for_data
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Watched {
    pub fn wrap(
        inner: Body,
    ) -> (
        Body,
        tokio::sync::oneshot::Receiver<()>,
        std::sync::Arc<Progress>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let progress = std::sync::Arc::new(Progress::new());
        let body = Watched {
            inner,
            rest: Bytes::new(),
            done: Some(tx),
            progress: progress.clone(),
        };
        (body.boxed(), rx, progress)
    }

    fn piece(&mut self) -> Bytes {
        let n = self.rest.len().min(PIECE);
        self.progress.touch();
        self.rest.split_to(n)
    }
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::sync::atomic::Ordering::Relaxed;
        use std::task::Poll;
        let this = self.get_mut();
        if this.progress.last().is_none() {
            this.progress.touch();
        }
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(this.piece()))));
        }
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        // No data yet, or the sender failed (its idle timeout, a size
        // limit): either way the upstream is not the one to blame.
        let sender = matches!(r, Poll::Pending | Poll::Ready(Some(Err(_))));
        this.progress.waiting_for_data.store(sender, Relaxed);
        match r {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(this.piece()))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(end) => {
                this.done.take().map(|d| d.send(()));
                Poll::Ready(end)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let (inner, rest) = (self.inner.size_hint(), self.rest.len() as u64);
        let mut h = hyper::body::SizeHint::new();
        if let Some(upper) = inner.upper() {
            h.set_upper(upper + rest);
        }
        h.set_lower(inner.lower() + rest);
        h
    }
}

#[cfg(test)]
mod tee_tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Frames of a body, one poll each.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    /// A mirror that keeps up gets every frame; one that does not (its
    /// queue full) is let go, and its copy fails rather than go out as a
    /// whole, shorter request; the request's own body is whole either way.
    #[tokio::test]
    async fn a_slow_mirror_is_cut_and_never_holds_the_body() {
        let parts: Vec<Bytes> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let (fast, fast_body) = mirror_body(16);
        let (slow, slow_body) = mirror_body(1);
        let tee = Tee::new(Frames(parts.into()), vec![fast, slow]);
        let whole = tee.collect().await.unwrap().to_bytes();
        assert_eq!(&whole[..], b"abcd");
        let mirrored = fast_body.collect().await.unwrap().to_bytes();
        assert_eq!(&mirrored[..], b"abcd");
        let err = slow_body.collect().await.unwrap_err();
        assert!(err.is::<MirrorCut>(), "{err}");
    }
}
