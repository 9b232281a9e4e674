//! Where log lines go. The access log (target `nodeway::access`, a line per
//! request, on by default) is gathered in memory and written to stderr by a
//! thread of its own every second or at 64 KiB, like nginx's
//! `access_log ... buffer=64k flush=1s`: a request pays for a copy into the
//! buffer, not for a write(2). When stderr does not keep up and 4 MiB are
//! waiting, further lines are dropped and counted
//! (`nodeway_access_log_dropped_total`, and a line saying how many), so a
//! slow log never holds up a request. Every other line is written at once.

use prometheus_client::metrics::counter::Counter;
use std::io::{self, Write};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// The target of the access log's events.
const ACCESS_TARGET: &str = "nodeway::access";
/// A buffer this full is written without waiting for the clock.
const FLUSH_AT: usize = 64 * 1024;
/// The longest an access-log line waits.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// What may wait while stderr is slow; beyond it lines are dropped.
const MAX_WAITING: usize = 4 << 20;

/// Access-log lines dropped because stderr did not keep up.
pub static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

static ACCESS: Buffer = Buffer::new(FLUSH_AT, MAX_WAITING);

/// The `MakeWriter` of the log: access-log lines to the buffer, the rest
/// straight to stderr. [`start`] must run for buffered lines to be written.
pub struct Writer;

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line::Now
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        if meta.target() == ACCESS_TARGET {
            Line::Buffered
        } else {
            Line::Now
        }
    }
}

/// Where one event's line goes (the formatter writes it in one call).
pub enum Line {
    Now,
    Buffered,
}

impl Write for Line {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match self {
            Line::Now => io::stderr().write(line),
            Line::Buffered => {
                if !ACCESS.push(line) {
                    DROPPED.inc();
                }
                Ok(line.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Line::Now => io::stderr().flush(),
            Line::Buffered => Ok(()),
        }
    }
}

/// Starts the thread that writes the access log.
pub fn start() {
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| {
            let mut reported = 0;
            loop {
                let lines = ACCESS.take(FLUSH_EVERY);
                write_out(&lines, &mut reported);
                ACCESS.give_back(lines);
            }
        });
    if let Err(e) = spawned {
        // Lines are kept (up to MAX_WAITING) and written by `flush` at exit.
        tracing::error!(error = %e, "access-log writer not started");
    }
}

/// Writes what is waiting now: at exit, so no line is lost.
pub fn flush() {
    let lines = ACCESS.take(Duration::ZERO);
    write_out(&lines, &mut 0);
}

/// Writes `lines`, then says how many were dropped since `reported`.
fn write_out(lines: &[u8], reported: &mut u64) {
    let mut err = io::stderr().lock();
    if !lines.is_empty() {
        let _ = err.write_all(lines);
    }
    let dropped = DROPPED.get();
    if dropped > *reported {
        let _ = writeln!(
            err,
            "nodeway: {} access-log lines dropped: stderr did not keep up",
            dropped - *reported
        );
        *reported = dropped;
    }
}

/// Lines waiting to be written, with the room they may take.
struct Buffer {
    lines: Mutex<Vec<u8>>,
    /// Signalled when the lines reach `flush_at`.
    full: Condvar,
    /// A buffer written out, kept for its capacity.
    spare: Mutex<Vec<u8>>,
    flush_at: usize,
    max: usize,
}

impl Buffer {
    const fn new(flush_at: usize, max: usize) -> Self {
        Buffer {
            lines: Mutex::new(Vec::new()),
            full: Condvar::new(),
            spare: Mutex::new(Vec::new()),
            flush_at,
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line; false (and nothing appended) when it does not fit.
    fn push(&self, line: &[u8]) -> bool {
        let mut lines = self.lock();
        if lines.len() + line.len() > self.max {
            return false;
        }
        let was_below = lines.len() < self.flush_at;
        lines.extend_from_slice(line);
        if was_below && lines.len() >= self.flush_at {
            self.full.notify_one();
        }
        true
    }

    /// The lines waiting, once they reach `flush_at` or `wait` has passed.
    fn take(&self, wait: Duration) -> Vec<u8> {
        let mut lines = self.lock();
        if lines.len() < self.flush_at && !wait.is_zero() {
            lines = self
                .full
                .wait_timeout(lines, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        if spare.capacity() == 0 {
            // Room for a flush's worth, so requests never grow it by
            // doubling from nothing.
            spare.reserve(2 * self.flush_at);
        }
        std::mem::replace(&mut *lines, spare)
    }

    /// Returns a written buffer for reuse (a burst's big one is let go).
    fn give_back(&self, mut lines: Vec<u8>) {
        lines.clear();
        if lines.capacity() <= 4 * self.flush_at {
            *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = lines;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_until_the_clock_or_the_size_says() {
        let b = Buffer::new(16, 64);
        assert!(b.push(b"one\n") && b.push(b"two\n"));
        // Below the size: given up only when the wait is over.
        assert_eq!(b.take(Duration::from_millis(1)), b"one\ntwo\n");
        assert!(b.take(Duration::ZERO).is_empty());
        // At the size, a waiting writer is woken: long before its wait is
        // over (the margin is wide; this is not a timing test).
        std::thread::scope(|s| {
            let taker = s.spawn(|| {
                let started = std::time::Instant::now();
                (b.take(Duration::from_secs(600)), started.elapsed())
            });
            while !taker.is_finished() {
                b.push(b"0123456789abcdef");
                std::thread::yield_now();
            }
            let (lines, waited) = taker.join().unwrap();
            assert!(lines.len() >= 16);
            assert!(waited < Duration::from_secs(300), "not woken: {waited:?}");
        });
    }

    #[test]
    fn a_full_buffer_drops_lines_instead_of_waiting() {
        let b = Buffer::new(16, 20);
        assert!(b.push(b"0123456789\n"));
        assert!(!b.push(b"0123456789\n"), "would pass the limit");
        assert!(b.push(b"012345678"), "what still fits goes in");
        assert_eq!(b.take(Duration::ZERO).len(), 20);
        assert!(b.push(b"0123456789\n"), "room again once written");
    }

    #[test]
    fn written_buffers_are_reused() {
        let b = Buffer::new(16, 1024);
        b.push(b"0123456789abcdef");
        let first = b.take(Duration::ZERO);
        let reused = first.as_ptr();
        b.give_back(first);
        b.push(b"x");
        // Lines now go into the buffer given back.
        assert_eq!(b.take(Duration::ZERO), b"x");
        b.push(b"y");
        let third = b.take(Duration::ZERO);
        assert_eq!((third.as_ptr(), &third[..]), (reused, &b"y"[..]));
    }
}
