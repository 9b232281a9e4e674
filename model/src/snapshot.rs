//! The Snapshot: one immutable picture of the cluster, compiled from the
//! current good objects, with one table per plane.

use crate::endpoints::{self, PortSpec, ServiceRef, Sources};
use crate::error::{ConfigError, FieldError, ObjectKey, Warning};
use crate::ingress::{self, IngressInput, IngressOptions, IngressTable};
use crate::object::Object;
use crate::service::{Protocol, Service, ServicePort, ServiceType, TargetPort};
use crate::tls::TlsSecret;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// (namespace, name)
pub type NamespacedName = (String, String);
pub type ServiceMap = BTreeMap<NamespacedName, Arc<Service>>;
pub type SecretMap = BTreeMap<NamespacedName, Arc<TlsSecret>>;

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
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub validate: crate::validate::ValidateOptions,
    pub ingress: IngressOptions,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub services: Arc<ServiceMap>,
    /// L4 frontends, sorted by (listen, protocol); each claimed at most once.
    pub frontends: Arc<Vec<Frontend>>,
    /// Load-balancer health-check ports (`spec.healthCheckNodePort`), sorted
    /// by port; each claimed at most once and never a nodePort.
    pub health_checks: Arc<Vec<HealthCheck>>,
    /// Namespaces that exist: Namespace objects, or any object in one.
    pub namespaces: Arc<BTreeSet<String>>,
    pub ingress: Arc<IngressTable>,
    pub tls_secrets: Arc<SecretMap>,
    pub errors: Arc<Vec<ConfigError>>,
    pub warnings: Arc<Vec<Warning>>,
}

impl Snapshot {
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }
}

/// A good object and the file it came from.
pub type Objects = BTreeMap<ObjectKey, (PathBuf, Object)>;

/// Compiles the good objects into a Snapshot. Cross-object conflicts are added
/// to `errors`; `prev` lets unchanged Services keep their `Arc` (and so their
/// identity for planes that compare pointers).
pub fn compile(
    objects: &Objects,
    generation: u64,
    opts: &CompileOptions,
    prev: Option<&Snapshot>,
    mut errors: Vec<ConfigError>,
    mut warnings: Vec<Warning>,
) -> Snapshot {
    let mut namespaces = BTreeSet::new();
    let mut sources: HashMap<&str, Sources<'_>> = HashMap::new();
    let mut services = Vec::new();
    let mut secrets = SecretMap::new();
    let mut ingresses = Vec::new();
    let mut classes = Vec::new();
    for (key, (file, obj)) in objects {
        if !key.namespace.is_empty() {
            namespaces.insert(key.namespace.clone());
        }
        let ns = key.namespace.as_str();
        match obj {
            Object::Namespace(_) => {
                namespaces.insert(key.name.clone());
            }
            Object::Service(s) => services.push((file, key, s.as_ref())),
            Object::EndpointSlice(s) => {
                if let Some(svc) = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(endpoints::SERVICE_NAME_LABEL))
                {
                    let src = sources.entry(ns).or_default();
                    src.slices.entry(svc.as_str()).or_default().push(s);
                }
            }
            Object::Endpoints(e) => {
                sources
                    .entry(ns)
                    .or_default()
                    .endpoints
                    .insert(key.name.as_str(), e);
            }
            Object::Pod(p) => sources.entry(ns).or_default().pods.push(p),
            Object::Secret(s) if s.type_.as_deref() == Some("kubernetes.io/tls") => {
                // Validation already proved it parses.
                if let Ok(t) = TlsSecret::from_secret(s) {
                    secrets.insert((ns.to_string(), key.name.clone()), Arc::new(t));
                }
            }
            Object::Secret(_) => {}
            Object::Ingress(i) => ingresses.push((file.as_path(), i.as_ref())),
            Object::IngressClass(c) => classes.push(c.as_ref()),
        }
    }

    let empty = Sources::default();
    let mut service_map = ServiceMap::new();
    let mut compiled = Vec::new();
    for (file, key, svc) in services {
        let src = sources.get(key.namespace.as_str()).unwrap_or(&empty);
        let s = compile_service(key, svc, src);
        let s = match prev.and_then(|p| p.services.get(&(key.namespace.clone(), key.name.clone())))
        {
            Some(old) if **old == s => old.clone(),
            _ => Arc::new(s),
        };
        compiled.push((file, key, svc, s.clone()));
        service_map.insert((key.namespace.clone(), key.name.clone()), s);
    }

    let frontends = claim_frontends(&compiled, prev, &mut errors);
    let health_checks = claim_health_checks(&compiled, &frontends, &mut errors);
    let services = Arc::new(service_map);
    let secrets = Arc::new(secrets);
    let table = ingress::compile(IngressInput {
        ingresses,
        classes,
        services: &services,
        secrets: &secrets,
        opts: &opts.ingress,
        errors: &mut errors,
        warnings: &mut warnings,
    });
    Snapshot {
        generation,
        services,
        frontends: Arc::new(frontends),
        health_checks: Arc::new(health_checks),
        namespaces: Arc::new(namespaces),
        ingress: Arc::new(table),
        tls_secrets: secrets,
        errors: Arc::new(errors),
        warnings: Arc::new(warnings),
    }
}

