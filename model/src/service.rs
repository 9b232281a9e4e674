//! The compiled, immutable view of a Service with its resolved endpoints:
//! what every plane reads.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One endpoint of one Service port: where to connect, and its conditions
/// (nil ready/serving mean true, nil terminating means false, as in the API).
///
/// 32 bytes: a 10,000-Service cluster has hundreds of thousands, so the
/// address is kept as IP and port (a `SocketAddr` alone takes 32, for the
/// IPv6 flow label and scope it never has here; see [`Backend::addr`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Where the endpoint runs: one allocation shared by every port of the
    /// endpoint, none when nothing is known.
    pub placement: Option<Arc<Placement>>,
}

/// Where an endpoint runs and who should use it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub node_name: Option<Arc<str>>,
    /// The Pod (targetRef) name when known, for logs.
    pub pod: Option<Arc<str>>,
    /// EndpointSlice `hints.forZones`: zones whose nodes should use this
    /// endpoint under topology-aware routing (`None`: no hints).
    pub zone_hints: Option<Arc<[Arc<str>]>>,
    /// EndpointSlice `hints.forNodes` (trafficDistribution PreferSameNode):
    /// nodes that should use this endpoint; they win over zone hints.
    pub node_hints: Option<Arc<[Arc<str>]>>,
}

impl Placement {
    /// `None` when nothing is known, so a backend then costs no allocation.
    pub fn shared(self) -> Option<Arc<Placement>> {
        (self != Placement::default()).then(|| Arc::new(self))
    }
}

impl Backend {
    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn node_name(&self) -> Option<&str> {
        self.placement.as_ref()?.node_name.as_deref()
    }

    pub fn pod(&self) -> Option<&str> {
        self.placement.as_ref()?.pod.as_deref()
    }

    pub fn zone_hints(&self) -> Option<&[Arc<str>]> {
        self.placement.as_ref()?.zone_hints.as_deref()
    }

    pub fn node_hints(&self) -> Option<&[Arc<str>]> {
        self.placement.as_ref()?.node_hints.as_deref()
    }
}

/// One endpoint address of a Service, port-independent (DNS uses these).
/// 48 bytes, as there are as many as endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// `hostname` of the endpoint (StatefulSet pods), for `<hostname>.<svc>...` records.
    pub hostname: Option<Box<str>>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Shared with the endpoint's backends.
    pub placement: Option<Arc<Placement>>,
}

impl Endpoint {
    pub fn node_name(&self) -> Option<&str> {
        self.placement.as_ref()?.node_name.as_deref()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty when the port is unnamed.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
    /// Endpoints for this port, in a stable order (by address).
    pub backends: Arc<[Backend]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `namespace/name`: the stable identity that per-Service state (cursors,
    /// affinity, metrics) is keyed by across Snapshots.
    pub id: Arc<str>,
    pub service_type: ServiceType,
    /// Empty for headless and ExternalName Services.
    pub cluster_ips: Vec<IpAddr>,
    pub headless: bool,
    pub external_name: Option<String>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// All endpoint addresses, de-duplicated, sorted by address.
    pub endpoints: Arc<[Endpoint]>,
    /// `Some(timeout)` when `sessionAffinity: ClientIP`.
    pub session_affinity: Option<Duration>,
    pub internal_traffic_local: bool,
    pub external_traffic_local: bool,
    /// `spec.healthCheckNodePort` of a LoadBalancer Service with
    /// `externalTrafficPolicy: Local`, where kube-proxy answers load-balancer
    /// health checks.
    pub health_check_node_port: Option<u16>,
    /// Topology-aware routing asked for: annotation
    /// `service.kubernetes.io/topology-mode: Auto` (or the older
    /// `topology-aware-hints`), or any `spec.trafficDistribution`.
    pub topology_aware: bool,
    pub publish_not_ready_addresses: bool,
    pub annotations: BTreeMap<String, String>,
    /// Labelled `service.kubernetes.io/service-proxy-name`: another proxy
    /// serves it, so it gets no L4 frontend (DNS and Ingress still see it).
    pub proxied_elsewhere: bool,
    /// creationTimestamp as seconds since the epoch, when given.
    pub created: Option<i64>,
    /// The file (or source) it came from: planes name it in their errors.
    pub source: Arc<std::path::Path>,
    /// What nodeway filled in as the API server would have (`check` marks
    /// it).
    pub allocated: Allocated,
}

/// The values of a Service that were allocated, not written in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocated {
    pub cluster_ips: bool,
    /// The port numbers (`spec.ports[].port`) whose nodePort was allocated.
    pub node_ports: Vec<u16>,
    pub health_check_node_port: bool,
}

impl Service {
    pub fn port_by_name(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name == name)
    }

