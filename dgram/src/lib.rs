//! Batched UDP I/O: `recvmmsg`/`sendmmsg` through nix's safe wrappers. On
//! loopback the per-packet kernel work dominates; batching pays the
//! syscall entry once per batch rather than once per datagram (NSD does
//! the same). Both calls are non-blocking: the caller waits for readiness
//! with its runtime.

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Most datagrams per batch.
pub const BATCH: usize = 32;

/// Receive buffers for one batch of up to `slots` datagrams of up to
/// `size` bytes each (a longer datagram is cut to `size`).
pub struct RecvBatch {
    buf: Box<[u8]>,
    size: usize,
    /// (length, source) of each received datagram.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBatch {
    pub fn new(slots: usize, size: usize) -> RecvBatch {
        let slots = slots.clamp(1, BATCH);
        RecvBatch {
            buf: vec![0; slots * size].into_boxed_slice(),
            size,
            got: Vec::with_capacity(slots),
        }
    }

    /// How many datagrams one call can receive.
    pub fn slots(&self) -> usize {
        self.buf.len() / self.size
    }

    /// Receives what is queued, up to a batch; `WouldBlock` when nothing is.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let slots = self.slots();
        // The headers hold raw pointers (not Send), so they live only for
        // the call: a future holding a batch stays Send.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slots, None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_exact_mut(self.size)
            .map(|b| [IoSliceMut::new(b)])
            .collect();
        let results = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        self.got.clear();
        self.got
            .extend(results.map(|r| (r.bytes.min(self.size), r.address.as_ref().and_then(to_std))));
        Ok(self.got.len())
    }

    /// Datagram `i` of the last `recv` and its source (`None` when the
    /// kernel gave no IPv4/IPv6 address).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let (len, src) = self.got[i];
        (&self.buf[i * self.size..i * self.size + len], src)
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Datagrams to send in one batch, each to its own destination.
pub struct SendBatch {
    outs: Vec<Vec<u8>>,
    dst: Vec<Option<SockaddrStorage>>,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl SendBatch {
    pub fn new() -> SendBatch {
        SendBatch {
            outs: (0..BATCH).map(|_| Vec::with_capacity(1024)).collect(),
            dst: vec![None; BATCH],
            len: 0,
        }
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The next datagram's buffer (emptied); `commit` it once written.
    pub fn next_buf(&mut self) -> &mut Vec<u8> {
        let b = &mut self.outs[self.len];
        b.clear();
        b
    }

    pub fn commit(&mut self, dst: SocketAddr) {
        self.dst[self.len] = Some(SockaddrStorage::from(dst));
        self.len += 1;
    }

    /// Sends datagrams `from..len`; returns how many went (at least one,
    /// or an error for the first).
    pub fn send(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let iovs: Vec<[IoSlice<'_>; 1]> = self.outs[from..self.len]
            .iter()
            .map(|o| [IoSlice::new(o)])
            .collect();
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let sent = sendmmsg(
            fd,
            &mut headers,
            iovs.iter(),
            &self.dst[from..self.len],
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_go_out_and_come_back_with_their_sources() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = SendBatch::new();
        for i in 0..5u8 {
            out.next_buf().extend_from_slice(&[i; 3]);
            out.commit(rx.local_addr().unwrap());
        }
        let mut sent = 0;
        while sent < out.len() {
            sent += out.send(tx.as_raw_fd(), sent).unwrap();
        }
        let mut batch = RecvBatch::new(4, 2);
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 5 {
            assert!(std::time::Instant::now() < deadline, "datagrams lost");
            match batch.recv(rx.as_raw_fd()) {
                Ok(n) => {
                    assert!(n <= 4);
                    for i in 0..n {
                        let (data, src) = batch.get(i);
                        assert_eq!(src, Some(tx.local_addr().unwrap()));
                        seen.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        // Cut to the slot size (2 of 3 bytes), in order.
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 2]).collect();
        assert_eq!(seen, want);
    }
}
