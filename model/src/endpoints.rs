//! Endpoint resolution as kube-proxy and the endpoints controller do it:
//! EndpointSlices by `kubernetes.io/service-name`; else the Endpoints object of
//! the same name; else the ready Pods a selector picks.

use crate::service::{Backend, Endpoint, Placement, Protocol, TargetPort};
use crate::slice::Slice;
use k8s_openapi::api::core::v1 as core;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a Service port needs to find its endpoint port.
pub struct PortSpec<'a> {
    pub name: &'a str,
    pub protocol: Protocol,
    pub target: &'a TargetPort,
}

/// The endpoint sources of one namespace, indexed once per compile.
#[derive(Default)]
pub struct Sources<'a> {
    /// Slices by service name.
    pub slices: HashMap<&'a str, Vec<&'a Slice>>,
    pub endpoints: HashMap<&'a str, &'a core::Endpoints>,
    pub pods: Vec<&'a core::Pod>,
}

/// The result: one backend list per Service port, plus all addresses.
pub struct Resolved {
    pub per_port: Vec<Vec<Backend>>,
    pub endpoints: Arc<[Endpoint]>,
}

pub struct ServiceRef<'a> {
    pub name: &'a str,
    pub selector: Option<&'a BTreeMap<String, String>>,
    pub ports: Vec<PortSpec<'a>>,
    /// IP families the Service serves (those it is allocated, or both for
    /// a headless Service without a selector).
    pub v4: bool,
    pub v6: bool,
    pub headless: bool,
    /// `spec.publishNotReadyAddresses`: Pods count as ready whatever their
    /// state, as the EndpointSlice controller publishes them.
    pub publish_not_ready: bool,
}

pub fn resolve(svc: &ServiceRef<'_>, src: &Sources<'_>) -> Resolved {
    let mut acc = Accumulator::new(svc.ports.len());
    if let Some(slices) = src.slices.get(svc.name) {
        from_slices(svc, slices, &mut acc);
    } else if let Some(ep) = src.endpoints.get(svc.name) {
        from_endpoints(svc, ep, &mut acc);
    } else if let Some(sel) = svc.selector.filter(|s| !s.is_empty()) {
        from_pods(svc, sel, &src.pods, &mut acc);
    }
    acc.finish()
}

struct Accumulator {
    per_port: Vec<BTreeMap<SocketAddr, Backend>>,
    endpoints: BTreeMap<IpAddr, Endpoint>,
    /// A slice's endpoint list taken whole (instead of `endpoints`).
    shared: Option<Arc<[Endpoint]>>,
}

impl Accumulator {
    fn new(ports: usize) -> Self {
        Accumulator {
            per_port: (0..ports).map(|_| BTreeMap::new()).collect(),
            endpoints: BTreeMap::new(),
            shared: None,
        }
    }

    fn add_endpoint(&mut self, ep: Endpoint) {
        // De-duplicate across slices; a ready sighting wins over a not-ready one.
        match self.endpoints.get_mut(&ep.ip) {
            Some(old) if old.ready || !ep.ready => {}
            _ => {
                self.endpoints.insert(ep.ip, ep);
            }
        }
    }

    fn add_backend(&mut self, port: usize, b: Backend) {
        match self.per_port[port].get(&b.addr()) {
            Some(old) if old.ready || !b.ready => {}
            _ => {
                self.per_port[port].insert(b.addr(), b);
            }
        }
    }

    fn finish(self) -> Resolved {
        Resolved {
            per_port: self
                .per_port
                .into_iter()
                .map(|m| m.into_values().collect())
                .collect(),
            endpoints: match self.shared {
                Some(list) => list,
                None => self.endpoints.into_values().collect(),
            },
        }
    }
}

fn family_ok(svc: &ServiceRef<'_>, ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => svc.v4,
        IpAddr::V6(_) => svc.v6,
    }
}

fn from_slices(svc: &ServiceRef<'_>, slices: &[&Slice], acc: &mut Accumulator) {
    for slice in slices {
        if slice.fqdn {
            continue;
        }
        // Service port i -> this slice's port number, matched by name and protocol.
        let port_map: Vec<Option<u16>> = svc
            .ports
            .iter()
            .map(|sp| {
                slice.ports.iter().find_map(|p| {
                    let same = *p.name == *sp.name && p.protocol == Some(sp.protocol);
                    same.then_some(p.port).flatten()
                })
            })
            .collect();
        // The usual case, one slice of the Service's families: its endpoint
        // list is the Service's, as is (see `Slice::endpoints`).
        let whole = slices.len() == 1 && slice.endpoints.iter().all(|e| family_ok(svc, &e.ip));
        if whole {
            acc.shared = Some(slice.endpoints.clone());
        }
        for ep in slice.endpoints.iter().filter(|e| family_ok(svc, &e.ip)) {
            if !whole {
                acc.add_endpoint(ep.clone());
            }
            for (i, port) in port_map.iter().enumerate() {
                if let Some(port) = port {
                    acc.add_backend(
                        i,
                        Backend {
                            ip: ep.ip,
                            port: *port,
                            ready: ep.ready,
                            serving: ep.serving,
                            terminating: ep.terminating,
                            placement: ep.placement.clone(),
                        },
                    );
                }
            }
        }
    }
}

