//! Batched UDP I/O: `recvmmsg`/`sendmmsg` through nix's safe wrappers. On
//! loopback the per-packet kernel work dominates a DNS answer; batching
//! at least pays the syscall entry once per batch rather than twice per
//! query (NSD does the same). Both calls are non-blocking: the caller
//! waits for readiness with tokio.

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams per batch.
pub const BATCH: usize = 32;
/// Receive buffer per datagram: larger requests are not queries we answer.
pub const RECV_BUF: usize = 4096;

/// Receive buffers for one batch.
pub struct RecvBatch {
    pub bufs: Box<[[u8; RECV_BUF]; BATCH]>,
    /// (length, source) of each received datagram.
    pub got: [(usize, Option<SocketAddr>); BATCH],
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0; RECV_BUF]; BATCH]),
            got: [(0, None); BATCH],
        }
    }

    /// Receives what is queued, up to a batch; `WouldBlock` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // The headers hold raw pointers (not Send), so they live only for
        // the call: the serving future stays Send. Two small allocations
        // per batch.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut iovs = self.bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        let results = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for r in results {
            self.got[n] = (r.bytes, r.address.as_ref().and_then(to_std));
            n += 1;
        }
        Ok(n)
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Answers to send in one batch.
pub struct SendBatch {
    pub outs: Vec<Vec<u8>>,
    pub dst: [Option<SockaddrStorage>; BATCH],
    pub len: usize,
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            outs: (0..BATCH).map(|_| Vec::with_capacity(1024)).collect(),
            dst: [None; BATCH],
            len: 0,
        }
    }

    /// The next answer's buffer; `commit` it once written.
    pub fn next_buf(&mut self) -> &mut Vec<u8> {
        &mut self.outs[self.len]
    }

    pub fn commit(&mut self, dst: SocketAddr) {
        self.dst[self.len] = Some(SockaddrStorage::from(dst));
        self.len += 1;
    }

    /// Sends answers `from..len`; returns how many went (at least one, or
    /// an error for the first).
    pub fn send(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(&self.outs[i])]);
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            fd,
            &mut headers,
            iovs[from..self.len].iter(),
            &self.dst[from..self.len],
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }
}
