//! Builds the [`IngressTable`] from the Ingresses that are ours: backends
//! resolved to Services, per-host maps with Kubernetes precedence, canaries
//! attached to their main routes, certificates by TLS host.

use super::IngressInput;
use super::annotations::{self, Annotations};
use super::class::is_ours;
use super::path::{prefix_key, spec_key};
use super::table::{
    HostRoutes, IngressTable, PathKind, Route, RouteBackend, ServedIngress, TlsEntry,
};
use crate::error::{ConfigError, FieldError, ObjectKey, Warning};
use crate::snapshot::{NamespacedName, ServiceMap};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

struct Ours<'a> {
    file: &'a Path,
    ing: &'a Ingress,
    key: ObjectKey,
    id: Arc<str>,
    ann: Arc<Annotations>,
    created: Option<i64>,
}

fn served_ingress(ing: &Ingress) -> ServedIngress {
    let status_addresses = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    ServedIngress {
        namespace: ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: ing.metadata.name.clone().unwrap_or_default(),
        status_addresses,
    }
}

/// Routes of one host while building: owned, so canaries can still attach.
#[derive(Default)]
struct HostBuild {
    exact: HashMap<Box<str>, Route>,
    prefix: HashMap<Box<str>, (bool, Route)>,
    regex: Vec<Route>,
}

impl HostBuild {
    fn finish(self) -> HostRoutes {
        let mut regex: Vec<Arc<Route>> = self.regex.into_iter().map(Arc::new).collect();
        // Stable: equal lengths keep the oldest Ingress first.
        regex.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        HostRoutes {
            exact: self
                .exact
                .into_iter()
                .map(|(k, r)| (k, Arc::new(r)))
                .collect(),
            prefix: self
                .prefix
                .into_iter()
                .map(|(k, (_, r))| (k, Arc::new(r)))
                .collect(),
            regex,
        }
    }

    fn slot(&mut self, kind: PathKind, path: &str) -> Option<&mut Route> {
        match kind {
            PathKind::Exact => self.exact.get_mut(&*spec_key(path)),
            PathKind::Prefix => self
                .prefix
                .get_mut(prefix_key(&spec_key(path)))
                .map(|(_, r)| r),
            PathKind::Regex => self.regex.iter_mut().find(|r| &*r.path == path),
        }
    }
}

/// The Services routes resolve to, and which ones were asked for.
struct ServiceLookup<'a> {
    map: &'a ServiceMap,
    named: &'a mut HashSet<NamespacedName>,
}

/// Why a backend does not resolve: a reference to what is not there (the
/// API server accepts it and ingress-nginx answers 503: a warning), or a
/// backend we cannot serve at all (an error).
enum Unresolved {
    Dangling(FieldError),
    Invalid(FieldError),
}

fn resolve_backend(
    b: &IngressBackend,
    ns: &str,
    field: &str,
    services: &mut ServiceLookup<'_>,
) -> Result<RouteBackend, Unresolved> {
    let Some(s) = &b.service else {
        return Err(Unresolved::Invalid(FieldError::new(
            field,
            "has no service (resource backends are not supported by nodeway)",
        )));
    };
    let key = (ns.to_string(), s.name.clone());
    let svc = services.map.get(&key);
    // Named even when missing: its creation must rebuild the routes.
    services.named.insert(key);
    let svc = svc.ok_or_else(|| {
        Unresolved::Dangling(FieldError::new(
            format!("{field}.service.name"),
            format!("Service {ns}/{} does not exist (requests get 503)", s.name),
        ))
    })?;
    let port = s.port.as_ref();
    let idx = match (
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref()),
    ) {
        (Some(n), _) => svc.ports.iter().position(|p| i32::from(p.port) == n),
        (None, Some(name)) => svc.ports.iter().position(|p| p.name == name),
        _ => None,
    };
    let Some(idx) = idx else {
        let want = port
            .and_then(|p| p.number.map(|n| n.to_string()).or(p.name.clone()))
            .unwrap_or_default();
        return Err(Unresolved::Dangling(FieldError::new(
            format!("{field}.service.port"),
            format!("Service {} has no port {want} (requests get 503)", svc.id),
        )));
    };
    Ok(RouteBackend {
        key: Arc::from(format!("{}:{}", svc.id, svc.ports[idx].port)),
        service: (svc.namespace.clone(), svc.name.clone()),
        port: idx,
    })
}

