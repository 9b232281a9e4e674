//! Endpoint choice: per-request round-robin with cursors that outlive
//! Snapshots (keyed by `namespace/name:port`), affinity cookies, canary dice.

use crate::headers::splitmix;
use arc_swap::ArcSwap;
use http::HeaderMap;
use model::Backend;
use model::ingress::Canary;
use std::collections::HashMap;
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

/// The endpoint (index among `usable`) for upstream-hash-by `key`, by
/// rendezvous (highest random weight) hashing: every endpoint scores a hash
/// of the key and its address and the highest wins. Like a hash ring, one
/// key keeps its endpoint while the endpoints stay; removing an endpoint
/// moves only the keys it had (about 1/n), adding one takes about 1/n; and
/// there is no ring to rebuild when endpoints change. The hash is FNV-1a,
/// so every node and every restart agree.
///
/// With `subset` (upstream-hash-by-subset), the endpoints, in address
/// order, form groups of that size (the last one filled up from the start,
/// as ingress-nginx does); the key picks a group the same way, and requests
/// take its endpoints in turn (`ticket`).
pub fn by_key<'a>(
    key: &str,
    subset: Option<usize>,
    usable: impl Iterator<Item = &'a Backend> + Clone,
    ticket: impl FnOnce() -> usize,
) -> usize {
    let k = model::alloc::fnv1a(&[key.as_bytes()]);
    let score = |id: u64| splitmix(k ^ splitmix(id));
    let Some(size) = subset else {
        return usable
            .enumerate()
            .max_by_key(|(_, b)| score(addr_hash(&b.addr())))
            .map_or(0, |(i, _)| i);
    };
    let mut order: Vec<(SocketAddr, usize)> =
        usable.enumerate().map(|(i, b)| (b.addr(), i)).collect();
    order.sort_unstable();
    let n = order.len().max(1);
    let size = size.clamp(1, n);
    let groups = n.div_ceil(size);
    let group = (0..groups as u64).max_by_key(|g| score(*g)).unwrap_or(0) as usize;
    order
        .get((group * size + ticket() % size) % n)
        .map_or(0, |(_, i)| *i)
}

/// A hash of an endpoint address that every process computes alike.
fn addr_hash(a: &SocketAddr) -> u64 {
    let port = a.port().to_be_bytes();
    match a.ip() {
        std::net::IpAddr::V4(ip) => model::alloc::fnv1a(&[&ip.octets(), &port]),
        std::net::IpAddr::V6(ip) => model::alloc::fnv1a(&[&ip.octets(), &port]),
    }
}

/// The affinity cookie value naming an endpoint (a hash: the address is
/// not exposed). The same on every node and after a restart, so a cookie
/// one nodeway set is honoured by the others.
pub fn cookie_value(addr: &SocketAddr) -> String {
    format!("{:016x}", splitmix(addr_hash(addr)))
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
        .find(|(_, b)| cookie_value(&b.addr()) == want)
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

    fn backends(n: u16) -> Vec<Backend> {
        (1..=n)
            .map(|p| Backend {
                ip: [127, 0, 0, 1].into(),
                port: p,
                ready: true,
                serving: true,
                terminating: false,
                placement: None,
            })
            .collect()
    }

    #[test]
    fn a_key_keeps_its_endpoint_and_removal_moves_only_its_keys() {
        let all = backends(10);
        let pick = |bs: &[Backend], k: &str| bs[by_key(k, None, bs.iter(), || 0)].addr();
        let keys: Vec<String> = (0..2000).map(|i| format!("/item/{i}")).collect();
        let before: Vec<SocketAddr> = keys.iter().map(|k| pick(&all, k)).collect();
        assert_eq!(
            before,
            keys.iter().map(|k| pick(&all, k)).collect::<Vec<_>>()
        );
        // Spread: every endpoint gets a fair share (200 expected).
        for b in &all {
            let got = before.iter().filter(|a| **a == b.addr()).count();
            assert!((120..290).contains(&got), "{}: {got}", b.addr());
        }
        // One endpoint gone: only its keys move, and the order of the
        // others does not matter.
        let gone = all[3].addr();
        let mut rest: Vec<Backend> = all.iter().filter(|b| b.addr() != gone).cloned().collect();
        rest.reverse();
        for (k, was) in keys.iter().zip(&before) {
            let now = pick(&rest, k);
            if *was != gone {
                assert_eq!(now, *was, "{k} moved");
            }
        }
    }

    #[test]
    fn a_subset_key_spreads_over_one_group() {
        let all = backends(9);
        let mut seen = std::collections::HashSet::new();
        for t in 0..30 {
            seen.insert(all[by_key("tenant-a", Some(3), all.iter(), || t)].addr());
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        let mut again = std::collections::HashSet::new();
        for t in 0..30 {
            let mut rev = all.clone();
            rev.reverse();
            again.insert(rev[by_key("tenant-a", Some(3), rev.iter(), || t)].addr());
        }
        assert_eq!(seen, again, "groups follow addresses, not list order");
        let groups: std::collections::HashSet<_> = (0..50)
            .map(|i| {
                all[by_key(&format!("t{i}"), Some(3), all.iter(), || 0)]
                    .addr()
                    .port()
                    .saturating_sub(1)
                    / 3
            })
            .collect();
        assert!(groups.len() > 1, "keys use more than one group");
    }

    #[test]
    fn cookie_names_an_endpoint() {
        let mk = |p| Backend {
            ip: [127, 0, 0, 1].into(),
            port: p,
            ready: true,
            serving: true,
            terminating: false,
            placement: None,
        };
        let bs = [mk(1), mk(2), mk(3)];
        let mut h = HeaderMap::new();
        let v = format!("other=1; route={}", cookie_value(&bs[2].addr()));
        h.insert(http::header::COOKIE, HeaderValue::from_str(&v).unwrap());
        assert_eq!(from_cookie(&h, "route", bs.iter()), Some(2));
        assert_eq!(from_cookie(&h, "route", bs[..2].iter()), None);
        assert_eq!(from_cookie(&h, "nope", bs.iter()), None);
    }
}