fn compile_service(key: &ObjectKey, svc: &core::Service, src: &Sources<'_>) -> Service {
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
    let v4 = headless || cluster_ips.iter().any(IpAddr::is_ipv4) || cluster_ips.is_empty();
    let v6 = headless || cluster_ips.iter().any(IpAddr::is_ipv6);
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
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    Service {
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

/// Gives each health-check port to one Service: a port that is some
/// Service's TCP nodePort, or that an older Service already has, is an
/// error on the Service that asks for it.
fn claim_health_checks(
    compiled: &[(&PathBuf, &ObjectKey, &core::Service, Arc<Service>)],
    frontends: &[Frontend],
    errors: &mut Vec<ConfigError>,
) -> Vec<HealthCheck> {
    let mut asking: Vec<_> = compiled
        .iter()
        .filter(|c| !c.3.proxied_elsewhere)
        .filter_map(|c| Some((c.3.health_check_node_port?, c)))
        .collect();
    asking.sort_by_key(|(port, c)| (*port, c.3.created.unwrap_or(i64::MAX), c.1.clone()));
    let mut out: Vec<HealthCheck> = Vec::new();
    for (port, (file, key, _, svc)) in asking {
        let node_port = frontends
            .iter()
            .find(|f| f.listen == Listen::NodePort(port) && f.protocol == Protocol::Tcp);
        let taken = match (node_port, out.last().filter(|h| h.port == port)) {
            (Some(f), _) => Some(format!("{port} is Service {}'s nodePort", f.service.id)),
            (None, Some(h)) => Some(format!(
                "{port} is already used by Service {}",
                h.service.id
            )),
            (None, None) => None,
        };
        match taken {
            Some(why) => errors.push(ConfigError::field(
                (*file).clone(),
                (*key).clone(),
                FieldError::new("spec.healthCheckNodePort", why),
            )),
            None => out.push(HealthCheck {
                port,
                service: svc.clone(),
            }),
        }
    }
    out
}

/// Assigns every (address, port, protocol) and NodePort to exactly one Service.
/// A claim held in the previous Snapshot keeps it; otherwise the oldest Service
/// (then namespace/name) wins. Losers are reported and that port is not served.
fn claim_frontends(
    compiled: &[(&PathBuf, &ObjectKey, &core::Service, Arc<Service>)],
    prev: Option<&Snapshot>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Frontend> {
    let previous: HashMap<(Listen, Protocol), &str> = prev
        .map(|p| {
            p.frontends
                .iter()
                .map(|f| ((f.listen, f.protocol), &*f.service.id))
                .collect()
        })
        .unwrap_or_default();
    let mut wanted: Vec<(Listen, Protocol, usize, usize, &'static str, bool)> = Vec::new();
    for (si, (_, _, _, s)) in compiled.iter().enumerate() {
        // kube-proxy skips these too: nothing to balance, or another proxy's.
        if s.service_type == ServiceType::ExternalName || s.headless || s.proxied_elsewhere {
            continue;
        }
        for (pi, p) in s.ports.iter().enumerate() {
            for ip in &s.cluster_ips {
                wanted.push((
                    Listen::Addr(SocketAddr::new(*ip, p.port)),
                    p.protocol,
                    si,
                    pi,
                    "spec.clusterIP",
                    false,
                ));
            }
            for ip in &s.external_ips {
                wanted.push((
                    Listen::Addr(SocketAddr::new(*ip, p.port)),
                    p.protocol,
                    si,
                    pi,
                    "spec.externalIPs",
                    true,
                ));
            }
            for ip in &s.load_balancer_ips {
                wanted.push((
                    Listen::Addr(SocketAddr::new(*ip, p.port)),
                    p.protocol,
                    si,
                    pi,
                    "status.loadBalancer.ingress",
                    true,
                ));
            }
            if let Some(np) = p.node_port {
                wanted.push((
                    Listen::NodePort(np),
                    p.protocol,
                    si,
                    pi,
                    "spec.ports.nodePort",
                    true,
                ));
            }
        }
    }
    let rank = |si: usize, listen: Listen, proto: Protocol| {
        let s = &compiled[si].3;
        let held = previous.get(&(listen, proto)) == Some(&&*s.id);
        (
            !held,
            s.created.unwrap_or(i64::MAX),
            s.namespace.clone(),
            s.name.clone(),
        )
    };
    wanted.sort_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| rank(a.2, a.0, a.1).cmp(&rank(b.2, b.0, b.1)))
    });
    let mut out: Vec<Frontend> = Vec::new();
    for (listen, protocol, si, pi, field, external) in wanted {
        if let Some(winner) = out
            .last()
            .filter(|f| f.listen == listen && f.protocol == protocol)
        {
            if Arc::ptr_eq(&winner.service, &compiled[si].3) {
                continue; // the same Service naming an address twice
            }
            let (file, key, _, _) = &compiled[si];
            let what = match listen {
                Listen::Addr(a) => format!("{a}/{}", protocol.as_str()),
                Listen::NodePort(n) => format!("nodePort {n}/{}", protocol.as_str()),
            };
            errors.push(ConfigError::field(
                (*file).clone(),
                (*key).clone(),
                FieldError::new(
                    field.replace("spec.ports.", &format!("spec.ports[{pi}].")),
                    format!("{what} is already used by Service {}", winner.service.id),
                ),
            ));
            continue;
        }
        out.push(Frontend {
            listen,
            protocol,
            service: compiled[si].3.clone(),
            port: pi,
            external,
        });
    }
    out
}
