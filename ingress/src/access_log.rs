//! The access log: one line per request, on by default (ingress-nginx logs
//! every request, and its users keep it on).
//!
//! A line is formatted here, into a buffer the thread reuses, and handed to
//! the sink the binary installs (its buffered writer); it does not go
//! through `tracing`. With the event (dispatch, field visiting,
//! formatting) the log cost a request 5.8 µs of CPU, now 1.1
//! (`bench/RESULTS.md`). This writes the same line, byte for
//! byte, as `tracing-subscriber`'s text and JSON formats wrote the event it
//! replaces (target `nodeway::access`, message `request`), so what reads
//! the log sees no change. Without a sink (the level turns it off, or a
//! test serves without one) there is no line and no formatting.

use http::Method;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The log's line format, as `--log-format` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Where lines go: a complete line, newline included, per call.
pub type Sink = fn(&[u8]);

static SINK: OnceLock<(Format, Sink)> = OnceLock::new();

/// Turns the access log on, for the whole process: the first call wins.
pub fn install(format: Format, sink: Sink) {
    let _ = SINK.set((format, sink));
}

/// Whether requests are logged (so that a request only keeps what its
/// line needs when there is a line).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// One request, as its line says it.
pub struct Entry<'a> {
    pub method: &'a Method,
    pub client: SocketAddr,
    pub path: &'a str,
    /// `namespace/name` of the Ingress; empty when no route matched.
    pub ingress: &'a str,
    pub route_path: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub status: u16,
    pub bytes: Option<u64>,
    pub duration_us: u64,
}

thread_local! {
    static LINE: RefCell<Line> = const {
        RefCell::new(Line {
            text: String::new(),
            clock: Clock {
                second: u64::MAX,
                prefix: String::new(),
            },
        })
    };
}

/// A thread's line buffer, reused from request to request.
struct Line {
    text: String,
    clock: Clock,
}

/// Logs `entry` if the log is on.
pub fn write(entry: &Entry<'_>) {
    let Some((format, sink)) = SINK.get() else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    LINE.with_borrow_mut(|line| {
        line.text.clear();
        let stamp = line.clock.stamp(now.as_secs(), now.subsec_micros());
        format_line(*format, &stamp, entry, &mut line.text);
        sink(line.text.as_bytes());
    });
}

/// The line of `entry` at time `stamp` (RFC 3339, UTC, microseconds).
pub fn format_line(format: Format, stamp: &Stamp<'_>, e: &Entry<'_>, out: &mut String) {
    match format {
        Format::Text => {
            // tracing-subscriber's full format: time, level, target, message.
            let _ = write!(out, "{stamp}  INFO nodeway::access: request");
            fields::<Text>(e, out);
            out.push('\n');
        }
        Format::Json => {
            let _ = write!(
                out,
                "{{\"timestamp\":\"{stamp}\",\"level\":\"INFO\",\"fields\":{{\"message\":\"request\""
            );
            fields::<Json>(e, out);
            out.push_str("},\"target\":\"nodeway::access\"}\n");
        }
    }
}

/// The fields, in the order the event had them; absent options are left
/// out, as tracing leaves out a `None`.
fn fields<S: Style>(e: &Entry<'_>, out: &mut String) {
    S::shown(out, "method", e.method);
    S::shown(out, "client.addr", &e.client);
    S::string(out, "path", e.path);
    S::string(out, "ingress", e.ingress);
    if let Some(p) = e.route_path {
        S::string(out, "route.path", p);
    }
    S::shown(out, "upstream", &format_args!("{:?}", e.upstream));
    S::number(out, "status", e.status.into());
    if let Some(b) = e.bytes {
        S::number(out, "bytes", b);
    }
    S::number(out, "duration_us", e.duration_us);
}

/// How a format writes one field.
trait Style {
    /// A string value, quoted and escaped.
    fn string(out: &mut String, name: &str, value: &str);
    /// A value recorded with `%` or `?` (tracing writes it as a string in
    /// JSON); its text never needs escaping here (a method, an address).
    fn shown(out: &mut String, name: &str, value: &dyn std::fmt::Display);
    fn number(out: &mut String, name: &str, value: u64);
}

/// ` name=value`, strings as Rust's `Debug` writes them.
struct Text;

impl Style for Text {
    fn string(out: &mut String, name: &str, value: &str) {
        let _ = write!(out, " {name}=");
        debug_str(value, out);
    }
    fn shown(out: &mut String, name: &str, value: &dyn std::fmt::Display) {
        let _ = write!(out, " {name}={value}");
    }
    fn number(out: &mut String, name: &str, value: u64) {
        let _ = write!(out, " {name}={value}");
    }
}

/// `,"name":value`, strings escaped as serde_json escapes them.
struct Json;

impl Style for Json {
    fn string(out: &mut String, name: &str, value: &str) {
        let _ = write!(out, ",\"{name}\":");
        json_str(value, out);
    }
    fn shown(out: &mut String, name: &str, value: &dyn std::fmt::Display) {
        let _ = write!(out, ",\"{name}\":\"{value}\"");
    }
    fn number(out: &mut String, name: &str, value: u64) {
        let _ = write!(out, ",\"{name}\":{value}");
    }
}