    pub fn port_by_number(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// Endpoint addresses DNS publishes: ready ones (or all, with
    /// `publishNotReadyAddresses`).
    pub fn dns_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| e.ready || self.publish_not_ready_addresses)
    }
}

/// kube-proxy's endpoint choice for a port: ready endpoints; if none, those
/// serving and terminating. `local_node` restricts to endpoints on that node
/// (traffic policy Local), with no fallback to other nodes.
pub fn usable_backends<'a>(
    backends: &'a [Backend],
    local_node: Option<&'a str>,
) -> impl Iterator<Item = &'a Backend> + Clone + 'a {
    let on_node = move |b: &&Backend| match local_node {
        Some(n) => b.node_name() == Some(n),
        None => true,
    };
    let any_ready = backends.iter().filter(on_node).any(|b| b.ready);
    backends.iter().filter(on_node).filter(move |b| {
        if any_ready {
            b.ready
        } else {
            b.serving && b.terminating
        }
    })
}

/// kube-proxy's topology-aware routing (for cluster-wide traffic policy):
/// node hints first (when every ready endpoint has some and one names
/// `node`: only those), then zone hints the same way for `zone`, otherwise
/// the endpoints [`usable_backends`] picks.
pub fn topology_backends<'a>(
    backends: &'a [Backend],
    node: Option<&str>,
    zone: Option<&str>,
) -> Vec<&'a Backend> {
    hinted(backends, node, Backend::node_hints)
        .or_else(|| hinted(backends, zone, Backend::zone_hints))
        .unwrap_or_else(|| usable_backends(backends, None).collect())
}

