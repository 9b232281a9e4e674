//! Per-Service L4 metrics. A route holds its Service's [`LazyServiceMetrics`]
//! (one per Service, made when a Snapshot is applied); the label sets are
//! created on first use, so the data path only bumps atomics and a cluster
//! of 10,000 mostly idle Services neither allocates nor exports nine
//! zero-valued series for each.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabel {
    pub service: Arc<str>,
}

/// The counters of one Service, cloned out of the families (clones share
/// the underlying atomics).
#[derive(Clone, Debug, Default)]
pub(crate) struct ServiceMetrics {
    pub connections: Counter,
    pub active: Gauge,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connect_failures: Counter,
    pub no_endpoint: Counter,
    pub udp_sessions: Counter,
    pub udp_active: Gauge,
    pub udp_evicted: Counter,
}

/// The metric families, shared by every Service's lazy handles.
#[derive(Default)]
struct Families {
    connections: Family<ServiceLabel, Counter>,
    active: Family<ServiceLabel, Gauge>,
    bytes_in: Family<ServiceLabel, Counter>,
    bytes_out: Family<ServiceLabel, Counter>,
    connect_failures: Family<ServiceLabel, Counter>,
    no_endpoint: Family<ServiceLabel, Counter>,
    udp_sessions: Family<ServiceLabel, Counter>,
    udp_active: Family<ServiceLabel, Gauge>,
    udp_evicted: Family<ServiceLabel, Counter>,
    bind_failures: Family<ServiceLabel, Counter>,
}

impl Families {
    /// Takes a Service's series out of every family.
    fn remove(&self, id: &Arc<str>) {
        let l = ServiceLabel {
            service: id.clone(),
        };
        for c in [
            &self.connections,
            &self.bytes_in,
            &self.bytes_out,
            &self.connect_failures,
            &self.no_endpoint,
            &self.udp_sessions,
            &self.udp_evicted,
            &self.bind_failures,
        ] {
            c.remove(&l);
        }
        self.active.remove(&l);
        self.udp_active.remove(&l);
    }

    fn create(&self, id: &Arc<str>) -> ServiceMetrics {
        let l = ServiceLabel {
            service: id.clone(),
        };
        ServiceMetrics {
            connections: self.connections.get_or_create_owned(&l),
            active: self.active.get_or_create_owned(&l),
            bytes_in: self.bytes_in.get_or_create_owned(&l),
            bytes_out: self.bytes_out.get_or_create_owned(&l),
            connect_failures: self.connect_failures.get_or_create_owned(&l),
            no_endpoint: self.no_endpoint.get_or_create_owned(&l),
            udp_sessions: self.udp_sessions.get_or_create_owned(&l),
            udp_active: self.udp_active.get_or_create_owned(&l),
            udp_evicted: self.udp_evicted.get_or_create_owned(&l),
        }
    }
}

/// One Service's handles, created on first use (dereference it).
pub(crate) struct LazyServiceMetrics {
    id: Arc<str>,
    families: Arc<Families>,
    cell: OnceLock<ServiceMetrics>,
    /// Set when the Service is gone: a first use after that counts into
    /// handles that are not exported, rather than bringing the series back.
    gone: AtomicBool,
}

impl std::ops::Deref for LazyServiceMetrics {
    type Target = ServiceMetrics;

    fn deref(&self) -> &ServiceMetrics {
        self.cell.get_or_init(|| {
            if self.gone.load(Ordering::Acquire) {
                return ServiceMetrics::default();
            }
            let m = self.families.create(&self.id);
            // `forget` sets `gone` before it removes the series: if it ran
            // while they were being created, take them out again.
            if self.gone.load(Ordering::Acquire) {
                self.families.remove(&self.id);
            }
            m
        })
    }
}

pub(crate) struct Metrics {
    families: Arc<Families>,
    cache: Mutex<HashMap<Arc<str>, Arc<LazyServiceMetrics>>>,
}

impl Metrics {
    /// Registers every family under `nodeway_l4_*`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Families::default();
        let r = registry.sub_registry_with_prefix("nodeway_l4");
        r.register(
            "connections",
            "TCP connections accepted",
            m.connections.clone(),
        );
        r.register(
            "connections_active",
            "TCP connections being proxied",
            m.active.clone(),
        );
        r.register(
            "bytes_in",
            "Bytes from clients to endpoints",
            m.bytes_in.clone(),
        );
        r.register(
            "bytes_out",
            "Bytes from endpoints to clients",
            m.bytes_out.clone(),
        );
        r.register(
            "connect_failures",
            "Endpoint connects that failed or timed out",
            m.connect_failures.clone(),
        );
        r.register(
            "no_endpoint_rejects",
            "Connections reset and datagrams dropped for lack of a usable endpoint",
            m.no_endpoint.clone(),
        );
        r.register(
            "udp_sessions",
            "UDP sessions created",
            m.udp_sessions.clone(),
        );
        r.register(
            "udp_sessions_active",
            "UDP sessions open",
            m.udp_active.clone(),
        );
        r.register(
            "udp_sessions_evicted",
            "UDP sessions evicted because the session table was full",
            m.udp_evicted.clone(),
        );
        r.register(
            "bind_failures",
            "Listener bind attempts that failed",
            m.bind_failures.clone(),
        );
        Metrics {
            families: Arc::new(m),
            cache: Mutex::default(),
        }
    }

    /// The cached handles of one Service, creating its label set on first use.
    pub fn service(&self, id: &Arc<str>) -> Arc<LazyServiceMetrics> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(LazyServiceMetrics {
                    id: id.clone(),
                    families: self.families.clone(),
                    cell: OnceLock::new(),
                    gone: AtomicBool::new(false),
                })
            })
            .clone()
    }

    pub fn bind_failed(&self, id: &Arc<str>) {
        self.families
            .bind_failures
            .get_or_create(&ServiceLabel {
                service: id.clone(),
            })
            .inc();
    }

    /// Forgets the label sets of Services that are gone, so deleted Services
    /// do not accumulate series forever. Connections still open keep
    /// counting into their (now unexported) handles.
    pub fn forget(&self, gone: &HashSet<Arc<str>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|id, lazy| {
            if !gone.contains(id) {
                return true;
            }
            lazy.gone.store(true, Ordering::Release);
            self.families.remove(id);
            false
        });
    }
}
