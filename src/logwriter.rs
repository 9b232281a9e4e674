//! Where access-log lines go ([`ingress::access_log`], a line per request,
//! on by default): gathered in memory and written to stderr by a
//! thread of its own every second or at 64 KiB, like nginx's
//! `access_log ... buffer=64k flush=1s`: a request pays for a copy into the
//! buffer, not for a write(2). When stderr does not keep up and 4 MiB are
//! waiting (besides the batch being written), further lines are dropped and
//! counted (`nodeway_access_log_dropped_total`, and a line saying how
//! many), so a slow log never holds up a request. Every other line (the
//! `tracing` log) is written to stderr at once.

use prometheus_client::metrics::counter::Counter;
use std::io::{self, Write};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A buffer this full is written without waiting for the clock.
const FLUSH_AT: usize = 64 * 1024;
/// The longest an access-log line waits.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// What may wait while stderr is slow; beyond it lines are dropped.
const MAX_WAITING: usize = 4 << 20;

/// Access-log lines dropped because stderr did not keep up.
pub static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

static ACCESS: Buffer = Buffer::new(FLUSH_AT, MAX_WAITING);

/// Held from taking a batch until it is written, so batches come out in
/// order (the writer thread's and the one [`FlushOnDrop`] takes at exit); holds
/// how many drops were reported.
static WRITING: Mutex<u64> = Mutex::new(0);

/// The access log's sink ([`ingress::access_log::install`]): a request
/// copies its line into the buffer, or counts it dropped.
pub fn access_line(line: &[u8]) {
    if !ACCESS.push(line) {
        DROPPED.inc();
    }
}

/// Starts the thread that writes the access log (after the subscriber is
/// set up: it may log).
pub fn start() {
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| {
            loop {
                ACCESS.wait(FLUSH_EVERY);
                write_out();
            }
        });
    if let Err(e) = spawned {
        // Lines are kept (up to MAX_WAITING) and written at exit.
        tracing::error!(error = %e, "access-log writer not started");
    }
}

/// Writes what is waiting when dropped, after any batch being written, so
/// no line is lost or comes out of order: held by `main` to its end, by
/// return or panic.
pub struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        write_out();
    }
}

/// Takes the waiting lines and writes them, then says how many lines were
/// dropped since the last report.
fn write_out() {
    let mut reported = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    let lines = ACCESS.take();
    // In pieces, each under its own lock of stderr, so a slow stderr
    // holds up another thread's log line for one piece, not the batch.
    for piece in pieces(&lines, FLUSH_AT) {
        let _ = io::stderr().lock().write_all(piece);
    }
    ACCESS.give_back(lines);
    let dropped = DROPPED.get();
    if dropped > *reported {
        let _ = writeln!(
            io::stderr().lock(),
            "nodeway: {} access-log lines dropped: stderr did not keep up",
            dropped - *reported
        );
        *reported = dropped;
    }
}

