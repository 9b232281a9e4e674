//! Per-object checks on an Ingress: paths, backends, annotations, hosts.

use super::annotations;
use super::path::check_spec_path;
use crate::error::FieldError;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

fn check_backend(b: &IngressBackend, f: &str, errs: &mut Vec<FieldError>) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => errs.push(FieldError::new(
            f,
            "must set exactly one of service and resource",
        )),
        (None, Some(_)) => errs.push(FieldError::new(
            format!("{f}.resource"),
            "is not supported by nodeway: use backend.service",
        )),
        (None, None) => errs.push(FieldError::new(format!("{f}.service"), "is required")),
        (Some(s), None) => {
            if s.name.is_empty() {
                errs.push(FieldError::new(format!("{f}.service.name"), "is required"));
            }
            match &s.port {
                None => errs.push(FieldError::new(format!("{f}.service.port"), "is required")),
                Some(p) => match (p.number, p.name.as_deref()) {
                    (Some(n), None) if (1..=65535).contains(&n) => {}
                    (Some(n), None) => errs.push(FieldError::new(
                        format!("{f}.service.port.number"),
                        format!("{n} is outside 1..65535"),
                    )),
                    (None, Some(n)) if !n.is_empty() => {}
                    _ => errs.push(FieldError::new(
                        format!("{f}.service.port"),
                        "must set exactly one of number and name",
                    )),
                },
            }
        }
    }
}

pub(crate) fn check_host(h: &str) -> Result<(), String> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{h:?} must be a DNS name, not an IP address"));
    }
    if bare.contains('*') || !crate::validate::is_dns1123_subdomain(bare) {
        return Err(format!(
            "{h:?} is not a lower-case DNS name (a wildcard must be a leading \"*.\")"
        ));
    }
    Ok(())
}

/// Per-object checks on an Ingress (paths, annotations, backends).
pub fn validate(ing: &Ingress) -> Vec<FieldError> {
    let (ann, mut errs) = annotations::parse(ing.metadata.annotations.as_ref());
    let regex = ann.regex_paths();
    let Some(spec) = &ing.spec else {
        errs.push(FieldError::new("spec", "is required"));
        return errs;
    };
    if let Some(b) = &spec.default_backend {
        check_backend(b, "spec.defaultBackend", &mut errs);
    }
    let rules = spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() && spec.default_backend.is_none() {
        errs.push(FieldError::new("spec", "needs rules or a defaultBackend"));
    }
    for (ri, rule) in rules.iter().enumerate() {
        if let Some(h) = rule.host.as_deref()
            && let Err(e) = check_host(h)
        {
            errs.push(FieldError::new(format!("spec.rules[{ri}].host"), e));
        }
        let Some(http) = &rule.http else { continue };
        for (pi, p) in http.paths.iter().enumerate() {
            let f = format!("spec.rules[{ri}].http.paths[{pi}]");
            check_backend(&p.backend, &format!("{f}.backend"), &mut errs);
            let ty = p.path_type.as_str();
            let path = p.path.as_deref().unwrap_or("/");
            match ty {
                "Exact" | "Prefix" | "ImplementationSpecific" => {}
                "" => {
                    errs.push(FieldError::new(format!("{f}.pathType"), "is required"));
                    continue;
                }
                t => {
                    errs.push(FieldError::new(
                        format!("{f}.pathType"),
                        format!("{t:?} is not Exact, Prefix or ImplementationSpecific"),
                    ));
                    continue;
                }
            }
            if p.path.is_none() && ty != "ImplementationSpecific" {
                errs.push(FieldError::new(
                    format!("{f}.path"),
                    format!("is required for pathType {ty} (the API server refuses it without)"),
                ));
                continue;
            }
            if regex {
                if let Err(e) = regex::Regex::new(&format!("(?i)^{path}")) {
                    errs.push(FieldError::new(
                        format!("{f}.path"),
                        format!("invalid regex: {e}"),
                    ));
                }
            } else if let Err(e) = check_spec_path(path) {
                errs.push(FieldError::new(format!("{f}.path"), e));
            }
        }
    }
    for (ti, t) in spec.tls.iter().flatten().enumerate() {
        for (hi, h) in t.hosts.iter().flatten().enumerate() {
            if let Err(e) = check_host(h) {
                errs.push(FieldError::new(format!("spec.tls[{ti}].hosts[{hi}]"), e));
            }
        }
    }
    errs
}