/// `{:?}` of a string, without the escaping machinery for the usual
/// printable-ASCII path.
fn debug_str(s: &str, out: &mut String) {
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The date and time of the last second a line was written in, so a line
/// formats only its microseconds (a thread writes many lines a second).
struct Clock {
    second: u64,
    prefix: String,
}

impl Clock {
    fn stamp(&mut self, second: u64, micros: u32) -> Stamp<'_> {
        if second != self.second {
            self.second = second;
            self.prefix.clear();
            let _ = write!(self.prefix, "{}", DateTime(second));
        }
        Stamp {
            prefix: &self.prefix,
            micros,
        }
    }
}

/// A point in time as `2026-12-06T07:10:10.078035Z`.
pub struct Stamp<'a> {
    prefix: &'a str,
    micros: u32,
}

impl<'a> Stamp<'a> {
    /// For tests: `prefix` is the date and time to the second.
    pub fn new(prefix: &'a str, micros: u32) -> Stamp<'a> {
        Stamp { prefix, micros }
    }
}

impl std::fmt::Display for Stamp<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}Z", self.prefix, self.micros)
    }
}

/// UTC date and time of a Unix second, to the second.
struct DateTime(u64);

impl std::fmt::Display for DateTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (days, secs) = (self.0 / 86400, self.0 % 86400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a str, route: Option<&'a str>, upstream: bool) -> Entry<'a> {
        Entry {
            method: &Method::GET,
            client: "127.0.0.1:51180".parse().unwrap(),
            path,
            ingress: if route.is_some() { "shop/api-v1" } else { "" },
            route_path: route,
            upstream: upstream.then(|| "127.0.102.1:8080".parse().unwrap()),
            status: if route.is_some() { 200 } else { 404 },
            bytes: Some(396),
            duration_us: 330,
        }
    }

    fn line(format: Format, e: &Entry<'_>) -> String {
        let mut out = String::new();
        format_line(
            format,
            &Stamp::new("2026-12-06T07:10:10", 78035),
            e,
            &mut out,
        );
        out
    }

    /// Lines as tracing-subscriber wrote them for the event this replaces
    /// (copied from the output of the build before).
    #[test]
    fn lines_are_those_tracing_wrote() {
        let routed = entry("/v1/orders", Some("/v1(/|$)(.*)"), true);
        assert_eq!(
            line(Format::Text, &routed),
            "2026-12-06T07:10:10.078035Z  INFO nodeway::access: request method=GET client.addr=127.0.0.1:51180 path=\"/v1/orders\" ingress=\"shop/api-v1\" route.path=\"/v1(/|$)(.*)\" upstream=Some(127.0.102.1:8080) status=200 bytes=396 duration_us=330\n"
        );
        assert_eq!(
            line(Format::Json, &routed),
            "{\"timestamp\":\"2026-12-06T07:10:10.078035Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":\"GET\",\"client.addr\":\"127.0.0.1:51180\",\"path\":\"/v1/orders\",\"ingress\":\"shop/api-v1\",\"route.path\":\"/v1(/|$)(.*)\",\"upstream\":\"Some(127.0.102.1:8080)\",\"status\":200,\"bytes\":396,\"duration_us\":330},\"target\":\"nodeway::access\"}\n"
        );
        let unrouted = Entry {
            bytes: None,
            ..entry("/", None, false)
        };
        assert_eq!(
            line(Format::Text, &unrouted),
            "2026-12-06T07:10:10.078035Z  INFO nodeway::access: request method=GET client.addr=127.0.0.1:51180 path=\"/\" ingress=\"\" upstream=None status=404 duration_us=330\n"
        );
        assert_eq!(
            line(Format::Json, &unrouted),
            "{\"timestamp\":\"2026-12-06T07:10:10.078035Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":\"GET\",\"client.addr\":\"127.0.0.1:51180\",\"path\":\"/\",\"ingress\":\"\",\"upstream\":\"None\",\"status\":404,\"duration_us\":330},\"target\":\"nodeway::access\"}\n"
        );
    }

    #[test]
    fn strings_are_escaped_as_debug_and_as_json() {
        let e = entry("/a\"b\\c\td\u{1}é", Some("/"), true);
        let text = line(Format::Text, &e);
        assert!(text.contains(r#"path="/a\"b\\c\td\u{1}é""#), "{text}");
        let json = line(Format::Json, &e);
        assert!(json.contains(r#""path":"/a\"b\\c\td\u0001é""#), "{json}");
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        let at = |s: u64| DateTime(s).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(at(1_796_541_010), "2026-12-06T07:10:10");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00");
    }

    #[test]
    fn the_clock_reformats_only_when_the_second_changes() {
        let mut c = Clock {
            second: u64::MAX,
            prefix: String::new(),
        };
        assert_eq!(c.stamp(0, 5).to_string(), "1970-01-01T00:00:00.000005Z");
        assert_eq!(
            c.stamp(0, 999_999).to_string(),
            "1970-01-01T00:00:00.999999Z"
        );
        assert_eq!(c.stamp(61, 0).to_string(), "1970-01-01T00:01:01.000000Z");
    }
}
