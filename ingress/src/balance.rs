//! Endpoint choice: per-request round-robin with cursors that outlive
//! Snapshots (keyed by `namespace/name:port`), affinity cookies, canary dice.

use crate::headers::splitmix;
use arc_swap::ArcSwap;
use http::HeaderMap;
use model::Backend;
use model::ingress::Canary;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

type Cursors = HashMap<Arc<str>, Arc<AtomicUsize>>;

/// Round-robin cursors, read lock-free; a new backend key is added by
/// copy-on-write (once per Service port, not per request).
#[derive(Default)]
pub struct Balancer {
    cursors: ArcSwap<Cursors>,
}

impl Balancer {
    /// The next ticket of `key`'s cursor.
    pub fn next(&self, key: &Arc<str>) -> usize {
        if let Some(c) = self.cursors.load().get(key) {
            return c.fetch_add(1, Ordering::Relaxed);
        }
        self.cursors.rcu(|m| {
            let mut m = Cursors::clone(m);
            m.entry(key.clone()).or_default();
            m
        });
        self.cursors
            .load()
            .get(key)
            .map(|c| c.fetch_add(1, Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// The affinity cookie value naming an endpoint (a hash: the address is not exposed).
pub fn cookie_value(addr: &SocketAddr) -> String {
    let mut h = std::hash::DefaultHasher::new();
    addr.hash(&mut h);
    format!("{:016x}", splitmix(h.finish()))
}

/// The index (among `usable`) of the endpoint a cookie names, if still usable.
pub fn from_cookie<'a>(
    headers: &HeaderMap,
    name: &str,
    usable: impl Iterator<Item = &'a Backend>,
) -> Option<usize> {
    let want = cookie(headers, name)?;
    usable
        .enumerate()
        .find(|(_, b)| cookie_value(&b.addr) == want)
        .map(|(i, _)| i)
}

/// Whether this request goes to the canary: by header (`always`/`never`, an
/// exact value, or a pattern), else by cookie (`always`/`never`), else by weight.
pub fn use_canary(c: &Canary, headers: &HeaderMap) -> bool {
    // ingress-nginx's order: header, then cookie, then weight.
    if let Some(name) = &c.by_header
        && let Some(v) = headers.get(name.as_str())
    {
        match (&c.by_header_value, &c.by_header_pattern) {
            (Some(want), _) if v.as_bytes() == want.as_bytes() => return true,
            (Some(_), _) => {}
            (None, Some(p)) if v.to_str().is_ok_and(|v| p.0.is_match(v)) => return true,
            (None, Some(_)) => {}
            (None, None) if v == "always" => return true,
            (None, None) if v == "never" => return false,
            (None, None) => {}
        }
    }
    if let Some(name) = &c.by_cookie {
        match cookie(headers, name) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    c.weight > 0 && roll(c.weight_total) < c.weight
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// A uniform-enough number in 0..total without a lock or a syscall.
fn roll(total: u32) -> u32 {
    static SEQ: AtomicU64 = AtomicU64::new(0x5EED);
    (splitmix(SEQ.fetch_add(1, Ordering::Relaxed)) % u64::from(total.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cursors_survive_and_are_per_key() {
        let b = Balancer::default();
        let a: Arc<str> = "ns/a:80".into();
        let c: Arc<str> = "ns/c:80".into();
        assert_eq!(
            (b.next(&a), b.next(&a), b.next(&c), b.next(&a)),
            (0, 1, 0, 2)
        );
    }

    #[test]
    fn canary_header_rules_and_weight() {
        let mut h = HeaderMap::new();
        let c = Canary {
            by_header: Some("x-canary".into()),
            ..Default::default()
        };
        assert!(!use_canary(&c, &h));
        h.insert("x-canary", HeaderValue::from_static("always"));
        assert!(use_canary(&c, &h));
        h.insert("x-canary", HeaderValue::from_static("never"));
        let all = Canary {
            weight: 100,
            ..c.clone()
        };
        assert!(!use_canary(&all, &h));
        let v = Canary {
            by_header_value: Some("blue".into()),
            ..c
        };
        h.insert("x-canary", HeaderValue::from_static("blue"));
        assert!(use_canary(&v, &h));
        h.insert("x-canary", HeaderValue::from_static("green"));
        assert!(!use_canary(&v, &h));
        let half = Canary {
            weight: 50,
            ..Default::default()
        };
        let hits = (0..1000)
            .filter(|_| use_canary(&half, &HeaderMap::new()))
            .count();
        assert!((350..650).contains(&hits), "{hits}");
        // canary-weight-total: 1 in 1000.
        let rare = Canary {
            weight: 1,
            weight_total: 1000,
            ..Default::default()
        };
        let hits = (0..10_000)
            .filter(|_| use_canary(&rare, &HeaderMap::new()))
            .count();
        assert!((1..40).contains(&hits), "{hits}");
    }

    #[test]
    fn canary_header_pattern_unless_a_value_is_set() {
        let p = Canary {
            by_header: Some("x-canary".into()),
            by_header_pattern: Some(model::ingress::HeaderPattern(
                regex::Regex::new("beta|gamma").unwrap(),
            )),
            ..Default::default()
        };
        let h = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-canary", HeaderValue::from_static(v));
            h
        };
        assert!(
            use_canary(&p, &h("user-in-beta")),
            "unanchored, as ingress-nginx"
        );
        assert!(!use_canary(&p, &h("alpha")));
        assert!(
            !use_canary(&p, &h("always")),
            "a pattern replaces always/never"
        );
        let with_value = Canary {
            by_header_value: Some("gold".into()),
            ..p
        };
        assert!(
            !use_canary(&with_value, &h("beta")),
            "the value wins over the pattern"
        );
        assert!(use_canary(&with_value, &h("gold")));
    }

    #[test]
    fn canary_cookie_after_header_before_weight() {
        let c = Canary {
            by_header: Some("x-canary".into()),
            by_cookie: Some("canary".into()),
            weight: 100,
            ..Default::default()
        };
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(!use_canary(&c, &with(&[("cookie", "a=1; canary=never")])));
        assert!(use_canary(
            &c,
            &with(&[("cookie", "canary=never"), ("x-canary", "always")])
        ));
        let none = Canary { weight: 0, ..c };
        assert!(use_canary(
            &none,
            &with(&[("cookie", "a=1"), ("cookie", "canary=always")])
        ));
        assert!(
            !use_canary(&none, &with(&[("cookie", "canary=maybe")])),
            "other values fall through to the weight"
        );
    }

    #[test]
    fn cookie_names_an_endpoint() {
        let mk = |p| Backend {
            addr: SocketAddr::from(([127, 0, 0, 1], p)),
            ready: true,
            serving: true,
            terminating: false,
            placement: None,
        };
        let bs = [mk(1), mk(2), mk(3)];
        let mut h = HeaderMap::new();
        let v = format!("other=1; route={}", cookie_value(&bs[2].addr));
        h.insert(http::header::COOKIE, HeaderValue::from_str(&v).unwrap());
        assert_eq!(from_cookie(&h, "route", bs.iter()), Some(2));
        assert_eq!(from_cookie(&h, "route", bs[..2].iter()), None);
        assert_eq!(from_cookie(&h, "nope", bs.iter()), None);
    }
}
