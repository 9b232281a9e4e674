//! What the API server fills in when a manifest leaves it out and the
//! planes depend on: ClusterIPs from the service ranges
//! (`--service-cluster-ip-range`), nodePorts and healthCheckNodePorts from
//! the node-port range. Manifests written for a cluster rarely name them.
//!
//! - **Explicit values first.** The addresses and ports Services name are
//!   never handed to another: a compile registers every explicit value of
//!   the Services it recompiles before it allocates for any of them (on a
//!   cold start, all of them).
//! - **Deterministic.** The search starts at a hash (FNV-1a) of
//!   `namespace/name` (and the port, for nodePorts) and probes upward, and
//!   a cold start allocates in key order, so the same set of Services gets
//!   the same values on every start.
//! - **Stable.** What a Service was given stays with it while it exists and
//!   still needs it, whatever comes and goes around it. (An explicit value
//!   that a later Service names and that an allocation already holds is a
//!   conflict the L4 claims report, as between two explicit ones.)
//! - The first address of each range is `default/kubernetes`'s, as the API
//!   server keeps it.

use crate::error::FieldError;
use crate::service::Service;
use crate::snapshot::NamespacedName;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// kube-apiserver's default `--service-cluster-ip-range`.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// One `--service-cluster-ip-range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    base: IpAddr,
    prefix: u8,
}

impl FromStr for ServiceCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<ServiceCidr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (ADDRESS/LENGTH)"))?;
        let ip: IpAddr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{s:?}: the length must be 0..={bits}"))?;
        // Room for the network address, `kubernetes` and one more.
        if bits - prefix < 2 {
            return Err(format!("{s:?}: the range is too small"));
        }
        let cidr = ServiceCidr { base: ip, prefix };
        Ok(ServiceCidr {
            base: cidr.nth(0),
            prefix,
        })
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// An IP family, as `spec.ipFamilies` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

impl ServiceCidr {
    pub fn family(&self) -> Family {
        Family::of(&self.base)
    }

    fn host_bits(&self) -> u32 {
        let bits = if self.base.is_ipv4() { 32 } else { 128 };
        u32::from(bits - self.prefix)
    }

    /// The `i`-th address of the range (`i` below its size).
    fn nth(&self, i: u128) -> IpAddr {
        let host = self.host_bits();
        let mask = if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        match self.base {
            IpAddr::V4(a) => {
                let net = u128::from(u32::from(a)) & !mask & u128::from(u32::MAX);
                IpAddr::V4(Ipv4Addr::from((net | (i & mask)) as u32))
            }
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from((u128::from(a) & !mask) | (i & mask))),
        }
    }

    /// `default/kubernetes`'s address: the first after the network address.
    pub fn kubernetes(&self) -> IpAddr {
        self.nth(1)
    }

    /// How many addresses are handed out dynamically: all but the network
    /// address, `kubernetes`'s and (IPv4) the broadcast address, capped so
    /// that probing a huge IPv6 range stays bounded.
    fn pool(&self) -> u64 {
        let host = self.host_bits();
        let size: u128 = if host >= 64 { 1 << 32 } else { 1 << host };
        let reserved = if self.base.is_ipv4() { 3 } else { 2 };
        (size.min(1 << 32) - reserved) as u64
    }

    /// The `i`-th dynamically handed-out address.
    fn pooled(&self, i: u64) -> IpAddr {
        self.nth(2 + u128::from(i))
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family() && self.nth(0) == ServiceCidr { base: *ip, ..*self }.nth(0)
    }
}

/// What a compiled Service left for the allocator: the API server's
/// defaults it depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unfilled {
    /// No clusterIP given, and one is needed (not headless, not
    /// ExternalName).
    pub cluster_ips: bool,
    /// `spec.ipFamilies` (empty: the cluster's, the first range's first).
    pub families: Vec<Family>,
    pub policy: FamilyPolicy,
    /// Indexes of the ports that need a nodePort.
    pub node_ports: Vec<usize>,
    pub health_check_node_port: bool,
}

/// The families of the service ranges, in the order given (the first is
/// the cluster's default family).
pub fn cidr_families(cidrs: &[ServiceCidr]) -> Vec<Family> {
    let mut out = Vec::new();
    for c in cidrs {
        if !out.contains(&c.family()) {
            out.push(c.family());
        }
    }
    out
}

/// The `ipFamilies` the API server settles on for a Service that has no
/// clusterIP yet: those it asks for, else the cluster's (`cluster`, in
/// range order), one of them for SingleStack and up to two otherwise.
pub fn service_families(asked: &[Family], policy: FamilyPolicy, cluster: &[Family]) -> Vec<Family> {
    let mut families = if asked.is_empty() {
        cluster.to_vec()
    } else {
        asked.to_vec()
    };
    families.truncate(if policy == FamilyPolicy::SingleStack {
        1
    } else {
        2
    });
    families
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

impl FamilyPolicy {
    pub fn parse(s: Option<&str>) -> FamilyPolicy {
        match s {
            Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
            _ => FamilyPolicy::SingleStack,
        }
    }
}

/// The ranges the allocator hands out from.
#[derive(Clone, Debug)]
pub struct Ranges<'a> {
    pub cidrs: &'a [ServiceCidr],
    pub node_ports: RangeInclusive<u16>,
}