#[allow(clippy::too_many_arguments)]
fn make_route(
    o: &Ours<'_>,
    host: &str,
    path: &str,
    kind: PathKind,
    b: &IngressBackend,
    field: &str,
    services: &mut ServiceLookup<'_>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<Warning>,
) -> Route {
    let ns = o.key.namespace.as_str();
    let backend = match resolve_backend(b, ns, field, services) {
        Ok(b) => Some(b),
        Err(Unresolved::Invalid(e)) => {
            errors.push(ConfigError::field(o.file, o.key.clone(), e));
            None
        }
        Err(Unresolved::Dangling(e)) => {
            warnings.push(dangling(o, e));
            None
        }
    };
    let regex = (kind == PathKind::Regex)
        .then(|| regex::Regex::new(&format!("(?i)^{path}")).ok())
        .flatten();
    Route {
        ingress: o.id.clone(),
        host: Arc::from(host),
        path: Arc::from(path),
        kind,
        regex,
        backend,
        annotations: o.ann.clone(),
        ssl_redirect: false,
        canary: None,
    }
}

/// A reference to an object that is not there, as a warning on `o`.
fn dangling(o: &Ours<'_>, e: FieldError) -> Warning {
    Warning {
        file: o.file.into(),
        object: Some(o.key.clone()),
        message: format!("{}: {}", e.field, e.reason),
    }
}

/// Hosts covered by a TLS host pattern set.
fn tls_covers(tls_hosts: &HashSet<String>, host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    tls_hosts.contains(host)
        || host
            .split_once('.')
            .is_some_and(|(_, parent)| tls_hosts.contains(&format!("*.{parent}")))
}

