//! Who serves each L4 address: every (address, port, protocol) and NodePort
//! goes to exactly one Service. A claim already held keeps it; otherwise the
//! oldest Service (then namespace/name) wins. Losers are reported and that
//! port is not served.
//!
//! Incremental: the contenders of every address are kept, so a Service that
//! changes re-decides only the addresses it claimed before or claims now.

use crate::error::{ConfigError, FieldError};
use crate::service::{Protocol, Service, ServiceType};
use crate::snapshot::{Frontend, FrontendMap, Listen, NamespacedName};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) type ClaimKey = (Listen, Protocol);

/// One Service's wish for one address.
#[derive(Clone, Debug)]
struct Claim {
    service: Arc<Service>,
    /// Position among the Service's own claims: the first of several on
    /// the same address is the one served.
    order: usize,
    port: usize,
    /// The field that asks for the address, for errors.
    field: &'static str,
    external: bool,
}

impl Claim {
    fn rank(&self, held: Option<&str>) -> (bool, i64, &str, &str, usize) {
        let s = &self.service;
        (
            held != Some(&*s.id),
            s.created.unwrap_or(i64::MAX),
            &s.namespace,
            &s.name,
            self.order,
        )
    }

    /// The field that asks for the address, with its port index.
    fn field_name(&self) -> String {
        match self.field {
            "spec.ports.nodePort" => format!("spec.ports[{}].nodePort", self.port),
            f => f.to_string(),
        }
    }

    /// The error of a claim that lost `key` to `winner`: both objects,
    /// fields and files named.
    fn error(&self, key: &ClaimKey, winner: &Claim) -> ConfigError {
        let (listen, protocol) = key;
        let what = match listen {
            Listen::Addr(a) => format!("{a}/{}", protocol.as_str()),
            Listen::NodePort(n) => format!("nodePort {n}/{}", protocol.as_str()),
        };
        let w = &winner.service;
        ConfigError::field(
            self.service.source.to_path_buf(),
            crate::ObjectKey::new("Service", &self.service.namespace, &self.service.name),
            FieldError::new(
                self.field_name(),
                format!(
                    "{what} is already used by Service {} ({} in {}); this port is not served",
                    w.id,
                    winner.field_name(),
                    w.source.display()
                ),
            ),
        )
    }
}

/// Every address a Service wants, in the order it asks for them.
fn wanted(svc: &Arc<Service>) -> Vec<(ClaimKey, Claim)> {
    let mut out = Vec::new();
    // kube-proxy skips these too: nothing to balance, or another proxy's.
    if svc.service_type == ServiceType::ExternalName || svc.headless || svc.proxied_elsewhere {
        return out;
    }
    for (pi, p) in svc.ports.iter().enumerate() {
        let mut push = |listen: Listen, field: &'static str, external: bool| {
            let order = out.len();
            out.push((
                (listen, p.protocol),
                Claim {
                    service: svc.clone(),
                    order,
                    port: pi,
                    field,
                    external,
                },
            ));
        };
        let at = |ip| Listen::Addr(SocketAddr::new(ip, p.port));
        for ip in &svc.cluster_ips {
            push(at(*ip), "spec.clusterIP", false);
        }
        for ip in &svc.external_ips {
            push(at(*ip), "spec.externalIPs", true);
        }
        for ip in &svc.load_balancer_ips {
            push(at(*ip), "status.loadBalancer.ingress", true);
        }
        if let Some(np) = p.node_port {
            push(Listen::NodePort(np), "spec.ports.nodePort", true);
        }
    }
    out
}

/// The contenders of every address, and the errors of their losers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Claims {
    contenders: HashMap<ClaimKey, Vec<Claim>>,
    /// The addresses each Service claims.
    of_service: HashMap<NamespacedName, Vec<ClaimKey>>,
    /// Sorted by address, so errors come out in a stable order.
    errors: BTreeMap<ClaimKey, Vec<ConfigError>>,
}

impl Claims {
    /// Replaces what `key`'s Service claims (`None`: it is gone). Returns the
    /// addresses whose claim must be decided again.
    pub fn set(
        &mut self,
        key: &NamespacedName,
        svc: Option<&Arc<Service>>,
        touched: &mut BTreeSet<ClaimKey>,
    ) {
        for ck in self.of_service.remove(key).unwrap_or_default() {
            if let Some(list) = self.contenders.get_mut(&ck) {
                list.retain(|c| c.service.namespace != key.0 || c.service.name != key.1);
                if list.is_empty() {
                    self.contenders.remove(&ck);
                }
            }
            touched.insert(ck);
        }
        let Some(svc) = svc else {
            return;
        };
        let mut keys = Vec::new();
        for (ck, claim) in wanted(svc) {
            // Almost every address has one contender: no room for four.
            let list = self
                .contenders
                .entry(ck)
                .or_insert_with(|| Vec::with_capacity(1));
            list.push(claim);
            touched.insert(ck);
            keys.push(ck);
        }
        if !keys.is_empty() {
            self.of_service.insert(key.clone(), keys);
        }
    }

    /// Decides `ck` again into `frontends`. `held` is the Service that held
    /// it before (by id), which keeps it while it still asks.
    pub fn decide(&mut self, ck: ClaimKey, held: Option<&str>, frontends: &mut FrontendMap) {
        self.errors.remove(&ck);
        let Some(list) = self.contenders.get(&ck) else {
            frontends.remove(&ck);
            return;
        };
        let winner = list
            .iter()
            .min_by(|a, b| a.rank(held).cmp(&b.rank(held)))
            .expect("contender lists are never empty");
        // Contenders come in the order they were added, which differs
        // between a fresh compile and an incremental one: sort the losers.
        let mut losers: Vec<&Claim> = list
            .iter()
            .filter(|c| !Arc::ptr_eq(&c.service, &winner.service))
            .collect();
        losers.sort_by(|a, b| a.rank(held).cmp(&b.rank(held)));
        let errors: Vec<ConfigError> = losers.into_iter().map(|c| c.error(&ck, winner)).collect();
        frontends.insert(
            ck,
            Frontend {
                listen: ck.0,
                protocol: ck.1,
                service: winner.service.clone(),
                port: winner.port,
                external: winner.external,
            },
        );
        if !errors.is_empty() {
            self.errors.insert(ck, errors);
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> {
        self.errors.values().flatten()
    }
}