/// The ready endpoints whose `hints` name `name`, if hints apply at all:
/// every ready endpoint carries some and at least one names `name`.
fn hinted<'a>(
    backends: &'a [Backend],
    name: Option<&str>,
    hints: impl Fn(&Backend) -> Option<&[Arc<str>]>,
) -> Option<Vec<&'a Backend>> {
    let name = name.filter(|n| !n.is_empty())?;
    let names = |b: &Backend| hints(b).is_some_and(|h| h.iter().any(|x| &**x == name));
    let ready = || backends.iter().filter(|b| b.ready);
    let applies = ready().all(|b| hints(b).is_some_and(|h| !h.is_empty())) && ready().any(names);
    applies.then(|| ready().filter(|b| names(b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// There are as many of each as endpoints (100,000 at 10,000
    /// Services): the sizes their doc comments promise.
    #[test]
    fn per_endpoint_structs_stay_small() {
        assert_eq!(std::mem::size_of::<Backend>(), 32);
        assert_eq!(std::mem::size_of::<Endpoint>(), 48);
    }

    fn be(port: u16, ready: bool, serving: bool, terminating: bool, node: &str) -> Backend {
        Backend {
            ip: [127, 0, 0, 1].into(),
            port,
            ready,
            serving,
            terminating,
            placement: Placement {
                node_name: Some(node.into()),
                ..Placement::default()
            }
            .shared(),
        }
    }

    fn placed(port: u16, ready: bool, placement: Placement) -> Backend {
        Backend {
            placement: placement.shared(),
            ..be(port, ready, true, !ready, "n")
        }
    }

    fn hinted(port: u16, ready: bool, zones: &[&str]) -> Backend {
        placed(
            port,
            ready,
            Placement {
                node_name: Some("n".into()),
                zone_hints: Some(zones.iter().map(|z| Arc::from(*z)).collect()),
                ..Placement::default()
            },
        )
    }

    fn ports(v: Vec<&Backend>) -> Vec<u16> {
        v.into_iter().map(|b| b.port).collect()
    }

    #[test]
    fn ready_endpoints_win_over_terminating() {
        let b = [be(1, true, true, false, "a"), be(2, false, true, true, "a")];
        let got: Vec<u16> = usable_backends(&b, None).map(|b| b.port).collect();
        assert_eq!(got, vec![1]);
    }

    #[test]
    fn falls_back_to_serving_terminating() {
        let b = [
            be(1, false, false, false, "a"),
            be(2, false, true, true, "a"),
        ];
        let got: Vec<u16> = usable_backends(&b, None).map(|b| b.port).collect();
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn local_policy_never_falls_back_to_other_nodes() {
        let b = [be(1, true, true, false, "a"), be(2, true, true, false, "b")];
        let got: Vec<u16> = usable_backends(&b, Some("b")).map(|b| b.port).collect();
        assert_eq!(got, vec![2]);
        assert_eq!(usable_backends(&b, Some("c")).count(), 0);
    }

    #[test]
    fn zone_hints_pick_in_zone_endpoints_only_when_every_ready_one_has_hints() {
        let b = [
            hinted(1, true, &["zone-a"]),
            hinted(2, true, &["zone-b"]),
            hinted(3, true, &["zone-a", "zone-b"]),
            // Not ready: its missing hint does not matter.
            be(4, false, false, false, "n"),
        ];
        assert_eq!(
            ports(topology_backends(&b, None, Some("zone-a"))),
            vec![1, 3]
        );
        assert_eq!(
            ports(topology_backends(&b, None, Some("zone-b"))),
            vec![2, 3]
        );
        // No endpoint for the node's zone, or no zone known: all ready ones.
        assert_eq!(
            ports(topology_backends(&b, None, Some("zone-c"))),
            vec![1, 2, 3]
        );
        assert_eq!(ports(topology_backends(&b, None, None)), vec![1, 2, 3]);
        // One ready endpoint without hints turns hints off for the port.
        let mixed = [hinted(1, true, &["zone-a"]), be(2, true, true, false, "n")];
        assert_eq!(
            ports(topology_backends(&mixed, None, Some("zone-a"))),
            vec![1, 2]
        );
        // Only terminating endpoints left: the usual fallback.
        let ending = [hinted(1, false, &["zone-a"])];
        assert_eq!(
            ports(topology_backends(&ending, None, Some("zone-a"))),
            vec![1]
        );
    }

    #[test]
    fn node_hints_win_over_zone_hints() {
        let on = |port: u16, node: &str, zone: &str| {
            placed(
                port,
                true,
                Placement {
                    node_name: Some("n".into()),
                    zone_hints: Some([Arc::from(zone)].into()),
                    node_hints: Some([Arc::from(node)].into()),
                    ..Placement::default()
                },
            )
        };
        let b = [
            on(1, "n1", "zone-a"),
            on(2, "n2", "zone-a"),
            on(3, "n3", "zone-b"),
        ];
        assert_eq!(
            ports(topology_backends(&b, Some("n2"), Some("zone-a"))),
            vec![2]
        );
        // No endpoint for this node: zone hints decide.
        assert_eq!(
            ports(topology_backends(&b, Some("n9"), Some("zone-a"))),
            vec![1, 2]
        );
        // A ready endpoint without node hints turns node hints off.
        let mixed = [on(1, "n1", "zone-a"), hinted(2, true, &["zone-a"])];
        assert_eq!(
            ports(topology_backends(&mixed, Some("n1"), Some("zone-a"))),
            vec![1, 2]
        );
    }
}
