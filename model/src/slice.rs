//! EndpointSlices as the model keeps them: what endpoint resolution reads
//! and nothing else. A decoded k8s-openapi EndpointSlice takes about 400
//! bytes per endpoint (`targetRef` alone is seven optional strings); this
//! takes about 60, which is most of the difference at 100,000 endpoints.
//! Slices are validated in their API form first (`validate::slice`), so
//! nothing a user could get wrong is lost in the conversion.

use crate::TRIGGER_TIME_ANNOTATION;
use crate::endpoints::SERVICE_NAME_LABEL;
use crate::service::{Endpoint, Placement, Protocol};
use k8s_openapi::api::discovery::v1 as discovery;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    /// Of its metadata, only the name, the namespace, and below the labels
    /// and annotation the model reads: an `ObjectMeta` is 330 bytes and a
    /// one-label map 600 more, 9 MB at 10,000 slices.
    pub name: Option<Box<str>>,
    pub namespace: Option<Box<str>>,
    /// The `kubernetes.io/service-name` label: the Service it belongs to.
    pub service: Option<Box<str>>,
    /// Labelled as a headless Service's or another proxy's
    /// ([`UNPROXIED_LABELS`]): kube-proxy does not program it, so does not
    /// time it.
    pub unproxied: bool,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation.
    pub trigger_time: Option<Box<str>>,
    /// `addressType: FQDN`: valid, but no proxy or DNS uses it.
    pub fqdn: bool,
    pub ports: Box<[SlicePort]>,
    /// The endpoints with an address (kube-proxy uses only the first),
    /// by address, one per address (a ready one if any, else the first):
    /// as a Service's endpoint list is, so a Service with one slice shares
    /// it. None in FQDN slices.
    pub endpoints: Arc<[Endpoint]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SlicePort {
    /// Empty when unnamed.
    pub name: Box<str>,
    /// `None`: a protocol we do not know (validation reports it).
    pub protocol: Option<Protocol>,
    pub port: Option<u16>,
}

/// Labels of EndpointSlices kube-proxy does not program: a headless
/// Service's, and another proxy's.
pub const UNPROXIED_LABELS: [&str; 2] = [
    "service.kubernetes.io/headless",
    "service.kubernetes.io/service-proxy-name",
];

impl From<discovery::EndpointSlice> for Slice {
    fn from(s: discovery::EndpointSlice) -> Slice {
        let fqdn = s.address_type == "FQDN";
        let meta = s.metadata;
        let labels = meta.labels.unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        Slice {
            name: meta.name.map(String::into_boxed_str),
            namespace: meta.namespace.map(String::into_boxed_str),
            service: labels.get(SERVICE_NAME_LABEL).map(|n| n.as_str().into()),
            unproxied: UNPROXIED_LABELS.iter().any(|k| labels.contains_key(*k)),
            trigger_time: annotations
                .remove(TRIGGER_TIME_ANNOTATION)
                .map(String::into_boxed_str),
            fqdn,
            ports: s.ports.into_iter().flatten().map(port).collect(),
            endpoints: if fqdn {
                Arc::default()
            } else {
                by_address(s.endpoints)
            },
        }
    }
}

fn port(p: discovery::EndpointPort) -> SlicePort {
    SlicePort {
        name: p.name.unwrap_or_default().into(),
        protocol: Protocol::parse(p.protocol.as_deref()),
        port: p.port.and_then(|n| u16::try_from(n).ok()),
    }
}

/// One endpoint per address, in address order; of several with one
/// address, the first ready one, else the first.
fn by_address(endpoints: Vec<discovery::Endpoint>) -> Arc<[Endpoint]> {
    let mut all: Vec<Endpoint> = endpoints.into_iter().filter_map(endpoint).collect();
    // Stable: endpoints of one address stay in the order written.
    all.sort_by_key(|e| e.ip);
    let mut out: Vec<Endpoint> = Vec::with_capacity(all.len());
    for e in all {
        match out.last_mut() {
            Some(last) if last.ip == e.ip => {
                if !last.ready && e.ready {
                    *last = e;
                }
            }
            _ => out.push(e),
        }
    }
    out.into()
}

fn endpoint(e: discovery::Endpoint) -> Option<Endpoint> {
    let ip = e.addresses.first()?.parse().ok()?;
    let c = e.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let names = |v: Option<Vec<String>>| -> Option<Arc<[Arc<str>]>> {
        v.map(|v| v.iter().map(|n| Arc::from(n.as_str())).collect())
    };
    let hints = e.hints;
    let placement = Placement {
        node_name: e.node_name.as_deref().map(Arc::from),
        pod: e.target_ref.and_then(|r| r.name).map(Arc::from),
        zone_hints: names(
            hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect()),
        ),
        node_hints: names(
            hints
                .as_ref()
                .and_then(|h| h.for_nodes.as_ref())
                .map(|n| n.iter().map(|n| n.name.clone()).collect()),
        ),
    };
    Some(Endpoint {
        ip,
        ready,
        serving: c.and_then(|c| c.serving).unwrap_or(ready),
        terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        hostname: e.hostname.map(String::into_boxed_str),
        placement: placement.shared(),
    })
}
