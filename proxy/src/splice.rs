//! Zero-copy forwarding with splice(2): socket -> pipe -> socket, driven by
//! tokio readiness so it never blocks a worker thread.

use prometheus_client::metrics::counter::Counter;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity we ask for: bigger than the 64 KiB default so a bulk
/// transfer moves more per syscall and wakes the peers less often. Only
/// directions that moved a full buffer get a pipe at all. The kernel may
/// refuse (pipe-max-size, per-user pipe limits for non-root); then the
/// default is kept.
const PIPE_SIZE: libc::c_int = 1024 * 1024;

pub(crate) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned
        // by nobody else; OwnedFd closes them on drop.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure is reported by -1
        // and harmless (the pipe keeps its default size).
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let size = if got > 0 { got as usize } else { 64 * 1024 };
        Ok(Pipe { r, w, size })
    }

    /// Moves bytes from `src` to `dst` until `src` reaches EOF (`Ok(true)`).
    /// `Ok(false)` means splice is not supported for these sockets and
    /// nothing was moved, so the caller may copy another way.
    pub async fn copy(
        &self,
        src: &TcpStream,
        dst: &TcpStream,
        counter: &Counter,
        progress: &AtomicU64,
    ) -> io::Result<bool> {
        let mut first = true;
        loop {
            // The pipe is empty here, so EAGAIN can only mean "no data in src".
            let n = loop {
                src.readable().await?;
                match src.try_io(Interest::READABLE, || {
                    splice(src.as_raw_fd(), self.w.as_raw_fd(), self.size)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if first && unsupported(&e) => return Ok(false),
                    Err(e) => return Err(e),
                }
            };
            first = false;
            if n == 0 {
                return Ok(true);
            }
            // Drain exactly what we put in; EAGAIN now means "dst is full".
            let mut left = n;
            while left > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || {
                    splice(self.r.as_raw_fd(), dst.as_raw_fd(), left)
                }) {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            counter.inc_by(n as u64);
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on descriptors the caller keeps open for the
    // duration of the call; null offsets mean "use the file position",
    // which is what sockets and pipes require.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
