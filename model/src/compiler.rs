//! The incremental compile: object changes in, the next Snapshot out, with
//! work in proportion to what changed.
//!
//! Each change is noted as it happens ([`Compiler::note`]), which records
//! what depends on it: a Service, its Endpoints and EndpointSlices (by
//! `kubernetes.io/service-name`) and, for selector Services, the Pods of
//! its namespace. [`Compiler::compile`] then recompiles only those
//! Services, re-decides only the L4 claims they made or make, and rebuilds
//! the Ingress table only when an Ingress, IngressClass, TLS Secret or a
//! Service an Ingress names changed. Everything else is shared with the
//! previous Snapshot by pointer ([`SharedMap`]).
//!
//! A fresh compile is the same code with every object noted as added, so
//! incremental and from-scratch results agree by construction (and a
//! property test checks it).

use crate::alloc::{Allocator, Family, Ranges, Unfilled, cidr_families};
use crate::claims::{ClaimKey, Claims};
use crate::endpoints::Sources;
use crate::error::{ConfigError, FieldError, ObjectKey, Warning};
use crate::gateway::{self, GatewayInput, GatewayTable};
use crate::ingress::{self, IngressInput, IngressTable};
use crate::object::Object;
use crate::service::{Protocol, Service};
use crate::snapshot::{
    CompileOptions, FrontendMap, HealthCheck, Listen, NamespacedName, Objects, SecretMap,
    ServiceMap, Snapshot, TRIGGER_LOG, TriggerTime, compile_service,
};
use crate::tls::TlsSecret;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The compiled picture and the indexes that say what depends on what.
#[derive(Default)]
pub struct Compiler {
    services: ServiceMap,
    frontends: FrontendMap,
    claims: Claims,
    /// ClusterIPs and node ports handed out, and to whom.
    alloc: Allocator,
    alloc_errors: BTreeMap<NamespacedName, Vec<ConfigError>>,
    /// Services that ask for a health-check port.
    health_askers: BTreeSet<NamespacedName>,
    health_checks: Arc<Vec<HealthCheck>>,
    health_errors: Vec<ConfigError>,
    /// How many objects (and Namespace objects) each namespace has.
    namespace_refs: BTreeMap<String, usize>,
    namespaces: Arc<BTreeSet<String>>,
    namespaces_dirty: bool,
    /// EndpointSlice names by (namespace, service-name label).
    slices: HashMap<NamespacedName, BTreeSet<String>>,
    secrets: SecretMap,
    ingress: Arc<IngressTable>,
    /// Services the Ingresses name (existing or not): a change to one of
    /// them rebuilds the Ingress table.
    ingress_services: HashSet<NamespacedName>,
    ingress_errors: Vec<ConfigError>,
    ingress_warnings: Vec<Warning>,
    gateway: Arc<GatewayTable>,
    /// Services the HTTPRoutes name (existing or not).
    gateway_services: HashSet<NamespacedName>,
    dirty_gateway: bool,
    /// Hosts and paths both an Ingress and an HTTPRoute claim.
    overlap_warnings: Vec<Warning>,
    /// Gateways of classes that are not ours.
    gateway_warnings: Vec<Warning>,
    dirty_services: BTreeSet<NamespacedName>,
    dirty_pod_namespaces: BTreeSet<String>,
    dirty_ingress: bool,
    /// Trigger times of the endpoint changes noted since the last compile.
    pending_triggers: Vec<std::time::SystemTime>,
    /// The log handed to Snapshots (see [`Snapshot::trigger_times`]).
    triggers: Arc<Vec<TriggerTime>>,
}

/// A dirty Service compiled: its file, its compiled form, and what is left
/// to allocate for it.
type Dirty = (PathBuf, Service, Unfilled);