/// `lines` cut after a newline into pieces of about `size` bytes (a line
/// longer than that is a piece of its own).
fn pieces(lines: &[u8], size: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = lines;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = match rest.len() <= size {
            true => rest.len(),
            false => match rest[..size].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => rest[size..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| size + i + 1),
            },
        };
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
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

    /// Returns once the lines reach `flush_at` or `wait` has passed.
    fn wait(&self, wait: Duration) {
        let lines = self.lock();
        if lines.len() < self.flush_at {
            let _ = self.full.wait_timeout(lines, wait);
        }
    }

    /// The lines waiting now.
    fn take(&self) -> Vec<u8> {
        let mut lines = self.lock();
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
    use ingress::access_log::{Entry, Format, Stamp, format_line};
    use std::sync::{Arc, Mutex};

    /// The access log's lines are what `tracing-subscriber` wrote for the
    /// event they replaced, in both formats, odd characters included: the
    /// event is emitted here as it was, through the formatter `main` sets
    /// up, and compared.
    #[test]
    fn access_lines_are_byte_for_byte_the_tracing_event_they_replaced() {
        struct Fixed;
        impl tracing_subscriber::fmt::time::FormatTime for Fixed {
            fn format_time(
                &self,
                w: &mut tracing_subscriber::fmt::format::Writer<'_>,
            ) -> std::fmt::Result {
                w.write_str("2026-12-06T07:10:10.078035Z")
            }
        }
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let method = http::Method::POST;
        let entries = [
            Entry {
                method: &method,
                client: "[::1]:40000".parse().unwrap(),
                path: "/a\"b\\c\td\u{1}é\u{301}",
                ingress: "ns/web",
                route_path: Some("/v1(/|$)(.*)"),
                upstream: Some("127.0.0.9:8080".parse().unwrap()),
                status: 502,
                bytes: Some(0),
                duration_us: 12,
            },
            Entry {
                method: &method,
                client: "127.0.0.1:1".parse().unwrap(),
                path: "/",
                ingress: "",
                route_path: None,
                upstream: None,
                status: 404,
                bytes: None,
                duration_us: 0,
            },
        ];
        for format in [Format::Text, Format::Json] {
            for e in &entries {
                let sink = Sink::default();
                let make = {
                    let sink = sink.clone();
                    move || sink.clone()
                };
                let b = tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_timer(Fixed)
                    .with_writer(make);
                let emit = || {
                    tracing::info!(
                        target: "nodeway::access",
                        method = %e.method,
                        client.addr = %e.client,
                        path = e.path,
                        ingress = e.ingress,
                        route.path = e.route_path,
                        upstream = ?e.upstream,
                        status = e.status,
                        bytes = e.bytes,
                        duration_us = e.duration_us,
                        "request"
                    )
                };
                match format {
                    Format::Text => tracing::subscriber::with_default(b.finish(), emit),
                    Format::Json => tracing::subscriber::with_default(b.json().finish(), emit),
                }
                let traced = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
                let mut ours = String::new();
                format_line(
                    format,
                    &Stamp::new("2026-12-06T07:10:10", 78035),
                    e,
                    &mut ours,
                );
                assert_eq!(ours, traced, "{format:?}");
            }
        }
    }

    #[test]
    fn lines_wait_until_the_clock_or_the_size_says() {
        let b = Buffer::new(16, 64);
        assert!(b.push(b"one\n") && b.push(b"two\n"));
        // Below the size: given up only when the wait is over.
        b.wait(Duration::from_millis(1));
        assert_eq!(b.take(), b"one\ntwo\n");
        assert!(b.take().is_empty());
        // At the size, a waiting writer is woken: long before its wait is
        // over (the margin is wide; this is not a timing test).
        std::thread::scope(|s| {
            let taker = s.spawn(|| {
                let started = std::time::Instant::now();
                b.wait(Duration::from_secs(600));
                (b.take(), started.elapsed())
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
        assert_eq!(b.take().len(), 20);
        assert!(b.push(b"0123456789\n"), "room again once written");
    }

    #[test]
    fn batches_are_written_in_pieces_cut_after_a_line() {
        let cut = |lines: &str, size| -> Vec<String> {
            pieces(lines.as_bytes(), size)
                .map(|p| String::from_utf8(p.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(cut("a\nbb\nccc\n", 5), ["a\nbb\n", "ccc\n"]);
        assert_eq!(cut("a\nbb\n", 64), ["a\nbb\n"]);
        assert_eq!(cut("long line\nx\n", 4), ["long line\n", "x\n"]);
        assert_eq!(cut("no newline", 4), ["no newline"]);
        assert!(cut("", 4).is_empty());
    }

    #[test]
    fn written_buffers_are_reused() {
        let b = Buffer::new(16, 1024);
        b.push(b"0123456789abcdef");
        let first = b.take();
        let reused = first.as_ptr();
        b.give_back(first);
        b.push(b"x");
        // Lines now go into the buffer given back.
        assert_eq!(b.take(), b"x");
        b.push(b"y");
        let third = b.take();
        assert_eq!((third.as_ptr(), &third[..]), (reused, &b"y"[..]));
    }
}
