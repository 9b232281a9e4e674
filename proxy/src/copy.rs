//! Copies a proxied TCP connection in both directions until both are done.
//!
//! Half-close is preserved: when one side finishes sending (EOF), we shut
//! down the write side of the other and keep copying the reverse direction,
//! so a client that shuts its write side still gets the whole reply.
//! Each direction starts as a buffered copy. Once it looks like a bulk
//! transfer (a read fills the whole buffer, or the direction has moved
//! `SPLICE_AFTER` bytes) and splice is enabled, it switches to splice(2)
//! through a pipe (no copy through user space; Linux). Short connections,
//! the common case, never pay for the pipe (pipe2, resize, four closes):
//! that was about a quarter of the proxy's syscalls per connection. Where
//! splice is refused the buffered copy simply continues.

use prometheus_client::metrics::counter::Counter;
use socket2::SockRef;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Buffer of the buffered copy, per direction. Large buffers matter: 8 KiB
/// copies showed long stalls on bulk transfers. A read that fills it is
/// what switches a direction to splice.
const BUF: usize = 64 * 1024;

/// Bytes after which a direction counts as bulk even if no single read
/// filled the buffer: a proxy that keeps up with its sender reads one
/// segment at a time and would otherwise copy a long transfer through user
/// space forever (seen in the bulk benchmark: 1130 against 900 ms of CPU
/// per GB, depending on timing). At this size the pipe's four syscalls are
/// noise.
const SPLICE_AFTER: u64 = 256 * 1024;

/// Whether a direction that has moved `total` bytes, the last read `n` of
/// a `cap`-byte buffer, should continue with splice.
fn is_bulk(n: usize, cap: usize, total: u64) -> bool {
    n == cap || total >= SPLICE_AFTER
}

/// Idle checks per idle timeout.
const IDLE_TICKS: u32 = 4;

/// Why a copy ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Both directions reached EOF.
    Done,
    /// No byte moved in either direction for the idle timeout.
    Idle,
}

pub(crate) struct Counters<'a> {
    pub client_to_server: &'a Counter,
    pub server_to_client: &'a Counter,
}

/// Copies until both directions are done, an error occurs, or the
/// connection is idle for `idle`.
pub(crate) async fn bidirectional(
    client: &mut TcpStream,
    server: &mut TcpStream,
    use_splice: bool,
    idle: Duration,
    counters: Counters<'_>,
) -> io::Result<End> {
    // Moved-bytes counter shared by both directions, read by the idle check;
    // cheaper than reading the clock per chunk.
    let progress = AtomicU64::new(0);
    // Directions finished so far: the second to finish skips its shutdown,
    // as the close right after sends the FIN anyway (one syscall less).
    let finished = AtomicU8::new(0);
    let (client_rx, client_tx) = client.split();
    let (server_rx, server_tx) = server.split();
    let up = one_way(
        client_rx,
        server_tx,
        use_splice,
        counters.client_to_server,
        &progress,
        &finished,
    );
    let down = one_way(
        server_rx,
        client_tx,
        use_splice,
        counters.server_to_client,
        &progress,
        &finished,
    );
    let copy = async { tokio::try_join!(up, down).map(|_| End::Done) };
    let watchdog = async {
        // Ticks of a quarter of the timeout: a connection ends between
        // `idle` and `1.25 * idle` after its last byte, without reading the
        // clock per chunk.
        let tick = idle / IDLE_TICKS;
        let (mut last, mut quiet) = (0, 0);
        loop {
            tokio::time::sleep(tick).await;
            let now = progress.load(Ordering::Relaxed);
            quiet = if now == last { quiet + 1 } else { 0 };
            if quiet >= IDLE_TICKS {
                return Ok(End::Idle);
            }
            last = now;
        }
    };
    tokio::select! {
        r = copy => r,
        r = watchdog => r,
    }
}

async fn one_way(
    mut src: ReadHalf<'_>,
    mut dst: WriteHalf<'_>,
    use_splice: bool,
    counter: &Counter,
    progress: &AtomicU64,
    finished: &AtomicU8,
) -> io::Result<()> {
    let bulk = buffered(
        &mut src,
        &mut dst,
        counter,
        progress,
        use_splice && cfg!(target_os = "linux"),
    )
    .await?;
    #[cfg(target_os = "linux")]
    if bulk {
        match crate::splice::Pipe::new() {
            // `false`: splice refused before any byte moved; copy instead.
            Ok(pipe) => {
                if !pipe
                    .copy(src.as_ref(), dst.as_ref(), counter, progress)
                    .await?
                {
                    buffered(&mut src, &mut dst, counter, progress, false).await?;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; buffered copy");
                buffered(&mut src, &mut dst, counter, progress, false).await?;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bulk;
    if finished.fetch_add(1, Ordering::AcqRel) == 0 {
        finish(dst.as_ref())
    } else {
        // Both directions are done and the caller closes both sockets now;
        // `dst` was read to EOF, so that close is a FIN, not a reset.
        Ok(())
    }
}

/// The source is done sending: tell the destination, but keep its other
/// direction open (half-close).
fn finish(dst: &TcpStream) -> io::Result<()> {
    match SockRef::from(dst).shutdown(Shutdown::Write) {
        // The peer may already have closed entirely; nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

/// Copies until EOF (`Ok(false)`), or, with `upgrade`, until the transfer
/// looks like bulk (`is_bulk`) and everything read is written (`Ok(true)`:
/// the caller continues with splice).
async fn buffered(
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    counter: &Counter,
    progress: &AtomicU64,
    upgrade: bool,
) -> io::Result<bool> {
    // Filled through the spare capacity: no zeroing of 64 KiB per
    // connection and direction.
    let mut buf = Vec::with_capacity(BUF);
    let mut total = 0u64;
    loop {
        buf.clear();
        // tokio's read: a short read clears readiness, so the next read
        // waits for the next event instead of paying an empty recv first.
        let n = src.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        dst.write_all(&buf[..n]).await?;
        counter.inc_by(n as u64);
        progress.fetch_add(n as u64, Ordering::Relaxed);
        total += n as u64;
        if upgrade && is_bulk(n, buf.capacity(), total) {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_by_a_full_read_or_by_volume() {
        assert!(!is_bulk(1460, BUF, 1460), "a short exchange stays buffered");
        assert!(is_bulk(BUF, BUF, BUF as u64), "a full read is bulk");
        // A reader that keeps up never fills its buffer; volume decides.
        assert!(!is_bulk(16 * 1024, BUF, SPLICE_AFTER - 1));
        assert!(is_bulk(16 * 1024, BUF, SPLICE_AFTER));
    }
}