/// The trigger time an EndpointSlice carries, if its change is new: the
/// annotation is there, parses, and differs from the old version's. As in
/// kube-proxy, only slices count (an Endpoints object mirrors the same
/// change), and not those of headless Services or of another proxy.
fn trigger_time(old: Option<&Object>, new: Option<&Object>) -> Option<std::time::SystemTime> {
    fn read(o: Option<&Object>) -> Option<&str> {
        match o? {
            Object::EndpointSlice(s) if !s.unproxied => s.trigger_time.as_deref(),
            _ => None,
        }
    }
    let at = read(new)?;
    if read(old) == Some(at) {
        return None;
    }
    at.parse::<jiff::Timestamp>().ok().map(Into::into)
}

fn nn(ns: &str, name: &str) -> NamespacedName {
    (ns.to_string(), name.to_string())
}

fn slice_service(obj: Option<&Object>) -> Option<&str> {
    match obj? {
        Object::EndpointSlice(s) => s.service.as_deref(),
        _ => None,
    }
}

impl Compiler {
    pub fn new() -> Self {
        Compiler {
            // The first compile publishes the namespace set even if empty.
            namespaces_dirty: true,
            dirty_ingress: true,
            dirty_gateway: true,
            ..Default::default()
        }
    }

    /// Records that the good version of `key` went from `old` to `new`
    /// (`None`: absent). Call it for every change, before `compile`.
    pub fn note(&mut self, key: &ObjectKey, old: Option<&Object>, new: Option<&Object>) {
        self.count_namespaces(key, old.is_some(), new.is_some());
        if let Some(at) = trigger_time(old, new) {
            self.pending_triggers.push(at);
        }
        let ns = key.namespace.as_str();
        match key.kind {
            "Service" | "Endpoints" => {
                self.dirty_services.insert(nn(ns, &key.name));
            }
            "EndpointSlice" => {
                if let Some(svc) = slice_service(old) {
                    let k = nn(ns, svc);
                    if let Some(set) = self.slices.get_mut(&k) {
                        set.remove(&key.name);
                        if set.is_empty() {
                            self.slices.remove(&k);
                        }
                    }
                    self.dirty_services.insert(k);
                }
                if let Some(svc) = slice_service(new) {
                    let k = nn(ns, svc);
                    self.slices
                        .entry(k.clone())
                        .or_default()
                        .insert(key.name.clone());
                    self.dirty_services.insert(k);
                }
            }
            "Pod" => {
                self.dirty_pod_namespaces.insert(key.namespace.clone());
            }
            "Secret" => {
                let k = nn(ns, &key.name);
                self.secrets.remove(&k);
                if let Some(Object::Secret(s)) = new
                    && s.type_.as_deref() == Some("kubernetes.io/tls")
                    // Validation already proved it parses.
                    && let Ok(t) = TlsSecret::from_secret(s)
                {
                    self.secrets.insert(k, Arc::new(t));
                }
                let tls = old.is_some_and(is_tls_secret) || new.is_some_and(is_tls_secret);
                self.dirty_ingress |= tls;
                self.dirty_gateway |= tls;
            }
            "Ingress" | "IngressClass" => self.dirty_ingress = true,
            // Namespace labels select which routes a listener admits.
            "GatewayClass" | "Gateway" | "HTTPRoute" | "ReferenceGrant" | "Namespace" => {
                self.dirty_gateway = true
            }
            _ => {}
        }
    }

    fn count_namespaces(&mut self, key: &ObjectKey, was: bool, is: bool) {
        let mut names = Vec::with_capacity(2);
        if !key.namespace.is_empty() {
            names.push(key.namespace.as_str());
        }
        if key.kind == "Namespace" {
            names.push(key.name.as_str());
        }
        for ns in names {
            let count = self.namespace_refs.entry(ns.to_string()).or_default();
            let before = *count > 0;
            *count = (*count + usize::from(is)).saturating_sub(usize::from(was));
            if *count == 0 {
                self.namespace_refs.remove(ns);
            }
            let after = self.namespace_refs.contains_key(ns);
            self.namespaces_dirty |= before != after;
        }
    }

