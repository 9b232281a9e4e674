//! Idle keep-alive connections per endpoint address, one pool per worker
//! thread (nginx's per-worker model): checkout and return take no lock.
//! A connection is taken most-recently-used first, so a burst's extra
//! connections age out at the bottom of the stack. Every few seconds a
//! return also sweeps the whole thread's pool, so connections to endpoints
//! that are gone (pods replaced) are closed instead of kept forever.

use bytes::BytesMut;
use prometheus_client::metrics::gauge::Gauge;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// An idle connection older than this is closed instead of reused (nginx's
/// `keepalive_timeout` for upstreams is 60 s too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a thread's whole pool is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle {
        by_addr: HashMap::new(),
        swept: Instant::now(),
    });
}

/// One worker thread's idle connections.
struct Idle {
    by_addr: HashMap<SocketAddr, Vec<Conn>>,
    swept: Instant,
}

impl Idle {
    /// Closes connections idle for too long or closed by their upstream,
    /// and forgets endpoints with none left.
    fn sweep(&mut self, now: Instant) {
        self.by_addr.retain(|_, stack| {
            stack.retain(|c| {
                now.saturating_duration_since(c.idle_since) < IDLE_TIMEOUT && c.still_open()
            });
            !stack.is_empty()
        });
        self.swept = now;
    }
}

/// Counts itself in the plane's open-connections gauge while it lives.
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One upstream connection with its buffers, reused across requests.
pub struct Conn {
    pub io: TcpStream,
    /// Bytes read from the upstream and not yet consumed.
    pub rbuf: BytesMut,
    /// The request head being written.
    pub wbuf: Vec<u8>,
    addr: SocketAddr,
    max_idle: usize,
    idle_since: Instant,
    _open: Open,
}

/// Where connections come from: the pool first, else a new connect.
#[derive(Clone)]
pub struct Pool {
    /// Idle connections kept per endpoint (per worker thread).
    max_idle: usize,
    open: Gauge,
}

impl Pool {
    pub fn new(max_idle: usize, open: Gauge) -> Pool {
        Pool { max_idle, open }
    }

    /// An idle connection to `addr` that still looks usable.
    pub fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let stack = idle.by_addr.get_mut(&addr)?;
            while let Some(conn) = stack.pop() {
                if conn.idle_since.elapsed() < IDLE_TIMEOUT && conn.still_open() {
                    return Some(conn);
                }
            }
            None
        })
    }

    /// A new connection, within `timeout`.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
        let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        };
        io.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
        socket2::SockRef::from(&io).set_tcp_keepalive(&keepalive)?;
        self.open.inc();
        Ok(Conn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: Vec::with_capacity(1024),
            addr,
            max_idle: self.max_idle,
            idle_since: Instant::now(),
            _open: Open(self.open.clone()),
        })
    }
}

impl Conn {
    /// Puts a connection whose exchange completed cleanly back for reuse.
    pub fn release(mut self) {
        if !self.rbuf.is_empty() {
            return; // bytes after the response: the upstream is out of step
        }
        let now = Instant::now();
        self.idle_since = now;
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            if now.saturating_duration_since(idle.swept) >= SWEEP_EVERY {
                idle.sweep(now);
            }
            let stack = idle.by_addr.entry(self.addr).or_default();
            // The bottom is the longest idle: expire it here, as nothing else visits it.
            if stack
                .first()
                .is_some_and(|c| c.idle_since.elapsed() >= IDLE_TIMEOUT)
            {
                stack.remove(0);
            }
            if stack.len() < self.max_idle {
                stack.push(self);
            }
        });
    }

    /// False when the upstream closed (or wrote) while the connection sat
    /// idle. The reactor's readiness says so without a syscall in the
    /// common case; a readiness left over from the last response is
    /// confirmed by one non-blocking read.
    fn still_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn reuses_open_connections_and_drops_closed_ones() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let open = Gauge::default();
        let pool = Pool::new(2, open.clone());
        let c1 = pool.connect(addr, Duration::from_secs(1)).await.unwrap();
        let (mut s1, _) = l.accept().await.unwrap();
        let c2 = pool.connect(addr, Duration::from_secs(1)).await.unwrap();
        let (_s2, _) = l.accept().await.unwrap();
        let c3 = pool.connect(addr, Duration::from_secs(1)).await.unwrap();
        assert_eq!(open.get(), 3);
        let (p1, p2) = (c1.io.local_addr().unwrap(), c2.io.local_addr().unwrap());
        c2.release();
        c1.release(); // on top: taken first
        c3.release(); // over max_idle: closed
        assert_eq!(open.get(), 2);
        // The server closes c1; the pool must notice and skip it.
        s1.shutdown().await.unwrap();
        drop(s1);
        // Wait (bounded) until the reactor has seen c1's FIN.
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            let c = pool.checkout(addr).expect("c2 is still pooled");
            if c.io.local_addr().unwrap() == p2 {
                break c;
            }
            c.release(); // c1 not yet seen as closed: put it back and retry
            assert!(
                Instant::now() < deadline,
                "closed connection never detected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_ne!(got.io.local_addr().unwrap(), p1);
        assert!(pool.checkout(addr).is_none(), "c1 was dropped, not reused");
        drop(got);
        assert_eq!(open.get(), 0);
    }

    #[tokio::test]
    async fn a_sweep_closes_old_and_closed_connections_of_any_endpoint() {
        let (l1, l2) = (
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
        let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        let open = Gauge::default();
        let pool = Pool::new(8, open.clone());
        let c1 = pool.connect(a1, Duration::from_secs(1)).await.unwrap();
        let (mut s1, _) = l1.accept().await.unwrap();
        let c2 = pool.connect(a2, Duration::from_secs(1)).await.unwrap();
        let _s2 = l2.accept().await.unwrap();
        c1.release();
        c2.release();
        let sweep = |now| IDLE.with(|i| i.borrow_mut().sweep(now));
        // a1's upstream goes away; nothing ever asks for a1 again.
        s1.shutdown().await.unwrap();
        drop(s1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while open.get() > 1 {
            assert!(
                Instant::now() < deadline,
                "the closed connection was never swept"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            sweep(Instant::now());
        }
        assert!(IDLE.with(|i| !i.borrow().by_addr.contains_key(&a1)));
        // The other one is only old: a sweep past the idle timeout closes it.
        sweep(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(open.get(), 0);
        assert!(IDLE.with(|i| i.borrow().by_addr.is_empty()));
    }

    #[tokio::test]
    async fn leftover_bytes_keep_a_connection_out_of_the_pool() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let pool = Pool::new(4, Gauge::default());
        let mut c = pool.connect(addr, Duration::from_secs(1)).await.unwrap();
        let _s = l.accept().await.unwrap();
        c.rbuf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        c.release();
        assert!(pool.checkout(addr).is_none());
    }
}
