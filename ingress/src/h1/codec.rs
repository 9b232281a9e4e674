//! HTTP/1.1 wire format towards an upstream: the request head we write, the
//! response head we parse (RFC 9112 §6.3 body framing), and the chunked
//! decoder. Pure functions over buffers, so every rule is unit-tested.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, uri::PathAndQuery};

/// Most headers a response head may carry (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) and trailer section we accept.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// A malformed or oversized upstream response.
#[derive(Debug, thiserror::Error)]
#[error("upstream response: {0}")]
pub struct Malformed(pub &'static str);

/// Writes the request line and headers. `chunked` adds the framing header
/// for a body of unknown length (the caller then chunk-encodes it).
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &PathAndQuery,
    headers: &HeaderMap,
    chunked: bool,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head from the front of `buf`, removing it. `Ok(None)`:
/// more bytes are needed. Interim 1xx responses other than 101 are skipped.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Malformed> {
    loop {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut raw);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many headers")),
            Err(_) => return Err(Malformed("invalid head")),
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status"))?;
        let http10 = resp.version == Some(0);
        // Header values become slices of the head's own bytes: no copy each.
        let base = buf.as_ptr() as usize;
        let mut spans = Vec::with_capacity(resp.headers.len());
        for h in resp.headers.iter() {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Malformed("header name"))?;
            let start = h.value.as_ptr() as usize - base;
            spans.push((name, start, start + h.value.len()));
        }
        let bytes = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (name, start, end) in spans {
            let value = HeaderValue::from_maybe_shared(bytes.slice(start..end))
                .map_err(|_| Malformed("header value"))?;
            headers.append(name, value);
        }
        // Both framings at once is a response-splitting sign (RFC 9112
        // §6.3): Transfer-Encoding wins, and the connection is not reused.
        let ambiguous =
            headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH);
        let framing = framing(&mut headers, status, method)?;
        let keep_alive =
            connection_persists(&headers, http10) && framing != Framing::UntilClose && !ambiguous;
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 §6.3, in order: no body for HEAD/1xx/204/304; Transfer-Encoding
/// overrides Content-Length (which is then dropped, so the two can never
/// reach the client together); differing Content-Lengths are an error.
fn framing(h: &mut HeaderMap, status: StatusCode, method: &Method) -> Result<Framing, Malformed> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if h.contains_key(TRANSFER_ENCODING) {
        h.remove(CONTENT_LENGTH);
        let last = h
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length = None;
    for v in h.get_all(CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or(Malformed("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 only with keep-alive.
fn connection_persists(h: &HeaderMap, http10: bool) -> bool {
    let has = |token: &[u8]| {
        h.get_all(CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if http10 {
        has(b"keep-alive")
    } else {
        !has(b"close")
    }
}

/// What the chunked decoder produced.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    Data(Bytes),
    /// More input needed.
    Need,
    /// The last chunk and the trailer section (empty when none) were read.
    End(HeaderMap),
}

/// RFC 9112 §7.1 chunked decoder over a buffer that the caller keeps filling.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, Malformed> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Chunk::Need);
                    };
                    // Extensions after ';' carry nothing a proxy needs.
                    let size = line[..].split(|&b| b == b';').next().unwrap_or(&[]);
                    let size = size.trim_ascii();
                    if size.is_empty() || size.len() > 15 {
                        return Err(Malformed("invalid chunk size"));
                    }
                    let mut n = 0u64;
                    for &c in size {
                        let d = (c as char)
                            .to_digit(16)
                            .ok_or(Malformed("invalid chunk size"))?;
                        n = n * 16 + u64::from(d);
                    }
                    self.state = if n == 0 {
                        State::Trailers
                    } else {
                        State::Data(n)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::Need);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    self.state = if take == left {
                        State::DataEnd
                    } else {
                        State::Data(left - take)
                    };
                    return Ok(Chunk::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::Need);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    // The whole trailer section ends with an empty line.
                    let end = match find_blank_line(buf) {
                        Some(end) => end,
                        None if buf.len() > MAX_TRAILERS => {
                            return Err(Malformed("trailers too large"));
                        }
                        None => return Ok(Chunk::Need),
                    };
                    let section = buf.split_to(end);
                    self.state = State::Done;
                    return Ok(Chunk::End(parse_trailers(&section)?));
                }
                State::Done => return Ok(Chunk::End(HeaderMap::new())),
            }
        }
    }
}

/// One line without its CRLF, removed from `buf`.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, Malformed> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() >= max => Err(Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// Length of the trailer section including its final empty line.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_trailers(section: &[u8]) -> Result<HeaderMap, Malformed> {
    let mut map = HeaderMap::new();
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Malformed("invalid trailer"))?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| Malformed("trailer name"))?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| Malformed("trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<Head>, Malformed> {
        parse_head(&mut BytesMut::from(raw), &method)
    }

    #[test]
    fn request_head_carries_method_target_headers_and_chunked_framing() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a.test"));
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &Method::POST,
            &PathAndQuery::from_static("/x?y=1"),
            &h,
            true,
        );
        assert_eq!(
            out,
            b"POST /x?y=1 HTTP/1.1\r\nhost: a.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_rfc9112() {
        let f = |raw: &str, m: Method| head(raw, m).unwrap().unwrap();
        let h = f(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            Method::GET,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(h.framing, Framing::Empty);
        let h = f("HTTP/1.1 204 No Content\r\n\r\n", Method::GET);
        assert_eq!(h.framing, Framing::Empty);
        let h = f(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Empty);
        let h = f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(
            !h.headers.contains_key(CONTENT_LENGTH),
            "TE wins, CL dropped"
        );
        assert!(!h.keep_alive, "a connection that sent both is not reused");
        let h = f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            Method::GET,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = f("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = f(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            Method::GET,
        );
        assert!(!h.keep_alive);
        let h = f("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", Method::GET);
        assert!(!h.keep_alive, "HTTP/1.0 closes unless keep-alive");
        let h = f(
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n",
            Method::GET,
        );
        assert!(h.keep_alive);
        let h = f(
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Length(4));
    }

    #[test]
    fn bad_heads_are_errors_and_partial_heads_wait() {
        assert!(
            head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .unwrap()
                .is_none()
        );
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(head(raw, Method::GET).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn interim_responses_are_skipped_but_101_is_kept() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        );
        let h = parse_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(&buf[..], b"x", "the body stays in the buffer");
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::SWITCHING_PROTOCOLS);
    }

    #[test]
    fn header_values_are_kept_byte_for_byte() {
        let h = head(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Y:  spaced \r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        let cookies: Vec<_> = h.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(h.headers["x-y"], "spaced");
    }

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap), Malformed> {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::End(t) => return Ok((out, t)),
                Chunk::Need => {
                    if fed >= input.len() {
                        return Err(Malformed("eof"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_decodes_at_any_split_with_extensions_and_trailers() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers) = decode_all(wire, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers["x"], "y");
        }
        let (data, trailers) = decode_all(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!((data.as_slice(), trailers.len()), (&b"abc"[..], 0));
    }

    #[test]
    fn chunked_rejects_malformed_input() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\nhello\r\n",
            b"fffffffffffffffff\r\n",
        ] {
            assert!(decode_all(wire, 1).is_err(), "{wire:?}");
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_all(&long, long.len()).is_err());
    }
}