    /// The next Snapshot from the good `objects` (which already reflect
    /// every noted change). `held` says which Service held an L4 address
    /// before, when not this compiler's own last result (a fresh compile).
    pub fn compile(
        &mut self,
        objects: &Objects,
        generation: u64,
        opts: &CompileOptions,
        held: Option<&FrontendMap>,
        mut errors: Vec<ConfigError>,
        mut warnings: Vec<Warning>,
    ) -> Snapshot {
        if std::mem::take(&mut self.namespaces_dirty) {
            self.namespaces = Arc::new(self.namespace_refs.keys().cloned().collect());
        }
        let (changed, reshaped) = self.compile_services(objects, opts);
        let touched = self.claim(&changed, held);
        self.health(&changed, &touched);
        // Routes name their Service and read its endpoints per request:
        // only a Service that appeared, went or changed its ports (or
        // externalName) changes what an Ingress resolves to.
        if reshaped.iter().any(|k| self.ingress_services.contains(k)) {
            self.dirty_ingress = true;
        }
        let ingress_rebuilt = std::mem::take(&mut self.dirty_ingress);
        if ingress_rebuilt {
            self.compile_ingress(objects, opts);
        }
        if reshaped.iter().any(|k| self.gateway_services.contains(k)) {
            self.dirty_gateway = true;
        }
        let gateway_rebuilt = std::mem::take(&mut self.dirty_gateway);
        if gateway_rebuilt {
            self.compile_gateway(objects);
        }
        if gateway_rebuilt || ingress_rebuilt {
            self.overlap_warnings = overlap_warnings(&self.ingress, &self.gateway, objects);
        }
        errors.extend(self.alloc_errors.values().flatten().cloned());
        errors.extend(self.claims.errors().cloned());
        errors.extend(self.health_errors.iter().cloned());
        errors.extend(self.ingress_errors.iter().cloned());
        warnings.extend(self.ingress_warnings.iter().cloned());
        warnings.extend(self.overlap_warnings.iter().cloned());
        warnings.extend(self.gateway_warnings.iter().cloned());
        self.log_triggers(generation);
        Snapshot {
            generation,
            services: self.services.clone(),
            frontends: self.frontends.clone(),
            health_checks: self.health_checks.clone(),
            namespaces: self.namespaces.clone(),
            ingress: self.ingress.clone(),
            gateway: self.gateway.clone(),
            tls_secrets: self.secrets.clone(),
            errors: Arc::new(errors),
            warnings: Arc::new(warnings),
            trigger_times: self.triggers.clone(),
        }
    }

    /// Moves the trigger times noted since the last compile into the log,
    /// under `generation`, keeping those of the last [`TRIGGER_LOG`]
    /// generations (all of each: one update may change thousands).
    fn log_triggers(&mut self, generation: u64) {
        if self.pending_triggers.is_empty() {
            return;
        }
        let oldest = generation.saturating_sub(TRIGGER_LOG);
        let mut log: Vec<TriggerTime> = self
            .triggers
            .iter()
            .filter(|t| t.generation > oldest)
            .copied()
            .collect();
        log.extend(
            self.pending_triggers
                .drain(..)
                .map(|at| TriggerTime { generation, at }),
        );
        self.triggers = Arc::new(log);
    }

    /// Compiles every dirty Service (`None`: it is gone) and counts its
    /// explicit addresses and ports, before anything is allocated for any
    /// of them: an allocation never takes what one of them names.
    fn compile_dirty(
        &mut self,
        objects: &Objects,
        cluster_families: &[Family],
    ) -> Vec<(NamespacedName, Option<Dirty>)> {
        let mut out = Vec::new();
        for k in std::mem::take(&mut self.dirty_services) {
            let okey = ObjectKey::new("Service", &k.0, &k.1);
            let old = self.services.get(&k).cloned();
            if let Some(o) = &old {
                self.alloc.explicit(o, false);
            }
            let Some((file, Object::Service(svc))) = objects.get(&okey) else {
                out.push((k, None));
                continue;
            };
            let slices = self.slices.get(&k);
            let src = sources(objects, &k, slices);
            // The same file keeps its `Arc`, so an unchanged Service compares equal.
            let source = match &old {
                Some(o) if *o.source == **file => o.source.clone(),
                _ => Arc::from(file.as_path()),
            };
            let (compiled, unfilled) = compile_service(&okey, svc, &src, source, cluster_families);
            self.alloc.explicit(&compiled, true);
            out.push((k, Some((file.clone(), compiled, unfilled))));
        }
        out
    }

