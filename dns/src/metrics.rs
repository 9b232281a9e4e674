//! Plane metrics. Every counter a query touches is created up front and
//! indexed by small enums, so the query path neither formats labels nor
//! takes the Family lock; the latency histogram is a set of atomics.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const QTYPES: [&str; 10] = [
    "A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "SOA", "NS", "ANY", "other",
];
const RCODES: [&str; 6] = [
    "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "other",
];
const FWD_ERRORS: [&str; 3] = ["timeout", "network", "overload"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    qtype: &'static str,
    rcode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why a forward failed.
#[derive(Clone, Copy, Debug)]
pub enum ForwardError {
    Timeout = 0,
    Network = 1,
    /// Too many forwards in flight: refused without asking upstream.
    Overload = 2,
}

#[derive(Clone)]
pub struct Metrics {
    queries: Arc<[[Counter; RCODES.len()]; QTYPES.len()]>,
    pub latency: Latency,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    forward_errors: Arc<[Counter; FWD_ERRORS.len()]>,
    pub generation: Gauge,
    pub names: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let queries_family = Family::<QueryLabels, Counter>::default();
        let queries = Arc::new(std::array::from_fn(|q| {
            std::array::from_fn(|r| {
                queries_family.get_or_create_owned(&QueryLabels {
                    qtype: QTYPES[q],
                    rcode: RCODES[r],
                })
            })
        }));
        let fwd_family = Family::<ReasonLabels, Counter>::default();
        let forward_errors = Arc::new(std::array::from_fn(|i| {
            fwd_family.get_or_create_owned(&ReasonLabels {
                reason: FWD_ERRORS[i],
            })
        }));
        let m = Metrics {
            queries,
            latency: Latency::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            forward_errors,
            generation: Gauge::default(),
            names: Gauge::default(),
        };
        registry.register(
            "nodeway_dns_queries",
            "DNS queries answered, by query type and response code",
            queries_family,
        );
        registry.register(
            "nodeway_dns_request_duration_seconds",
            "Time to answer a DNS query",
            m.latency.clone(),
        );
        registry.register(
            "nodeway_dns_cache_hits",
            "Forwarded names answered from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "nodeway_dns_cache_misses",
            "Forwarded names not in the cache",
            m.cache_misses.clone(),
        );
        registry.register(
            "nodeway_dns_cache_entries",
            "Entries in the forwarding cache",
            m.cache_entries.clone(),
        );
        registry.register(
            "nodeway_dns_forward_errors",
            "Forwards that failed, by reason",
            fwd_family,
        );
        registry.register(
            "nodeway_dns_table_generation",
            "Snapshot generation the DNS table was built from",
            m.generation.clone(),
        );
        registry.register(
            "nodeway_dns_table_names",
            "Names in the DNS table",
            m.names.clone(),
        );
        m
    }

    pub fn query(&self, qtype: RecordType, rcode: ResponseCode, took: Duration) {
        let q = match qtype {
            RecordType::A => 0,
            RecordType::AAAA => 1,
            RecordType::SRV => 2,
            RecordType::PTR => 3,
            RecordType::TXT => 4,
            RecordType::CNAME => 5,
            RecordType::SOA => 6,
            RecordType::NS => 7,
            RecordType::ANY => 8,
            _ => 9,
        };
        let r = match rcode {
            ResponseCode::NoError => 0,
            ResponseCode::NXDomain => 1,
            ResponseCode::ServFail => 2,
            ResponseCode::Refused => 3,
            ResponseCode::FormErr => 4,
            _ => 5,
        };
        self.queries[q][r].inc();
        self.latency.observe(took);
    }

    pub fn forward_error(&self, e: ForwardError) {
        self.forward_errors[e as usize].inc();
    }
}

/// Upper bounds (seconds) of the latency buckets.
const BOUNDS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0,
];

/// A lock-free histogram (prometheus-client's takes a lock per observation).
#[derive(Clone, Debug, Default)]
pub struct Latency(Arc<LatencyInner>);

#[derive(Debug, Default)]
pub struct LatencyInner {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let h = &self.0;
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .zip(&h.buckets)
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*b, cumulative)
            })
            .collect();
        let count = h.count.load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, count));
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
