//! Per-object validation, as the API server would do it, limited to what the
//! dataplane depends on. Cross-object rules (port claims) live in `compile`.

use crate::error::FieldError;
use crate::object::Object;
use crate::service::Protocol;
use crate::tls;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::IpAddr;
use std::ops::RangeInclusive;

/// Settings validation depends on.
#[derive(Clone, Debug)]
pub struct ValidateOptions {
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            node_port_range: 30000..=32767,
        }
    }
}

/// An object's own fields; Services and EndpointSlices are validated when
/// parsed (they are kept compact).
pub fn validate(obj: &Object) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (name, namespace) = obj.name_and_namespace();
    let name_ok = match obj {
        // Service names are DNS-1035 labels: they become DNS names.
        Object::Service(_) => is_dns1035_label,
        Object::Namespace(_) => is_dns1123_label,
        _ => is_dns1123_subdomain,
    };
    let namespace = namespace.filter(|_| obj.is_namespaced());
    validate_meta(name, namespace, name_ok, &mut errs);
    match obj {
        // Validated in their API form when parsed (`service`, `slice`).
        Object::Service(_) | Object::EndpointSlice(_) => {}
        Object::Endpoints(e) => validate_endpoints(e, &mut errs),
        Object::Ingress(i) => errs.extend(crate::ingress::validate(i)),
        Object::Secret(s) => validate_secret(s, &mut errs),
        Object::Pod(p) => {
            for (i, ip) in p
                .status
                .iter()
                .flat_map(|s| s.pod_ips.iter().flatten())
                .enumerate()
            {
                if ip.ip.parse::<IpAddr>().is_err() {
                    errs.push(FieldError::new(
                        format!("status.podIPs[{i}].ip"),
                        format!("{:?} is not an IP address", ip.ip),
                    ));
                }
            }
            if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.as_deref())
                && ip.parse::<IpAddr>().is_err()
            {
                errs.push(FieldError::new(
                    "status.podIP",
                    format!("{ip:?} is not an IP address"),
                ));
            }
        }
        Object::GatewayClass(c) => errs.extend(crate::gateway::validate::gateway_class(c)),
        Object::Gateway(g) => errs.extend(crate::gateway::validate::gateway(g)),
        Object::HttpRoute(r) => errs.extend(crate::gateway::validate::http_route(r)),
        Object::IngressClass(_) | Object::Namespace(_) | Object::ReferenceGrant(_) => {}
    }
    errs
}

/// `metadata.name` (required, `name_ok`) and `metadata.namespace`.
fn validate_meta(
    name: Option<&str>,
    namespace: Option<&str>,
    name_ok: fn(&str) -> bool,
    errs: &mut Vec<FieldError>,
) {
    match name {
        None | Some("") => errs.push(FieldError::new("metadata.name", "is required")),
        Some(n) if !name_ok(n) => errs.push(FieldError::new(
            "metadata.name",
            format!("{n:?} is not a valid name (lower-case letters, digits and '-', starting with a letter)"),
        )),
        Some(_) => {}
    }
    if let Some(ns) = namespace
        && !is_dns1123_label(ns)
    {
        errs.push(FieldError::new(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace name"),
        ));
    }
}

/// A Service in its API form, as it is parsed (it is kept compact).
pub fn service(s: &core::Service, opts: &ValidateOptions) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = &s.metadata;
    validate_meta(
        meta.name.as_deref(),
        meta.namespace.as_deref(),
        is_dns1035_label,
        &mut errs,
    );
    validate_service(s, opts, &mut errs);
    errs
}