/// What one Service was given.
#[derive(Clone, Debug, Default)]
struct Given {
    ips: Vec<IpAddr>,
    /// nodePort by (port number, protocol-independent): ports of one number
    /// share it, as the API server does for TCP and UDP of one port.
    node_ports: Vec<(u16, u16)>,
    health: Option<u16>,
}

/// One Service's fill: who, what it left unfilled, where from, and what
/// it was given before.
#[derive(Clone, Copy)]
struct Job<'a> {
    key: &'a NamespacedName,
    wants: &'a Unfilled,
    ranges: &'a Ranges<'a>,
    before: &'a Given,
}

/// Addresses and ports in use, and what each Service was given.
#[derive(Debug, Default)]
pub struct Allocator {
    /// Explicit values of the compiled Services (counted: two may name one).
    explicit_ips: HashMap<IpAddr, u32>,
    explicit_ports: HashMap<u16, u32>,
    taken_ips: HashMap<IpAddr, NamespacedName>,
    taken_ports: HashMap<u16, NamespacedName>,
    given: HashMap<NamespacedName, Given>,
}

/// FNV-1a over `parts`: a hash that is the same in every process and on
/// every node (allocation here, upstream-hash-by in the ingress plane).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K, up: bool) {
    if up {
        *m.entry(k).or_default() += 1;
    } else if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

impl Allocator {
    /// Counts (`add`) or uncounts a compiled Service's explicit values.
    pub fn explicit(&mut self, svc: &Service, add: bool) {
        if !svc.allocated.cluster_ips {
            for ip in &svc.cluster_ips {
                bump(&mut self.explicit_ips, *ip, add);
            }
        }
        for p in &svc.ports {
            if let Some(np) = p.node_port
                && !svc.allocated.node_ports.contains(&p.port)
            {
                bump(&mut self.explicit_ports, np, add);
            }
        }
        if let Some(hc) = svc.health_check_node_port
            && !svc.allocated.health_check_node_port
        {
            bump(&mut self.explicit_ports, hc, add);
        }
    }

    /// Fills in what `svc` left unfilled, keeping what it was given before;
    /// hands back what it no longer needs. Errors name the field.
    pub fn fill(
        &mut self,
        key: &NamespacedName,
        svc: &mut Service,
        wants: &Unfilled,
        ranges: &Ranges<'_>,
    ) -> Vec<FieldError> {
        let before = self.given.remove(key).unwrap_or_default();
        let mut now = Given::default();
        let mut errors = Vec::new();
        let job = Job {
            key,
            wants,
            ranges,
            before: &before,
        };
        self.fill_ips(&job, svc, &mut now, &mut errors);
        self.fill_ports(&job, svc, &mut now, &mut errors);
        for ip in before.ips.iter().filter(|ip| !now.ips.contains(ip)) {
            self.taken_ips.remove(ip);
        }
        let kept = |p: &u16| now.node_ports.iter().any(|(_, np)| np == p) || now.health == Some(*p);
        for p in before
            .node_ports
            .iter()
            .map(|(_, np)| np)
            .chain(&before.health)
        {
            if !kept(p) {
                self.taken_ports.remove(p);
            }
        }
        if !now.ips.is_empty() || !now.node_ports.is_empty() || now.health.is_some() {
            self.given.insert(key.clone(), now);
        }
        errors
    }

    /// A Service is gone: what it was given is free again.
    pub fn release(&mut self, key: &NamespacedName) {
        if let Some(g) = self.given.remove(key) {
            for ip in &g.ips {
                self.taken_ips.remove(ip);
            }
            for p in g.node_ports.iter().map(|(_, np)| np).chain(&g.health) {
                self.taken_ports.remove(p);
            }
        }
    }