pub fn compile(input: IngressInput<'_>) -> IngressTable {
    let IngressInput {
        ingresses,
        classes,
        services,
        secrets,
        opts,
        errors,
        warnings,
        named_services,
    } = input;
    let services = &mut ServiceLookup {
        map: services,
        named: named_services,
    };
    let mut ours = Vec::new();
    for (file, ing) in ingresses {
        let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
        let name = ing.metadata.name.as_deref().unwrap_or("");
        let key = ObjectKey::new("Ingress", ns, name);
        if let Err(why) = is_ours(ing, &classes, opts) {
            tracing::debug!(ingress = %key, "{why}");
            warnings.push(Warning {
                file: file.into(),
                object: Some(key),
                message: why,
            });
            continue;
        }
        let (ann, _) = annotations::parse(ing.metadata.annotations.as_ref());
        for a in &ann.ignored {
            warnings.push(Warning {
                file: file.into(),
                object: Some(key.clone()),
                message: format!(
                    "metadata.annotations[{}]: has no effect {}",
                    a.annotation, a.why
                ),
            });
        }
        ours.push(Ours {
            file,
            ing,
            id: Arc::from(format!("{ns}/{name}")),
            key,
            ann: Arc::new(ann),
            created: ing
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        });
    }
    // Oldest first, then namespace/name: the first claim of a host+path wins.
    ours.sort_by(|a, b| {
        (a.created.unwrap_or(i64::MAX), &a.key).cmp(&(b.created.unwrap_or(i64::MAX), &b.key))
    });

    let mut served: Vec<ServedIngress> = ours.iter().map(|o| served_ingress(o.ing)).collect();
    served.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut table = IngressTable {
        served,
        ..Default::default()
    };
    let mut tls_hosts: HashSet<String> = HashSet::new();
    for o in &ours {
        let spec = o.ing.spec.as_ref();
        let rule_hosts: Vec<&str> = spec
            .and_then(|s| s.rules.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|r| r.host.as_deref())
            .collect();
        for (ti, t) in spec
            .and_then(|s| s.tls.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let hosts: Vec<&str> = match t.hosts.as_deref() {
                Some(h) if !h.is_empty() => h.iter().map(String::as_str).collect(),
                _ => rule_hosts.clone(),
            };
            let entry = t.secret_name.as_deref().and_then(|sn| {
                let found = secrets.get(&(o.key.namespace.clone(), sn.to_string()));
                if found.is_none() {
                    // cert-manager, for one, creates it after the Ingress.
                    warnings.push(dangling(
                        o,
                        FieldError::new(
                            format!("spec.tls[{ti}].secretName"),
                            format!(
                                "Secret {}/{sn} does not exist or is not a valid kubernetes.io/tls Secret (the default certificate is used)",
                                o.key.namespace
                            ),
                        ),
                    ));
                }
                found.map(|c| TlsEntry {
                    secret: Arc::from(format!("{}/{sn}", o.key.namespace)),
                    cert: c.clone(),
                })
            });
            for h in hosts {
                let h = h.to_ascii_lowercase();
                tls_hosts.insert(h.clone());
                if let Some(e) = &entry {
                    let (map, k) = match h.strip_prefix("*.") {
                        Some(parent) => (&mut table.wildcard_certs, parent.to_string()),
                        None => (&mut table.certs, h),
                    };
                    map.entry(k.into()).or_insert_with(|| e.clone());
                }
            }
        }
    }

    let mut hosts: HashMap<String, HostBuild> = HashMap::new();
    let mut canaries = Vec::new();
    for o in &ours {
        let Some(spec) = o.ing.spec.as_ref() else {
            continue;
        };
        if o.ann.canary.is_some() {
            canaries.push(o);
            continue;
        }
        if let Some(b) = &spec.default_backend
            && table.default_backend.is_none()
        {
            let r = make_route(
                o,
                "",
                "/",
                PathKind::Prefix,
                b,
                "spec.defaultBackend",
                services,
                errors,
                warnings,
            );
            table.default_backend = Some(Arc::new(r));
        }
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.as_deref().unwrap_or("").to_ascii_lowercase();
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("spec.rules[{ri}].http.paths[{pi}]");
                let path = p.path.as_deref().unwrap_or("/");
                let kind = path_kind(&o.ann, &p.path_type);
                let mut r = make_route(
                    o,
                    &host,
                    path,
                    kind,
                    &p.backend,
                    &format!("{field}.backend"),
                    services,
                    errors,
                    warnings,
                );
                // As ingress-nginx: ssl-redirect (default on) only where the
                // host has a certificate; force-ssl-redirect everywhere.
                r.ssl_redirect = o.ann.force_ssl_redirect
                    || (tls_covers(&tls_hosts, &host) && o.ann.ssl_redirect.unwrap_or(true));
                let hb = hosts.entry(host.clone()).or_default();
                // Requests are matched decoded: so are the rule paths.
                let key = spec_key(path);
                let lost = match kind {
                    PathKind::Exact => match hb.exact.get(&*key) {
                        Some(old) => Some(old.ingress.clone()),
                        None => {
                            hb.exact.insert(key.as_ref().into(), r);
                            None
                        }
                    },
                    PathKind::Prefix => {
                        let slash = path.len() > 1 && path.ends_with('/');
                        let pk: Box<str> = prefix_key(&key).into();
                        match hb.prefix.remove(&pk) {
                            None => {
                                hb.prefix.insert(pk, (slash, r));
                                None
                            }
                            // The same path: the older claim stays.
                            Some((old_slash, old)) if old_slash == slash => {
                                let winner = old.ingress.clone();
                                hb.prefix.insert(pk, (old_slash, old));
                                Some(winner)
                            }
                            // `/foo/bar` and `/foo/bar/`: as ingress-nginx
                            // orders them (longest first), `/foo/bar/`
                            // serves itself and below, `/foo/bar` only
                            // itself.
                            Some((old_slash, old)) => {
                                let ((_, with), bare) = if slash {
                                    ((slash, r), old)
                                } else {
                                    ((old_slash, old), r)
                                };
                                warnings.push(Warning {
                                    file: o.file.into(),
                                    object: Some(o.key.clone()),
                                    message: format!(
                                        "{field}: host {:?} Prefix paths {:?} (Ingress {}) and {:?} (Ingress {}) differ only by a trailing slash: the first serves {:?} and below, the second only {:?} itself",
                                        if host.is_empty() { "*" } else { &host },
                                        &*with.path,
                                        with.ingress,
                                        &*bare.path,
                                        bare.ingress,
                                        &*with.path,
                                        &*bare.path,
                                    ),
                                });
                                hb.prefix.insert(pk.clone(), (true, with));
                                // Unless an Exact path has it already.
                                match hb.exact.get(&pk) {
                                    Some(e) => Some(e.ingress.clone()),
                                    None => {
                                        hb.exact.insert(pk, bare);
                                        None
                                    }
                                }
                            }
                        }
                    }
                    PathKind::Regex => match hb.regex.iter().find(|x| &*x.path == path) {
                        Some(old) => Some(old.ingress.clone()),
                        None => {
                            hb.regex.push(r);
                            None
                        }
                    },
                };
                if let Some(winner) = lost {
                    warnings.push(Warning {
                        file: o.file.into(),
                        object: Some(o.key.clone()),
                        message: format!(
                            "{field}: host {:?} path {path:?} is already routed by Ingress {winner}; this path is not used",
                            if host.is_empty() { "*" } else { &host }
                        ),
                    });
                }
            }
        }
    }

    for o in canaries {
        let Some(spec) = o.ing.spec.as_ref() else {
            continue;
        };
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.as_deref().unwrap_or("").to_ascii_lowercase();
            for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("spec.rules[{ri}].http.paths[{pi}]");
                let path = p.path.as_deref().unwrap_or("/");
                let canary = make_route(
                    o,
                    &host,
                    path,
                    PathKind::Prefix,
                    &p.backend,
                    &format!("{field}.backend"),
                    services,
                    errors,
                    warnings,
                );
                // The main route's kind decides matching; the canary only diverts.
                let main = hosts.get_mut(&host).and_then(|hb| {
                    [PathKind::Exact, PathKind::Prefix, PathKind::Regex]
                        .into_iter()
                        .find(|k| hb.slot(*k, path).is_some())
                        .and_then(|k| hb.slot(k, path))
                });
                match main {
                    Some(m) if m.canary.is_none() => m.canary = Some(Arc::new(canary)),
                    Some(m) => warnings.push(Warning {
                        file: o.file.into(),
                        object: Some(o.key.clone()),
                        message: format!("{field}: path {path:?} already has canary {}; ignored", m.canary.as_ref().map(|c| &*c.ingress).unwrap_or("")),
                    }),
                    None => warnings.push(Warning {
                        file: o.file.into(),
                        object: Some(o.key.clone()),
                        message: format!("{field}: canary has no main Ingress for host {host:?} path {path:?}; ignored"),
                    }),
                }
            }
        }
    }

    for (host, hb) in hosts {
        let routes = hb.finish();
        if host.is_empty() {
            table.any_host = routes;
        } else if let Some(parent) = host.strip_prefix("*.") {
            table.wildcards.insert(parent.into(), routes);
        } else {
            table.hosts.insert(host.into(), routes);
        }
    }
    table
}

fn path_kind(ann: &Annotations, path_type: &str) -> PathKind {
    if ann.regex_paths() {
        return PathKind::Regex;
    }
    match path_type {
        "Exact" => PathKind::Exact,
        _ => PathKind::Prefix,
    }
}
