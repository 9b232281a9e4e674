//! Header rules of a proxy hop: hop-by-hop headers removed, X-Forwarded-*,
//! X-Real-IP and X-Request-ID added.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the
/// Connection header names. `keep_upgrade` keeps Connection/Upgrade for a
/// protocol switch; `keep_te_trailers` keeps `TE: trailers` (gRPC needs it).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool, keep_te_trailers: bool) {
    // Most messages carry none of these: one scan of the names costs less
    // than a hashed remove per hop-by-hop name.
    if !h.keys().any(is_hop_by_hop) {
        if keep_upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return;
    }
    // Every Connection line counts, not only the first (RFC 9110 §5.3).
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|n| !n.is_empty())
        .filter(|n| !(keep_upgrade && n.eq_ignore_ascii_case(b"upgrade")))
        .filter_map(|n| HeaderName::from_bytes(n).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TRAILER);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::PROXY_AUTHORIZATION);
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    h.remove(header::TE);
    if keep_te_trailers && te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
}

fn is_hop_by_hop(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TE
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::TRAILER
        || n == header::PROXY_AUTHORIZATION
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
}

/// HTTP/2 may split the Cookie header into one field per cookie; an
/// HTTP/1.1 hop must get them joined into one line (RFC 9113 §8.2.3), as
/// many servers read only the first.
pub fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in h.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// True when a request asks for a protocol switch (WebSocket and friends).
pub fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// What the forwarded headers describe; the per-connection values are
/// rendered once per connection, not per request.
pub struct Forwarded {
    pub client_ip: HeaderValue,
    pub proto: HeaderValue,
    pub port: HeaderValue,
}

impl Forwarded {
    pub fn new(client: IpAddr, https: bool, port: u16) -> Forwarded {
        Forwarded {
            client_ip: HeaderValue::from_str(&client.to_string()).expect("an IP is a valid header"),
            proto: HeaderValue::from_static(if https { "https" } else { "http" }),
            port: HeaderValue::from(port),
        }
    }
}

/// Adds X-Forwarded-*/X-Real-IP, and X-Request-ID unless the client sent one.
pub fn add_forwarded(h: &mut HeaderMap, f: &Forwarded, host: &HeaderValue) {
    // Room for the six below at once, rather than the map growing twice.
    h.reserve(6);
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            HeaderValue::from_str(&format!("{prev}, {}", f.client_ip.to_str().unwrap_or(""))).ok()
        }
        _ => Some(f.client_ip.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(X_REAL_IP.clone(), f.client_ip.clone());
    h.insert(X_FORWARDED_PROTO.clone(), f.proto.clone());
    h.insert(X_FORWARDED_HOST.clone(), host.clone());
    h.insert(X_FORWARDED_PORT.clone(), f.port.clone());
    if !h.contains_key(&X_REQUEST_ID) {
        h.insert(X_REQUEST_ID.clone(), request_id());
    }
}

/// 32 hex digits, unique per process run (not a secret).
pub fn request_id() -> HeaderValue {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (u64::from(std::process::id()) << 32)
    });
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let a = splitmix(seed ^ n);
    let b = splitmix(a ^ n.rotate_left(17));
    let x = (u128::from(a) << 64) | u128::from(b);
    let mut buf = [0u8; 32];
    for (i, c) in buf.iter_mut().enumerate() {
        *c = b"0123456789abcdef"[((x >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header")
}

/// A well-mixed 64-bit hash (SplitMix64 finalizer).
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_removed_including_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let mut grpc = h.clone();
        strip_hop_by_hop(&mut h, false, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
        strip_hop_by_hop(&mut grpc, false, true);
        assert_eq!(grpc.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn every_connection_line_names_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-internal"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false, false);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
        let mut one = HeaderMap::new();
        one.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[header::COOKIE], "a=1");
    }

    #[test]
    fn forwarded_headers_append_and_keep_request_id() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        let host = HeaderValue::from_static("x.com");
        let f = Forwarded::new("127.0.0.9".parse().unwrap(), true, 8443);
        add_forwarded(&mut h, &f, &host);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.9");
        assert_eq!(h[&X_REAL_IP], "127.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_PORT], "8443");
        assert_eq!(h[&X_REQUEST_ID], "abc");
        assert_ne!(request_id(), request_id());
        assert_eq!(request_id().len(), 32);
    }
}
