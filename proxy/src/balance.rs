//! Endpoint choice for one Service port: round-robin cursor plus optional
//! ClientIP affinity. Both live outside the Snapshot, keyed by (Service id,
//! port), so a reload neither resets fairness nor forgets affinity.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// ClientIP affinity of one Service port: client address -> (endpoint, last
/// use). A mutex is fine here: only Services that ask for affinity take it,
/// for a few hundred nanoseconds per new connection or UDP session.
#[derive(Default, Debug)]
pub(crate) struct Affinity {
    table: Mutex<Table>,
}

#[derive(Default, Debug)]
struct Table {
    entries: HashMap<IpAddr, (SocketAddr, Instant)>,
    /// Size at which `remember` next drops expired entries: without it a
    /// table of clients seen once would only ever grow (spoofed UDP sources
    /// make that cheap). Doubling keeps the sweeps amortized O(1).
    sweep_at: usize,
}

/// Smallest table size that triggers a sweep.
const SWEEP_MIN: usize = 1024;

impl Affinity {
    /// The remembered endpoint of `client` if used within `timeout`; the
    /// timeout slides (each hit renews it).
    pub fn lookup(&self, client: IpAddr, timeout: Duration, now: Instant) -> Option<SocketAddr> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.entries.get_mut(&client) {
            Some((addr, last)) if now.saturating_duration_since(*last) < timeout => {
                *last = now;
                Some(*addr)
            }
            Some(_) => {
                t.entries.remove(&client);
                None
            }
            None => None,
        }
    }

    pub fn remember(&self, client: IpAddr, endpoint: SocketAddr, timeout: Duration, now: Instant) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.entries.insert(client, (endpoint, now));
        if t.entries.len() >= t.sweep_at.max(SWEEP_MIN) {
            t.entries
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < timeout);
            t.sweep_at = 2 * t.entries.len();
        }
    }

    /// Drops entries whose endpoint is gone or that have expired.
    pub fn prune(&self, endpoints: &HashSet<SocketAddr>, timeout: Duration, now: Instant) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.entries.retain(|_, (addr, last)| {
            endpoints.contains(addr) && now.saturating_duration_since(*last) < timeout
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.lock().unwrap().entries.len()
    }
}

/// The stable identity of a Service port: its name when it has one (the
/// number may be edited), else protocol and number.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) enum PortId {
    Name(String),
    Number(model::Protocol, u16),
}

pub(crate) type PortKey = (Arc<str>, PortId);

/// Balancing state that survives reloads.
#[derive(Default)]
pub(crate) struct BalanceState {
    cursors: HashMap<PortKey, Arc<AtomicUsize>>,
    affinity: HashMap<PortKey, Arc<Affinity>>,
}

impl BalanceState {
    pub fn cursor(&mut self, key: &PortKey) -> Arc<AtomicUsize> {
        self.cursors.entry(key.clone()).or_default().clone()
    }

    pub fn affinity(&mut self, key: &PortKey) -> Arc<Affinity> {
        self.affinity.entry(key.clone()).or_default().clone()
    }

    /// Forgets the state of ports that no longer exist.
    pub fn forget(&mut self, dead: &HashSet<PortKey>) {
        for k in dead {
            self.cursors.remove(k);
            self.affinity.remove(k);
        }
    }
}

/// Where to start trying endpoints: the affinity endpoint if it is still
/// usable, else the next round-robin slot. Callers try `start, start+1, ...`
/// (mod n), each endpoint at most once.
pub(crate) fn start_index(
    endpoints: &crate::routes::Endpoints,
    cursor: &AtomicUsize,
    affinity: Option<(&Affinity, Duration)>,
    client: IpAddr,
) -> Option<usize> {
    if endpoints.is_empty() {
        return None;
    }
    if let Some((aff, timeout)) = affinity
        && let Some(addr) = aff.lookup(client, timeout, Instant::now())
        && let Some(i) = endpoints.position(addr)
    {
        return Some(i);
    }
    Some(cursor.fetch_add(1, Ordering::Relaxed) % endpoints.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 1000 + i)))
            .collect()
    }

    fn endpoints(n: u16) -> crate::routes::Endpoints {
        crate::routes::Endpoints::Some(addrs(n).into())
    }

    #[test]
    fn round_robin_is_even() {
        let eps = endpoints(3);
        let c = AtomicUsize::new(0);
        let mut hits = [0; 3];
        for _ in 0..300 {
            hits[start_index(&eps, &c, None, [127, 0, 0, 1].into()).unwrap()] += 1;
        }
        assert_eq!(hits, [100, 100, 100]);
        assert_eq!(
            start_index(&endpoints(0), &c, None, [127, 0, 0, 1].into()),
            None
        );
    }

    #[test]
    fn affinity_slides_and_expires() {
        let a = Affinity::default();
        let c: IpAddr = [10, 0, 0, 1].into();
        let ep = SocketAddr::from(([127, 0, 0, 1], 80));
        let t0 = Instant::now();
        let timeout = Duration::from_secs(10);
        a.remember(c, ep, timeout, t0);
        // Renewed at t0+8s, so still valid at t0+16s, then expired at t0+27s.
        assert_eq!(a.lookup(c, timeout, t0 + Duration::from_secs(8)), Some(ep));
        assert_eq!(a.lookup(c, timeout, t0 + Duration::from_secs(16)), Some(ep));
        assert_eq!(a.lookup(c, timeout, t0 + Duration::from_secs(27)), None);
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn clients_seen_once_do_not_grow_the_table_forever() {
        let a = Affinity::default();
        let ep = SocketAddr::from(([127, 0, 0, 1], 80));
        let timeout = Duration::from_secs(10);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            // One new client every millisecond: about 10,000 are live at once.
            let now = t0 + Duration::from_millis(u64::from(i));
            a.remember(IpAddr::from(i.to_be_bytes()), ep, timeout, now);
        }
        assert!(a.len() <= 2 * 10_000 + SWEEP_MIN, "{}", a.len());
        let last = t0 + Duration::from_millis(99_999);
        assert_eq!(
            a.lookup(IpAddr::from(99_999u32.to_be_bytes()), timeout, last),
            Some(ep),
            "live entries stay"
        );
    }

    #[test]
    fn affinity_prune_drops_gone_endpoints() {
        let a = Affinity::default();
        let now = Instant::now();
        let eps = addrs(2);
        let t = Duration::from_secs(60);
        a.remember([10, 0, 0, 1].into(), eps[0], t, now);
        a.remember([10, 0, 0, 2].into(), eps[1], t, now);
        let live: HashSet<SocketAddr> = [eps[1]].into_iter().collect();
        a.prune(&live, Duration::from_secs(60), now);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.lookup([10, 0, 0, 2].into(), Duration::from_secs(60), now),
            Some(eps[1])
        );
    }

    #[test]
    fn affinity_to_unusable_endpoint_falls_back_to_round_robin() {
        let eps = endpoints(2);
        let a = Affinity::default();
        let client: IpAddr = [10, 0, 0, 1].into();
        a.remember(
            client,
            SocketAddr::from(([127, 0, 0, 9], 9)),
            Duration::from_secs(60),
            Instant::now(),
        );
        let c = AtomicUsize::new(1);
        let got = start_index(&eps, &c, Some((&a, Duration::from_secs(60))), client);
        assert_eq!(got, Some(1));
    }
}
