//! The Snapshot: one immutable picture of the cluster, compiled from the
//! current good objects, with one table per plane.

use crate::alloc::{DEFAULT_SERVICE_CIDR, Family, ServiceCidr, Unfilled, service_families};
use crate::compiler::Compiler;
use crate::endpoints::{self, PortSpec, ServiceRef, Sources};
use crate::error::{ConfigError, ObjectKey, Warning};
use crate::ingress::{IngressOptions, IngressTable};
use crate::object::Object;
use crate::service::{Protocol, Service, ServicePort, ServiceType};
use crate::service_object::ServiceObject;
use crate::shared_map::SharedMap;
use crate::tls::TlsSecret;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// (namespace, name)
pub type NamespacedName = (String, String);
pub type ServiceMap = SharedMap<NamespacedName, Arc<Service>>;
pub type SecretMap = SharedMap<NamespacedName, Arc<TlsSecret>>;
/// L4 frontends by where they listen; each address claimed at most once.
pub type FrontendMap = SharedMap<(Listen, Protocol), Frontend>;

/// A Service with this label is handled by another service proxy
/// (kube-proxy skips it, and so does the L4 plane).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Where an L4 frontend listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listen {
    /// ClusterIP, externalIP or load-balancer IP, with the Service port.
    Addr(SocketAddr),
    /// A NodePort: bound on every node address.
    NodePort(u16),
}

/// One address an L4 Service port is reachable at.
#[derive(Clone, Debug)]
pub struct Frontend {
    pub listen: Listen,
    pub protocol: Protocol,
    pub service: Arc<Service>,
    /// Index into `service.ports`.
    pub port: usize,
    /// Reached from outside the cluster (NodePort, externalIP, LB IP): the
    /// external traffic policy applies; else the internal one.
    pub external: bool,
}

/// A port on every node address where the node answers whether it has
/// ready endpoints of `service` (kube-proxy's `healthCheckNodePort`).
#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub port: u16,
    pub service: Arc<Service>,
}

/// Settings that shape compilation.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub validate: crate::validate::ValidateOptions,
    pub ingress: IngressOptions,
    /// Where Services without a clusterIP get one
    /// (`--service-cluster-ip-range`, one per family, the primary first).
    pub service_cidrs: Vec<ServiceCidr>,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            validate: Default::default(),
            ingress: Default::default(),
            service_cidrs: vec![DEFAULT_SERVICE_CIDR.parse().expect("a valid CIDR")],
        }
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub services: ServiceMap,
    pub frontends: FrontendMap,
    /// Load-balancer health-check ports (`spec.healthCheckNodePort`), sorted
    /// by port; each claimed at most once and never a nodePort.
    pub health_checks: Arc<Vec<HealthCheck>>,
    /// Namespaces that exist: Namespace objects, or any object in one.
    pub namespaces: Arc<BTreeSet<String>>,
    pub ingress: Arc<IngressTable>,
    /// Gateway API routes and the status of every Gateway API object.
    pub gateway: Arc<crate::gateway::GatewayTable>,
    pub tls_secrets: SecretMap,
    pub errors: Arc<Vec<ConfigError>>,
    pub warnings: Arc<Vec<Warning>>,
    /// When the endpoint changes of recent generations were triggered
    /// (`endpoints.kubernetes.io/last-change-trigger-time` of the
    /// EndpointSlices that changed), oldest first; those of the last
    /// [`TRIGGER_LOG`] generations, so a reader that skipped generations
    /// still finds theirs.
    pub trigger_times: Arc<Vec<TriggerTime>>,
}

/// How many generations of trigger times a Snapshot carries.
pub const TRIGGER_LOG: u64 = 64;

/// The annotation the endpoints controllers put on EndpointSlices and
/// Endpoints: when the change that made them happened (a Pod became ready,
/// a Service changed), RFC 3339.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// One endpoint change: the generation that carried it, and when it was
/// triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TriggerTime {
    pub generation: u64,
    pub at: std::time::SystemTime,
}

impl Snapshot {
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The Services by namespace/name (the maps themselves are unordered).
    pub fn services_sorted(&self) -> Vec<&Arc<Service>> {
        let mut v: Vec<_> = self.services.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, s)| s).collect()
    }

    /// The L4 frontends by (listen, protocol).
    pub fn frontends_sorted(&self) -> Vec<&Frontend> {
        let mut v: Vec<_> = self.frontends.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, f)| f).collect()
    }
}

/// A good object and the file it came from.
pub type Objects = BTreeMap<ObjectKey, (PathBuf, Object)>;

