//! Copies a proxied TCP connection in both directions until both are done.
//!
//! Half-close is preserved: when one side finishes sending (EOF), we shut
//! down the write side of the other and keep copying the reverse direction,
//! so a client that shuts its write side still gets the whole reply.
//! On Linux the bytes move with splice(2) through a pipe (no copy through
//! user space); where splice is refused we fall back to a buffered copy.

use prometheus_client::metrics::counter::Counter;
use socket2::SockRef;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Buffer of the fallback copy, per direction. Large buffers matter: 8 KiB
/// copies showed long stalls on bulk transfers.
const BUF: usize = 64 * 1024;

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
/// connection is idle for `idle` (checked every `idle`, so an idle
/// connection ends between `idle` and `2 * idle`).
pub(crate) async fn bidirectional(
    client: &TcpStream,
    server: &TcpStream,
    use_splice: bool,
    idle: Duration,
    counters: Counters<'_>,
) -> io::Result<End> {
    // Moved-bytes counter shared by both directions, read by the idle check;
    // cheaper than reading the clock per chunk.
    let progress = AtomicU64::new(0);
    let up = one_way(
        client,
        server,
        use_splice,
        counters.client_to_server,
        &progress,
    );
    let down = one_way(
        server,
        client,
        use_splice,
        counters.server_to_client,
        &progress,
    );
    let copy = async { tokio::try_join!(up, down).map(|_| End::Done) };
    let watchdog = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(idle).await;
            let now = progress.load(Ordering::Relaxed);
            if now == last {
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
    src: &TcpStream,
    dst: &TcpStream,
    use_splice: bool,
    counter: &Counter,
    progress: &AtomicU64,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if use_splice {
        match crate::splice::Pipe::new() {
            // `false`: splice refused before any byte moved; copy instead.
            Ok(pipe) => {
                if pipe.copy(src, dst, counter, progress).await? {
                    return finish(dst);
                }
            }
            Err(e) => tracing::debug!(error = %e, "no pipe for splice; buffered copy"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = use_splice;
    buffered(src, dst, counter, progress).await?;
    finish(dst)
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

async fn buffered(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &Counter,
    progress: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        src.readable().await?;
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < n {
            dst.writable().await?;
            match dst.try_write(&buf[off..n]) {
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counter.inc_by(n as u64);
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}
