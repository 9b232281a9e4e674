//! Connection IO with a deadline for protocol detection: a client that
//! connects and sends nothing, or only a beginning of the HTTP/2 preface
//! (`P`, `PRI * ...`), is dropped. hyper's HTTP/1 header timeout only starts
//! once detection has decided, and detection waits for as long as the bytes
//! still match the preface.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a client sends first to speak HTTP/2 without TLS negotiation.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct DetectionDeadline<T> {
    io: T,
    /// `None` once detection has decided.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read so far, while they all match the preface.
    matched: usize,
}

impl<T> DetectionDeadline<T> {
    pub fn new(io: T, within: Duration) -> Self {
        DetectionDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            matched: 0,
        }
    }
}

/// After `matched` bytes that match the preface, `got` more arrived: how
/// many match now, or `None` once detection must have decided (a byte
/// differs, so HTTP/1; or the whole preface, so HTTP/2).
fn still_detecting(matched: usize, got: &[u8]) -> Option<usize> {
    let rest = &H2_PREFACE[matched..];
    let n = got.len().min(rest.len());
    (got[..n] == rest[..n] && matched + n < H2_PREFACE.len()).then_some(matched + n)
}

impl<T: AsyncRead + Unpin> AsyncRead for DetectionDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() != before {
                    match still_detecting(this.matched, &buf.filled()[before..]) {
                        Some(m) => this.matched = m,
                        None => this.deadline = None,
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DetectionDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_lasts_while_bytes_match_the_preface() {
        assert_eq!(still_detecting(0, b"GET / HTTP/1.1\r\n"), None, "HTTP/1");
        assert_eq!(still_detecting(0, b"P"), Some(1));
        assert_eq!(still_detecting(1, b"RI * HT"), Some(8));
        assert_eq!(still_detecting(1, b"OST / HTTP/1.1"), None, "POST");
        assert_eq!(still_detecting(8, &H2_PREFACE[8..]), None, "whole preface");
        assert_eq!(still_detecting(0, H2_PREFACE), None);
    }
}