fn validate_service(s: &core::Service, opts: &ValidateOptions, errs: &mut Vec<FieldError>) {
    let Some(spec) = &s.spec else {
        errs.push(FieldError::new("spec", "is required"));
        return;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        errs.push(FieldError::new(
            "spec.type",
            format!("{ty:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"),
        ));
    }
    if ty == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => errs.push(FieldError::new(
                "spec.externalName",
                "is required for type ExternalName",
            )),
            Some(n) if !is_dns1123_subdomain(n.trim_end_matches('.')) => errs.push(
                FieldError::new("spec.externalName", format!("{n:?} is not a DNS name")),
            ),
            _ => {}
        }
    }
    let mut ips: Vec<(String, &str)> = Vec::new();
    if let Some(ip) = spec.cluster_ip.as_deref() {
        ips.push(("spec.clusterIP".into(), ip));
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        ips.push((format!("spec.clusterIPs[{i}]"), ip));
    }
    for (field, ip) in ips {
        if !(ip.is_empty() || ip == "None" || ip.parse::<IpAddr>().is_ok()) {
            errs.push(FieldError::new(
                field,
                format!("{ip:?} is not an IP address or \"None\""),
            ));
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::new(
                format!("spec.externalIPs[{i}]"),
                format!("{ip:?} is not an IP address"),
            ));
        }
    }
    if let Some(t) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        && !(1..=86400).contains(&t)
    {
        errs.push(FieldError::new(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            format!("{t} is outside 1..86400"),
        ));
    }
    if let Some(a) = spec.session_affinity.as_deref()
        && !matches!(a, "None" | "ClientIP")
    {
        errs.push(FieldError::new(
            "spec.sessionAffinity",
            format!("{a:?} is not None or ClientIP"),
        ));
    }
    for (field, v) in [
        (
            "spec.internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
        ),
        (
            "spec.externalTrafficPolicy",
            spec.external_traffic_policy.as_deref(),
        ),
    ] {
        if let Some(v) = v
            && !matches!(v, "Cluster" | "Local")
        {
            errs.push(FieldError::new(
                field,
                format!("{v:?} is not Cluster or Local"),
            ));
        }
    }
    if let Some(hc) = spec.health_check_node_port {
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        if ty != "LoadBalancer" || !local {
            errs.push(FieldError::new(
                "spec.healthCheckNodePort",
                "may only be set when type is LoadBalancer and externalTrafficPolicy is Local",
            ));
        } else if !(0..=65535).contains(&hc) || !opts.node_port_range.contains(&(hc as u16)) {
            errs.push(FieldError::new(
                "spec.healthCheckNodePort",
                format!(
                    "{hc} is outside the node port range {}-{}",
                    opts.node_port_range.start(),
                    opts.node_port_range.end()
                ),
            ));
        }
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut seen_names = std::collections::HashSet::new();
    let mut seen_ports = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = |x: &str| format!("spec.ports[{i}].{x}");
        if !(1..=65535).contains(&p.port) {
            errs.push(FieldError::new(
                f("port"),
                format!("{} is outside 1..65535", p.port),
            ));
        }
        let proto = Protocol::parse(p.protocol.as_deref());
        if proto.is_none() {
            errs.push(FieldError::new(
                f("protocol"),
                format!(
                    "{:?} is not TCP, UDP or SCTP",
                    p.protocol.as_deref().unwrap_or("")
                ),
            ));
        }
        match p.name.as_deref() {
            Some(n) if !n.is_empty() => {
                if !is_dns1123_label(n) {
                    errs.push(FieldError::new(
                        f("name"),
                        format!("{n:?} is not a valid port name"),
                    ));
                }
                if !seen_names.insert(n.to_string()) {
                    errs.push(FieldError::new(f("name"), format!("{n:?} is duplicated")));
                }
            }
            _ if ports.len() > 1 => errs.push(FieldError::new(
                f("name"),
                "is required when a Service has more than one port",
            )),
            _ => {}
        }
        if !seen_ports.insert((p.port, proto)) {
            errs.push(FieldError::new(
                f("port"),
                format!("{} with this protocol is duplicated", p.port),
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => errs.push(FieldError::new(
                f("targetPort"),
                format!("{n} is outside 1..65535"),
            )),
            Some(IntOrString::String(s)) if !is_port_name(s) => errs.push(FieldError::new(
                f("targetPort"),
                format!("{s:?} is neither a port number nor a valid port name"),
            )),
            _ => {}
        }
        if let Some(np) = p.node_port {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                errs.push(FieldError::new(
                    f("nodePort"),
                    format!("may only be set for type NodePort or LoadBalancer, not {ty}"),
                ));
            } else if !(0..=65535).contains(&np) || !opts.node_port_range.contains(&(np as u16)) {
                errs.push(FieldError::new(
                    f("nodePort"),
                    format!(
                        "{np} is outside the node port range {}-{}",
                        opts.node_port_range.start(),
                        opts.node_port_range.end()
                    ),
                ));
            }
        }
    }
}

