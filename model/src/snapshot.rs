//! The Snapshot: one immutable picture of the cluster, compiled from the
//! current good objects, with one table per plane.

use crate::alloc::{
    DEFAULT_SERVICE_CIDR, Family, FamilyPolicy, ServiceCidr, Unfilled, service_families,
};
use crate::compiler::Compiler;
use crate::endpoints::{self, PortSpec, ServiceRef, Sources};
use crate::error::{ConfigError, ObjectKey, Warning};
use crate::ingress::{IngressOptions, IngressTable};
use crate::object::Object;
use crate::service::{Protocol, Service, ServicePort, ServiceType, TargetPort};
use crate::shared_map::SharedMap;
use crate::tls::TlsSecret;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
fn endpoint_families(
    spec: &core::ServiceSpec,
    headless: bool,
    cluster_ips: &[IpAddr],
    cluster_families: &[Family],
) -> Vec<Family> {
    if !cluster_ips.is_empty() {
        return cluster_ips.iter().map(Family::of).collect();
    }
    let selectorless = spec.selector.as_ref().is_none_or(|s| s.is_empty());
    if headless && selectorless {
        return vec![Family::V4, Family::V6];
    }
    let asked: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| Family::parse(f))
        .collect();
    let policy = FamilyPolicy::parse(spec.ip_family_policy.as_deref());
    service_families(&asked, policy, cluster_families)
}

pub(crate) fn compile_service(
    key: &ObjectKey,
    svc: &core::Service,
    src: &Sources<'_>,
    source: Arc<std::path::Path>,
    cluster_families: &[Family],
) -> (Service, Unfilled) {
    let spec = svc.spec.clone().unwrap_or_default();
    let service_type = match spec.type_.as_deref() {
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        _ => ServiceType::ClusterIP,
    };
    let mut ips: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if ips.is_empty()
        && let Some(ip) = spec.cluster_ip.as_deref()
    {
        ips.push(ip);
    }
    let headless = service_type != ServiceType::ExternalName && ips.first() == Some(&"None");
    let cluster_ips: Vec<IpAddr> = if service_type == ServiceType::ExternalName {
        Vec::new()
    } else {
        ips.iter().filter_map(|s| s.parse().ok()).collect()
    };
    let families = endpoint_families(&spec, headless, &cluster_ips, cluster_families);
    let v4 = families.contains(&Family::V4);
    let v6 = families.contains(&Family::V6);
    let port_specs: Vec<(String, Protocol, TargetPort, &core::ServicePort)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(*n as u16),
                Some(IntOrString::String(s)) => match s.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(s.clone()),
                },
                None => TargetPort::Number(p.port as u16),
            };
            (
                p.name.clone().unwrap_or_default(),
                Protocol::parse(p.protocol.as_deref()).unwrap_or(Protocol::Tcp),
                target,
                p,
            )
        })
        .collect();
    let resolved = if service_type == ServiceType::ExternalName {
        None
    } else {
        Some(endpoints::resolve(
            &ServiceRef {
                name: &key.name,
                selector: spec.selector.as_ref(),
                ports: port_specs
                    .iter()
                    .map(|(name, protocol, target, _)| PortSpec {
                        name,
                        protocol: *protocol,
                        target,
                    })
                    .collect(),
                v4,
                v6,
                headless,
                publish_not_ready: spec.publish_not_ready_addresses == Some(true),
            },
            src,
        ))
    };
    let (mut per_port, endpoints) = match resolved {
        Some(r) => (r.per_port, r.endpoints),
        None => (Vec::new(), Vec::new()),
    };
    per_port.resize_with(port_specs.len(), Vec::new);
    let ports = port_specs
        .into_iter()
        .zip(per_port)
        .map(|((name, protocol, target_port, p), backends)| ServicePort {
            name,
            protocol,
            port: p.port as u16,
            node_port: p
                .node_port
                .filter(|_| {
                    matches!(
                        service_type,
                        ServiceType::NodePort | ServiceType::LoadBalancer
                    )
                })
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0),
            target_port,
            app_protocol: p.app_protocol.clone(),
            backends: backends.into(),
        })
        .collect();
    let session_affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let secs = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800);
        Duration::from_secs(secs.max(1) as u64)
    });
    let load_balancer_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        // `ipMode: Proxy`: the load balancer proxies to the nodes itself,
        // and kube-proxy does not take its address (unset means VIP).
        .filter(|i| i.ip_mode.as_deref().is_none_or(|m| m != "Proxy"))
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    let compiled = Service {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        id: Arc::from(format!("{}/{}", key.namespace, key.name)),
        service_type,
        cluster_ips,
        headless,
        external_name: spec
            .external_name
            .clone()
            .filter(|_| service_type == ServiceType::ExternalName),
        external_ips: spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect(),
        load_balancer_ips,
        ports,
        endpoints,
        session_affinity,
        internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        health_check_node_port: spec
            .health_check_node_port
            .filter(|_| {
                service_type == ServiceType::LoadBalancer
                    && spec.external_traffic_policy.as_deref() == Some("Local")
            })
            .and_then(|p| u16::try_from(p).ok()),
        topology_aware: topology_aware(svc),
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        annotations: svc.metadata.annotations.clone().unwrap_or_default(),
        proxied_elsewhere: svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)),
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        source,
        allocated: Default::default(),
    };
    let unfilled = unfilled(&spec, &compiled);
    (compiled, unfilled)
}

/// What the API server would have filled in for `compiled`.
fn unfilled(spec: &core::ServiceSpec, compiled: &Service) -> Unfilled {
    let with_node_ports = matches!(
        compiled.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    ) && !(compiled.service_type == ServiceType::LoadBalancer
        && spec.allocate_load_balancer_node_ports == Some(false));
    Unfilled {
        cluster_ips: compiled.service_type != ServiceType::ExternalName
            && !compiled.headless
            && compiled.cluster_ips.is_empty(),
        families: spec
            .ip_families
            .iter()
            .flatten()
            .filter_map(|f| Family::parse(f))
            .collect(),
        policy: FamilyPolicy::parse(spec.ip_family_policy.as_deref()),
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

/// Whether kube-proxy would route by zone hints: any `trafficDistribution`
/// (it takes precedence), else the topology annotation set to Auto.
fn topology_aware(svc: &core::Service) -> bool {
    if svc
        .spec
        .as_ref()
        .is_some_and(|s| s.traffic_distribution.is_some())
    {
        return true;
    }
    let ann = svc.metadata.annotations.as_ref();
    let mode = ann.and_then(|a| {
        a.get("service.kubernetes.io/topology-mode")
            .or_else(|| a.get("service.kubernetes.io/topology-aware-hints"))
    });
    matches!(mode.map(String::as_str), Some("Auto" | "auto"))
}