    fn fill_ips(
        &mut self,
        job: &Job<'_>,
        svc: &mut Service,
        now: &mut Given,
        errors: &mut Vec<FieldError>,
    ) {
        let Job {
            key,
            wants,
            ranges,
            before,
        } = *job;
        if !wants.cluster_ips {
            return;
        }
        let families =
            service_families(&wants.families, wants.policy, &cidr_families(ranges.cidrs));
        let dual = wants.policy != FamilyPolicy::SingleStack;
        if !dual && wants.families.len() > 1 {
            errors.push(FieldError::new(
                "spec.ipFamilies",
                "two families need ipFamilyPolicy PreferDualStack or RequireDualStack \
                 (the API server refuses them with SingleStack); the first is used",
            ));
        }
        if wants.policy == FamilyPolicy::RequireDualStack && families.len() < 2 {
            errors.push(FieldError::new(
                "spec.ipFamilyPolicy",
                "RequireDualStack, but the service ranges (--service-cluster-ip-range) are of one family",
            ));
        }
        for family in &families {
            let Some(cidr) = ranges.cidrs.iter().find(|c| c.family() == *family) else {
                // The API server rejects a family it has no range for
                // (dual-stack policies drop it).
                if !dual || wants.policy == FamilyPolicy::RequireDualStack {
                    errors.push(FieldError::new(
                        "spec.ipFamilies",
                        format!("no --service-cluster-ip-range is {family}; none allocated"),
                    ));
                }
                continue;
            };
            let kept = before.ips.iter().find(|ip| cidr.contains(ip));
            let ip = match kept {
                Some(ip) => Some(*ip),
                None => self.pick_ip(key, cidr),
            };
            match ip {
                Some(ip) => {
                    self.taken_ips.insert(ip, key.clone());
                    now.ips.push(ip);
                }
                None => errors.push(FieldError::new(
                    "spec.clusterIP",
                    format!("no free address left in {cidr}; none allocated"),
                )),
            }
        }
        svc.cluster_ips = now.ips.clone();
        svc.allocated.cluster_ips = !now.ips.is_empty();
    }

    fn pick_ip(&self, key: &NamespacedName, cidr: &ServiceCidr) -> Option<IpAddr> {
        let free =
            |ip: &IpAddr| !self.explicit_ips.contains_key(ip) && !self.taken_ips.contains_key(ip);
        if key.0 == "default" && key.1 == "kubernetes" && free(&cidr.kubernetes()) {
            return Some(cidr.kubernetes());
        }
        let pool = cidr.pool();
        let start = fnv1a(&[key.0.as_bytes(), key.1.as_bytes()]) % pool;
        (0..pool)
            .map(|j| cidr.pooled((start + j) % pool))
            .find(|ip| free(ip))
    }

    fn fill_ports(
        &mut self,
        job: &Job<'_>,
        svc: &mut Service,
        now: &mut Given,
        errors: &mut Vec<FieldError>,
    ) {
        let Job {
            key,
            wants,
            ranges,
            before,
        } = *job;
        for &i in &wants.node_ports {
            let Some(port) = svc.ports.get(i).map(|p| p.port) else {
                continue;
            };
            let shared = now
                .node_ports
                .iter()
                .find(|(p, _)| *p == port)
                .map(|(_, np)| *np);
            let np = shared
                .or_else(|| {
                    before
                        .node_ports
                        .iter()
                        .find(|(p, _)| *p == port)
                        .map(|(_, np)| *np)
                })
                .or_else(|| self.pick_port(key, &port.to_string(), ranges));
            let Some(np) = np else {
                errors.push(FieldError::new(
                    format!("spec.ports[{i}].nodePort"),
                    format!(
                        "no free port left in {}-{}; none allocated",
                        ranges.node_ports.start(),
                        ranges.node_ports.end()
                    ),
                ));
                continue;
            };
            self.taken_ports.insert(np, key.clone());
            if shared.is_none() {
                now.node_ports.push((port, np));
            }
            svc.ports[i].node_port = Some(np);
            if !svc.allocated.node_ports.contains(&port) {
                svc.allocated.node_ports.push(port);
            }
        }
        if wants.health_check_node_port {
            let hc = before
                .health
                .or_else(|| self.pick_port(key, "healthCheckNodePort", ranges));
            match hc {
                Some(hc) => {
                    self.taken_ports.insert(hc, key.clone());
                    now.health = Some(hc);
                    svc.health_check_node_port = Some(hc);
                    svc.allocated.health_check_node_port = true;
                }
                None => errors.push(FieldError::new(
                    "spec.healthCheckNodePort",
                    format!(
                        "no free port left in {}-{}; none allocated",
                        ranges.node_ports.start(),
                        ranges.node_ports.end()
                    ),
                )),
            }
        }
    }

    fn pick_port(&self, key: &NamespacedName, what: &str, ranges: &Ranges<'_>) -> Option<u16> {
        let (lo, hi) = (*ranges.node_ports.start(), *ranges.node_ports.end());
        if lo > hi {
            return None;
        }
        let n = u64::from(hi - lo) + 1;
        let start = fnv1a(&[key.0.as_bytes(), key.1.as_bytes(), what.as_bytes()]) % n;
        (0..n)
            .map(|j| lo + ((start + j) % n) as u16)
            .find(|p| !self.explicit_ports.contains_key(p) && !self.taken_ports.contains_key(p))
    }
}

#[cfg(test)]
mod tests;