    /// Recompiles the dirty Services, filling in what the API server would
    /// have; returns those whose compiled form changed (added, changed or
    /// removed), and among them those whose route shape changed
    /// ([`route_shape`]).
    fn compile_services(
        &mut self,
        objects: &Objects,
        opts: &CompileOptions,
    ) -> (Vec<NamespacedName>, Vec<NamespacedName>) {
        for ns in std::mem::take(&mut self.dirty_pod_namespaces) {
            // Pods feed only Services with a selector (and no slices or
            // Endpoints, which resolve() checks).
            for (key, (_, obj)) in objects_of(objects, "Service", &ns) {
                if let Object::Service(s) = obj
                    && s.selector.as_ref().is_some_and(|sel| !sel.is_empty())
                {
                    self.dirty_services.insert(nn(&ns, &key.name));
                }
            }
        }
        let compiled = self.compile_dirty(objects, &cidr_families(&opts.service_cidrs));
        let ranges = Ranges {
            cidrs: &opts.service_cidrs,
            node_ports: opts.validate.node_port_range.clone(),
        };
        let mut changed = Vec::new();
        let mut reshaped = Vec::new();
        for (k, new) in compiled {
            let Some((file, mut svc, unfilled)) = new else {
                self.alloc.release(&k);
                self.alloc_errors.remove(&k);
                if self.services.remove(&k).is_some() {
                    reshaped.push(k.clone());
                    changed.push(k);
                }
                continue;
            };
            let errors = self.alloc.fill(&k, &mut svc, &unfilled, &ranges);
            let okey = ObjectKey::new("Service", &k.0, &k.1);
            let errors: Vec<ConfigError> = errors
                .into_iter()
                .map(|fe| ConfigError::field(file.as_path(), okey.clone(), fe))
                .collect();
            if errors.is_empty() {
                self.alloc_errors.remove(&k);
            } else {
                self.alloc_errors.insert(k.clone(), errors);
            }
            let old = self.services.get(&k);
            if old.is_some_and(|old| **old == svc) {
                continue;
            }
            if old.is_none_or(|old| route_shape(old) != route_shape(&svc)) {
                reshaped.push(k.clone());
            }
            self.services.insert(k.clone(), Arc::new(svc));
            changed.push(k);
        }
        (changed, reshaped)
    }

    /// Re-decides the L4 claims of the changed Services.
    fn claim(
        &mut self,
        changed: &[NamespacedName],
        held: Option<&FrontendMap>,
    ) -> BTreeSet<ClaimKey> {
        let mut touched = BTreeSet::new();
        for k in changed {
            self.claims.set(k, self.services.get(k), &mut touched);
        }
        for ck in &touched {
            let holder = held
                .unwrap_or(&self.frontends)
                .get(ck)
                .map(|f| f.service.id.clone());
            self.claims
                .decide(*ck, holder.as_deref(), &mut self.frontends);
        }
        touched
    }