fn validate_endpoints(e: &core::Endpoints, errs: &mut Vec<FieldError>) {
    for (si, subset) in e.subsets.iter().flatten().enumerate() {
        for (list, addrs) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (ai, a) in addrs.iter().flatten().enumerate() {
                if a.ip.parse::<IpAddr>().is_err() {
                    errs.push(FieldError::new(
                        format!("subsets[{si}].{list}[{ai}].ip"),
                        format!("{:?} is not an IP address", a.ip),
                    ));
                }
            }
        }
        for (pi, p) in subset.ports.iter().flatten().enumerate() {
            check_port(
                &format!("subsets[{si}].ports[{pi}]"),
                Some(p.port),
                p.protocol.as_deref(),
                errs,
            );
        }
    }
}

/// An EndpointSlice's own fields (not its metadata, which [`validate`]
/// checks with every object's).
pub fn slice(s: &discovery::EndpointSlice) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_slice(s, &mut errs);
    errs
}

fn validate_slice(s: &discovery::EndpointSlice, errs: &mut Vec<FieldError>) {
    let family = s.address_type.as_str();
    if !matches!(family, "IPv4" | "IPv6" | "FQDN") {
        errs.push(FieldError::new(
            "addressType",
            format!("{family:?} is not IPv4, IPv6 or FQDN"),
        ));
    }
    for (ei, ep) in s.endpoints.iter().enumerate() {
        if ep.addresses.is_empty() {
            errs.push(FieldError::new(
                format!("endpoints[{ei}].addresses"),
                "must hold at least one address",
            ));
        }
        if family == "FQDN" {
            continue;
        }
        for (ai, a) in ep.addresses.iter().enumerate() {
            let ok = match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => family == "IPv4",
                Ok(IpAddr::V6(_)) => family == "IPv6",
                Err(_) => false,
            };
            if !ok {
                errs.push(FieldError::new(
                    format!("endpoints[{ei}].addresses[{ai}]"),
                    format!("{a:?} is not an {family} address"),
                ));
            }
        }
    }
    for (pi, p) in s.ports.iter().flatten().enumerate() {
        check_port(&format!("ports[{pi}]"), p.port, p.protocol.as_deref(), errs);
    }
}

fn check_port(field: &str, port: Option<i32>, proto: Option<&str>, errs: &mut Vec<FieldError>) {
    if let Some(n) = port
        && !(1..=65535).contains(&n)
    {
        errs.push(FieldError::new(
            format!("{field}.port"),
            format!("{n} is outside 1..65535"),
        ));
    }
    if Protocol::parse(proto).is_none() {
        errs.push(FieldError::new(
            format!("{field}.protocol"),
            format!("{:?} is not TCP, UDP or SCTP", proto.unwrap_or("")),
        ));
    }
}

fn validate_secret(s: &core::Secret, errs: &mut Vec<FieldError>) {
    if s.type_.as_deref() != Some("kubernetes.io/tls") {
        return;
    }
    if let Err(e) = tls::TlsSecret::from_secret(s) {
        errs.push(e);
    }
}

/// RFC 1123 label: what namespaces and port names must be.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 bytes.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// An IANA service name as a port name: ≤15 chars, letters, digits, '-'.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1035_label("nginx-svc"));
        assert!(!is_dns1035_label("1nginx"));
        assert!(is_dns1123_label("1nginx"));
        assert!(!is_dns1123_label("Nginx"));
        assert!(is_dns1123_subdomain("www.bilibili.com"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_port_name("http"));
        assert!(!is_port_name("8080"));
    }
}
