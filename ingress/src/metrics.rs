//! Plane metrics: requests by ingress/host/status class, latency, upstream
//! connect errors, upstream requests in flight. Label sets are built once per
//! (ingress, host) and cached; a request only bumps counters.

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    ingress: String,
    host: String,
    status: String,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
type Key = (Arc<str>, Arc<str>);

pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    cache: ArcSwap<HashMap<Key, Arc<[Counter; 5]>>>,
    pub latency: Histogram,
    pub connect_errors: Counter,
    pub upstream_inflight: Gauge,
    pub upstream_open: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            cache: ArcSwap::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            connect_errors: Counter::default(),
            upstream_inflight: Gauge::default(),
            upstream_open: Gauge::default(),
        };
        registry.register(
            "nodeway_ingress_requests",
            "HTTP requests served, by ingress, host and status class",
            m.requests.clone(),
        );
        registry.register(
            "nodeway_ingress_request_duration_seconds",
            "Time from request head to response head",
            m.latency.clone(),
        );
        registry.register(
            "nodeway_ingress_upstream_connect_errors",
            "Failed connects to endpoints",
            m.connect_errors.clone(),
        );
        registry.register(
            "nodeway_ingress_upstream_in_flight",
            "Upstream requests in flight (pooled connections busy)",
            m.upstream_inflight.clone(),
        );
        registry.register(
            "nodeway_ingress_upstream_connections",
            "Open upstream connections, busy and idle (the pools' size)",
            m.upstream_open.clone(),
        );
        m
    }

    /// Counts one response.
    pub fn count(&self, ingress: &Arc<str>, host: &Arc<str>, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let key = (ingress.clone(), host.clone());
        if let Some(c) = self.cache.load().get(&key) {
            c[class].inc();
            return;
        }
        let counters: [Counter; 5] = std::array::from_fn(|i| {
            self.requests
                .get_or_create(&RequestLabels {
                    ingress: ingress.to_string(),
                    host: host.to_string(),
                    status: CLASSES[i].to_string(),
                })
                .clone()
        });
        counters[class].inc();
        let counters = Arc::new(counters);
        self.cache.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(key.clone(), counters.clone());
            m
        });
    }
}