    /// Health-check ports, decided again when a Service that asks for one
    /// changed or a TCP NodePort claim moved (they are few).
    fn health(&mut self, changed: &[NamespacedName], touched: &BTreeSet<ClaimKey>) {
        let mut dirty = touched
            .iter()
            .any(|(l, p)| matches!(l, Listen::NodePort(_)) && *p == Protocol::Tcp);
        for k in changed {
            let asks = self
                .services
                .get(k)
                .is_some_and(|s| s.health_check_node_port.is_some() && !s.proxied_elsewhere);
            dirty |= asks || self.health_askers.contains(k);
            if asks {
                self.health_askers.insert(k.clone());
            } else {
                self.health_askers.remove(k);
            }
        }
        if !dirty {
            return;
        }
        let asking: Vec<&Arc<Service>> = self
            .health_askers
            .iter()
            .filter_map(|k| self.services.get(k))
            .collect();
        let (checks, errors) = claim_health_checks(&asking, &self.frontends);
        self.health_checks = Arc::new(checks);
        self.health_errors = errors;
    }

    fn compile_ingress(&mut self, objects: &Objects, opts: &CompileOptions) {
        let mut ingresses = Vec::new();
        let mut classes = Vec::new();
        for (_, (file, obj)) in objects_of_kind(objects, "Ingress") {
            if let Object::Ingress(i) = obj {
                ingresses.push((file.as_path(), i.as_ref()));
            }
        }
        for (_, (_, obj)) in objects_of_kind(objects, "IngressClass") {
            if let Object::IngressClass(c) = obj {
                classes.push(c.as_ref());
            }
        }
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut named = HashSet::new();
        let table = ingress::compile(IngressInput {
            ingresses,
            classes,
            services: &self.services,
            secrets: &self.secrets,
            opts: &opts.ingress,
            errors: &mut errors,
            warnings: &mut warnings,
            named_services: &mut named,
        });
        self.ingress = Arc::new(table);
        self.ingress_services = named;
        self.ingress_errors = errors;
        self.ingress_warnings = warnings;
    }

    fn compile_gateway(&mut self, objects: &Objects) {
        let mut named = HashSet::new();
        let mut input = GatewayInput {
            classes: Vec::new(),
            gateways: Vec::new(),
            routes: Vec::new(),
            grants: Vec::new(),
            namespaces: Default::default(),
            services: &self.services,
            secrets: &self.secrets,
            named_services: &mut named,
        };
        for kind in [
            "GatewayClass",
            "Gateway",
            "HTTPRoute",
            "ReferenceGrant",
            "Namespace",
        ] {
            for (_, (_, obj)) in objects_of_kind(objects, kind) {
                match obj {
                    Object::GatewayClass(c) => input.classes.push(c.as_ref()),
                    Object::Gateway(g) => input.gateways.push(g.as_ref()),
                    Object::HttpRoute(r) => input.routes.push(r.as_ref()),
                    Object::ReferenceGrant(g) => input.grants.push(g.as_ref()),
                    Object::Namespace(n) => {
                        if let (Some(name), Some(labels)) = (&n.metadata.name, &n.metadata.labels) {
                            input.namespaces.insert(name.as_str(), labels);
                        }
                    }
                    _ => {}
                }
            }
        }
        let table = gateway::compile(input);
        self.gateway_warnings = table
            .status()
            .skipped
            .iter()
            .filter_map(|(key, why)| {
                let (file, _) = objects.get(key)?;
                Some(Warning {
                    file: file.clone(),
                    object: Some(key.clone()),
                    message: why.clone(),
                })
            })
            .collect();
        self.gateway = Arc::new(table);
        self.gateway_services = named;
    }
}

/// A warning per host and path an HTTPRoute takes from an Ingress, on the
/// HTTPRoute (whose file the user is likely editing).
fn overlap_warnings(ingress: &IngressTable, gw: &GatewayTable, objects: &Objects) -> Vec<Warning> {
    gateway::overlaps(ingress, gw)
        .into_iter()
        .filter_map(|o| {
            let (ns, name) = o.http_route.split_once('/')?;
            let key = ObjectKey::new("HTTPRoute", ns, name);
            let (file, _) = objects.get(&key)?;
            Some(Warning {
                file: file.clone(),
                object: Some(key),
                message: o.message(),
            })
        })
        .collect()
}