/// Compiles the good objects into a Snapshot from scratch. `prev` says
/// which Service held each L4 address before (a held claim is kept).
/// Sources use the incremental [`Compiler`] instead; this is the same code
/// with every object new.
pub fn compile(
    objects: &Objects,
    generation: u64,
    opts: &CompileOptions,
    prev: Option<&Snapshot>,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
) -> Snapshot {
    let mut c = Compiler::new();
    for (key, (_, obj)) in objects {
        c.note(key, None, Some(obj));
    }
    let held = prev.map(|p| &p.frontends);
    c.compile(
        objects,
        generation,
        opts,
        Some(held.unwrap_or(&FrontendMap::new())),
        errors,
        warnings,
    )
}

/// The IP families whose endpoints a Service takes: those of its
/// clusterIPs, or, before one is allocated, the `ipFamilies` the API server
/// would give it. A headless Service without a selector takes both, as its
/// EndpointSlices are written by hand.
fn endpoint_families(svc: &ServiceObject, cluster_families: &[Family]) -> Vec<Family> {
    if !svc.cluster_ips.is_empty() {
        return svc.cluster_ips.iter().map(Family::of).collect();
    }
    let selectorless = svc.selector.as_ref().is_none_or(|s| s.is_empty());
    if svc.headless && selectorless {
        return vec![Family::V4, Family::V6];
    }
    service_families(&svc.ip_families, svc.ip_family_policy, cluster_families)
}

pub(crate) fn compile_service(
    key: &ObjectKey,
    svc: &ServiceObject,
    src: &Sources<'_>,
    source: Arc<std::path::Path>,
    cluster_families: &[Family],
) -> (Service, Unfilled) {
    let service_type = svc.service_type;
    let families = endpoint_families(svc, cluster_families);
    let resolved = (service_type != ServiceType::ExternalName).then(|| {
        endpoints::resolve(
            &ServiceRef {
                name: &key.name,
                selector: svc.selector.as_ref(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| PortSpec {
                        name: &p.name,
                        protocol: p.protocol,
                        target: &p.target,
                    })
                    .collect(),
                v4: families.contains(&Family::V4),
                v6: families.contains(&Family::V6),
                headless: svc.headless,
                publish_not_ready: svc.publish_not_ready,
            },
            src,
        )
    });
    let (mut per_port, endpoints) = match resolved {
        Some(r) => (r.per_port, r.endpoints),
        None => (Vec::new(), Arc::default()),
    };
    per_port.resize_with(svc.ports.len(), Vec::new);
    let with_node_ports = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    let ports = svc
        .ports
        .iter()
        .zip(per_port)
        .map(|(p, backends)| ServicePort {
            name: p.name.clone(),
            protocol: p.protocol,
            port: p.port,
            node_port: p
                .node_port
                .filter(|_| with_node_ports)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0),
            target_port: p.target.clone(),
            app_protocol: p.app_protocol.clone(),
            backends: backends.into(),
        })
        .collect();
    let compiled = Service {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        id: Arc::from(format!("{}/{}", key.namespace, key.name)),
        service_type,
        cluster_ips: svc.cluster_ips.to_vec(),
        headless: svc.headless,
        external_name: svc.external_name.clone(),
        external_ips: svc.external_ips.to_vec(),
        load_balancer_ips: svc.load_balancer_ips.to_vec(),
        ports,
        endpoints,
        session_affinity: svc.session_affinity,
        internal_traffic_local: svc.internal_traffic_local,
        external_traffic_local: svc.external_traffic_local,
        health_check_node_port: svc
            .health_check_node_port
            .filter(|_| service_type == ServiceType::LoadBalancer && svc.external_traffic_local)
            .and_then(|p| u16::try_from(p).ok()),
        topology_aware: svc.topology_aware,
        publish_not_ready_addresses: svc.publish_not_ready,
        annotations: svc.annotations.clone(),
        proxied_elsewhere: svc.proxied_elsewhere,
        created: svc.created,
        source,
        allocated: Default::default(),
    };
    let unfilled = unfilled(svc, &compiled);
    (compiled, unfilled)
}

/// What the API server would have filled in for `compiled`.
fn unfilled(svc: &ServiceObject, compiled: &Service) -> Unfilled {
    let with_node_ports = match compiled.service_type {
        ServiceType::NodePort => true,
        ServiceType::LoadBalancer => svc.allocate_load_balancer_node_ports,
        ServiceType::ClusterIP | ServiceType::ExternalName => false,
    };
    Unfilled {
        cluster_ips: compiled.service_type != ServiceType::ExternalName
            && !compiled.headless
            && compiled.cluster_ips.is_empty(),
        families: svc.ip_families.to_vec(),
        policy: svc.ip_family_policy,
        node_ports: compiled
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| with_node_ports && p.node_port.is_none())
            .map(|(i, _)| i)
            .collect(),
        health_check_node_port: compiled.service_type == ServiceType::LoadBalancer
            && compiled.external_traffic_local
            && compiled.health_check_node_port.is_none(),
    }
}