fn from_endpoints(svc: &ServiceRef<'_>, ep: &core::Endpoints, acc: &mut Accumulator) {
    for subset in ep.subsets.iter().flatten() {
        let port_map: Vec<Option<u16>> = svc
            .ports
            .iter()
            .map(|sp| {
                let ports = subset.ports.as_deref().unwrap_or_default();
                ports
                    .iter()
                    .find(|p| {
                        (p.name.as_deref().unwrap_or("") == sp.name
                            || ports.len() == 1 && svc.ports.len() == 1)
                            && Protocol::parse(p.protocol.as_deref()) == Some(sp.protocol)
                    })
                    .and_then(|p| u16::try_from(p.port).ok())
            })
            .collect();
        for (list, ready) in [
            (&subset.addresses, true),
            (&subset.not_ready_addresses, false),
        ] {
            for a in list.iter().flatten() {
                let Ok(ip) = a.ip.parse::<IpAddr>() else {
                    continue;
                };
                if !family_ok(svc, &ip) {
                    continue;
                }
                let placement = Placement {
                    node_name: a.node_name.as_deref().map(Arc::from),
                    pod: a
                        .target_ref
                        .as_ref()
                        .and_then(|r| r.name.as_deref())
                        .map(Arc::from),
                    ..Placement::default()
                }
                .shared();
                acc.add_endpoint(Endpoint {
                    ip,
                    hostname: a.hostname.as_deref().map(Box::from),
                    ready,
                    serving: ready,
                    terminating: false,
                    placement: placement.clone(),
                });
                for (i, port) in port_map.iter().enumerate() {
                    if let Some(port) = port {
                        acc.add_backend(
                            i,
                            Backend {
                                ip,
                                port: *port,
                                ready,
                                serving: ready,
                                terminating: false,
                                placement: placement.clone(),
                            },
                        );
                    }
                }
            }
        }
    }
}

fn labels_match(sel: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn pod_ready(pod: &core::Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn from_pods(
    svc: &ServiceRef<'_>,
    sel: &BTreeMap<String, String>,
    pods: &[&core::Pod],
    acc: &mut Accumulator,
) {
    for pod in pods {
        if !labels_match(sel, pod.metadata.labels.as_ref()) {
            continue;
        }
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if ips.is_empty()
            && let Some(ip) = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|s| s.parse().ok())
        {
            ips.push(ip);
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pod_ready(pod);
        let ready = svc.publish_not_ready || (serving && !terminating);
        let spec = pod.spec.as_ref();
        let placement = Placement {
            node_name: spec.and_then(|s| s.node_name.as_deref()).map(Arc::from),
            pod: pod.metadata.name.as_deref().map(Arc::from),
            ..Placement::default()
        }
        .shared();
        // The endpoints controller publishes a hostname only for a Pod whose
        // subdomain is this (headless) Service.
        let hostname = spec
            .filter(|s| svc.headless && s.subdomain.as_deref() == Some(svc.name))
            .and_then(|s| s.hostname.as_deref())
            .map(Box::<str>::from);
        for ip in ips.into_iter().filter(|ip| family_ok(svc, ip)) {
            acc.add_endpoint(Endpoint {
                ip,
                hostname: hostname.clone(),
                ready,
                serving,
                terminating,
                placement: placement.clone(),
            });
            for (i, sp) in svc.ports.iter().enumerate() {
                let port = match sp.target {
                    TargetPort::Number(n) => Some(*n),
                    TargetPort::Name(name) => container_port(pod, name, sp.protocol),
                };
                if let Some(port) = port {
                    acc.add_backend(
                        i,
                        Backend {
                            ip,
                            port,
                            ready,
                            serving,
                            terminating,
                            placement: placement.clone(),
                        },
                    );
                }
            }
        }
    }
}

fn container_port(pod: &core::Pod, name: &str, proto: Protocol) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && Protocol::parse(p.protocol.as_deref()) == Some(proto)
        })
        .and_then(|p| u16::try_from(p.container_port).ok())
}
