//! Services as the model keeps them: what the compiler reads, read out of
//! the API form once, when the manifest is parsed. A decoded k8s-openapi
//! Service is an 820-byte struct (an `ObjectMeta` and a `ServiceSpec` of
//! mostly empty options) before its strings; at 10,000 Services that was
//! 8 MB for fields no plane reads. Services are validated in their API form
//! first (`validate::service`, with the node-port range the builder was
//! given), so nothing a user could get wrong is lost in the conversion.

use crate::alloc::{Family, FamilyPolicy};
use crate::service::{Protocol, ServiceType, TargetPort};
use crate::snapshot::SERVICE_PROXY_NAME_LABEL;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// kube-proxy's ClientIP affinity timeout when none is given (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceObject {
    pub name: Option<Box<str>>,
    pub namespace: Option<Box<str>>,
    pub annotations: BTreeMap<String, String>,
    /// Labelled [`SERVICE_PROXY_NAME_LABEL`]: another proxy serves it.
    pub proxied_elsewhere: bool,
    /// `metadata.creationTimestamp`, Unix seconds.
    pub created: Option<i64>,
    pub service_type: ServiceType,
    /// `clusterIP: None` (never for ExternalName).
    pub headless: bool,
    /// The clusterIPs written (none for ExternalName).
    pub cluster_ips: Box<[IpAddr]>,
    /// `spec.ipFamilies` and `spec.ipFamilyPolicy`, for the allocator.
    pub ip_families: Box<[Family]>,
    pub ip_family_policy: FamilyPolicy,
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Box<[ObjectPort]>,
    pub publish_not_ready: bool,
    pub session_affinity: Option<Duration>,
    /// `status.loadBalancer.ingress` IPs, but those with `ipMode: Proxy`
    /// (the load balancer proxies to the nodes itself, and kube-proxy does
    /// not take its address; unset means VIP).
    pub load_balancer_ips: Box<[IpAddr]>,
    /// For type ExternalName only.
    pub external_name: Option<String>,
    pub external_ips: Box<[IpAddr]>,
    pub internal_traffic_local: bool,
    pub external_traffic_local: bool,
    /// As written (validated in range when parsed).
    pub health_check_node_port: Option<i32>,
    pub topology_aware: bool,
    /// `spec.allocateLoadBalancerNodePorts` is not false.
    pub allocate_load_balancer_node_ports: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ObjectPort {
    /// Empty when unnamed.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target: TargetPort,
    /// As written (validated in range when parsed).
    pub node_port: Option<i32>,
    pub app_protocol: Option<String>,
}

impl From<core::Service> for ServiceObject {
    /// From a Service that passed `validate::service`.
    fn from(svc: core::Service) -> ServiceObject {
        let meta = svc.metadata;
        let spec = svc.spec.unwrap_or_default();
        let service_type = match spec.type_.as_deref() {
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            _ => ServiceType::ClusterIP,
        };
        let external_name_type = service_type == ServiceType::ExternalName;
        let written: Vec<String> = match spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips,
            _ => spec.cluster_ip.into_iter().collect(),
        };
        let annotations = meta.annotations.unwrap_or_default();
        ServiceObject {
            name: meta.name.map(String::into_boxed_str),
            namespace: meta.namespace.map(String::into_boxed_str),
            proxied_elsewhere: meta
                .labels
                .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)),
            created: meta.creation_timestamp.map(|t| t.0.as_second()),
            topology_aware: spec.traffic_distribution.is_some()
                || topology_annotation(&annotations),
            annotations,
            service_type,
            headless: !external_name_type && written.first().is_some_and(|ip| ip == "None"),
            cluster_ips: if external_name_type {
                Box::default()
            } else {
                parse_ips(written.iter())
            },
            ip_families: spec
                .ip_families
                .iter()
                .flatten()
                .filter_map(|f| Family::parse(f))
                .collect(),
            ip_family_policy: FamilyPolicy::parse(spec.ip_family_policy.as_deref()),
            selector: spec.selector,
            ports: spec
                .ports
                .into_iter()
                .flatten()
                .map(ObjectPort::from)
                .collect(),
            publish_not_ready: spec.publish_not_ready_addresses == Some(true),
            session_affinity: (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                let secs = spec
                    .session_affinity_config
                    .and_then(|c| c.client_ip)
                    .and_then(|c| c.timeout_seconds)
                    .unwrap_or(DEFAULT_AFFINITY_SECONDS);
                Duration::from_secs(secs.max(1) as u64)
            }),
            load_balancer_ips: svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .into_iter()
                .flatten()
                .filter(|i| i.ip_mode.as_deref().is_none_or(|m| m != "Proxy"))
                .filter_map(|i| i.ip?.parse().ok())
                .collect(),
            external_name: spec.external_name.filter(|_| external_name_type),
            external_ips: parse_ips(spec.external_ips.iter().flatten()),
            internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec.health_check_node_port,
            allocate_load_balancer_node_ports: spec.allocate_load_balancer_node_ports
                != Some(false),
        }
    }
}

impl From<core::ServicePort> for ObjectPort {
    fn from(p: core::ServicePort) -> ObjectPort {
        let port = p.port as u16;
        ObjectPort {
            name: p.name.unwrap_or_default(),
            protocol: Protocol::parse(p.protocol.as_deref()).unwrap_or(Protocol::Tcp),
            port,
            target: match p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(n as u16),
                Some(IntOrString::String(s)) => match s.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(s),
                },
                None => TargetPort::Number(port),
            },
            node_port: p.node_port,
            app_protocol: p.app_protocol,
        }
    }
}

fn parse_ips<'a>(ips: impl Iterator<Item = &'a String>) -> Box<[IpAddr]> {
    ips.filter_map(|s| s.parse().ok()).collect()
}

/// Whether kube-proxy would route by zone hints without a
/// `trafficDistribution` (which takes precedence): the topology annotation
/// set to Auto.
fn topology_annotation(annotations: &BTreeMap<String, String>) -> bool {
    let mode = annotations
        .get("service.kubernetes.io/topology-mode")
        .or_else(|| annotations.get("service.kubernetes.io/topology-aware-hints"));
    matches!(mode.map(String::as_str), Some("Auto" | "auto"))
}