/// What an Ingress route resolves a Service to: its ports by number and
/// name (in order: routes keep a port index) and its externalName.
fn route_shape(s: &Service) -> (Vec<(&str, u16)>, Option<&str>) {
    (
        s.ports.iter().map(|p| (p.name.as_str(), p.port)).collect(),
        s.external_name.as_deref(),
    )
}

fn is_tls_secret(o: &Object) -> bool {
    matches!(o, Object::Secret(s) if s.type_.as_deref() == Some("kubernetes.io/tls"))
}

/// The objects of one kind, in key order.
fn objects_of_kind<'a>(
    objects: &'a Objects,
    kind: &'static str,
) -> impl Iterator<Item = (&'a ObjectKey, &'a (PathBuf, Object))> {
    objects
        .range(ObjectKey::new(kind, "", "")..)
        .take_while(move |(k, _)| k.kind == kind)
}

/// The objects of one kind in one namespace, in key order.
fn objects_of<'a>(
    objects: &'a Objects,
    kind: &'static str,
    ns: &'a str,
) -> impl Iterator<Item = (&'a ObjectKey, &'a (PathBuf, Object))> {
    objects
        .range(ObjectKey::new(kind, ns, "")..)
        .take_while(move |(k, _)| k.kind == kind && k.namespace == ns)
}

/// The endpoint sources of one Service: its slices, its Endpoints, and the
/// Pods of its namespace (read only when it has neither).
fn sources<'a>(
    objects: &'a Objects,
    svc: &'a NamespacedName,
    slices: Option<&BTreeSet<String>>,
) -> Sources<'a> {
    let (ns, name) = (svc.0.as_str(), svc.1.as_str());
    let mut src = Sources::default();
    for slice in slices.into_iter().flatten() {
        if let Some((_, Object::EndpointSlice(s))) =
            objects.get(&ObjectKey::new("EndpointSlice", ns, slice))
        {
            src.slices.entry(name).or_default().push(s);
        }
    }
    if let Some((_, Object::Endpoints(e))) = objects.get(&ObjectKey::new("Endpoints", ns, name)) {
        src.endpoints.insert(name, e);
    }
    if src.slices.is_empty() && src.endpoints.is_empty() {
        for (_, (_, obj)) in objects_of(objects, "Pod", ns) {
            if let Object::Pod(p) = obj {
                src.pods.push(p);
            }
        }
    }
    src
}

/// Gives each health-check port to one Service: a port that is some
/// Service's TCP nodePort, or that an older Service already has, is an
/// error on the Service that asks for it.
fn claim_health_checks(
    asking: &[&Arc<Service>],
    frontends: &FrontendMap,
) -> (Vec<HealthCheck>, Vec<ConfigError>) {
    let mut asking: Vec<_> = asking
        .iter()
        .filter_map(|s| Some((s.health_check_node_port?, *s)))
        .collect();
    asking.sort_by_key(|(port, s)| {
        (
            *port,
            s.created.unwrap_or(i64::MAX),
            s.namespace.clone(),
            s.name.clone(),
        )
    });
    let mut out: Vec<HealthCheck> = Vec::new();
    let mut errors = Vec::new();
    for (port, svc) in asking {
        let node_port = frontends.get(&(Listen::NodePort(port), Protocol::Tcp));
        let taken = match (node_port, out.last().filter(|h| h.port == port)) {
            (Some(f), _) => Some(format!(
                "{port} is Service {}'s nodePort (in {})",
                f.service.id,
                f.service.source.display()
            )),
            (None, Some(h)) => Some(format!(
                "{port} is already used by Service {} (spec.healthCheckNodePort in {})",
                h.service.id,
                h.service.source.display()
            )),
            (None, None) => None,
        };
        match taken {
            Some(why) => errors.push(ConfigError::field(
                svc.source.to_path_buf(),
                ObjectKey::new("Service", &svc.namespace, &svc.name),
                FieldError::new("spec.healthCheckNodePort", why),
            )),
            None => out.push(HealthCheck {
                port,
                service: svc.clone(),
            }),
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests;
