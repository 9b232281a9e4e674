//! The DNS table: every name the cluster zone (and the reverse zones of its
//! addresses) answers, compiled from one Snapshot into precomputed records so
//! that a query is a hash lookup and a copy. Built off the query path by a
//! background task at each new generation; a query sees one whole table.

use crate::fast::FastTable;
use crate::names::{dashed, parse_dashed};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use model::{Protocol, Service, Snapshot};
use std::collections::HashMap;
use std::net::IpAddr;

/// The schema version we implement (Kubernetes DNS spec).
const SCHEMA_VERSION: &str = "1.1.0";
const VERSION_TTL: u32 = 28800;

/// How a table is compiled.
#[derive(Clone, Debug)]
pub struct TableOptions {
    /// The cluster domain, e.g. `cluster.local` (with or without the final dot).
    pub zone: String,
    /// TTL of every record (and the SOA minimum), 0..=3600.
    pub ttl: u32,
    /// Answer `a-b-c-d.<ns>.pod.<zone>` (CoreDNS `pods insecure`).
    pub pod_records: bool,
}

/// One RRset and what goes in Additional with it (SRV targets' addresses).
#[derive(Debug)]
pub struct RrSet {
    pub rtype: RecordType,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// An ExternalName Service: the CNAME and the name to chase.
#[derive(Debug)]
pub struct Cname {
    pub record: Record,
    pub target: LowerName,
}

/// A name that exists. No RRsets = an empty non-terminal (NODATA).
#[derive(Debug, Default)]
pub struct Node {
    pub rrsets: Vec<RrSet>,
    pub cname: Option<Cname>,
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    Answer(&'a RrSet),
    /// A record made at query time (pod records).
    Synthesized(Box<Record>),
    Cname(&'a Cname),
    NoData,
    NxDomain,
    /// Not a name we are authoritative for: forward it.
    NotOurs,
}

#[derive(Debug)]
pub struct Table {
    pub generation: u64,
    zone: LowerName,
    pod_zone: LowerName,
    nodes: HashMap<LowerName, Node>,
    soa: Record,
    ttl: u32,
    pod_records: bool,
    fast: FastTable,
}

impl Table {
    /// The table served before the first Snapshot: generation 0.
    pub fn empty(opts: &TableOptions) -> Table {
        Table::compile(&Snapshot::default(), opts)
    }

    /// The SOA to put in Authority of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The same answers precompiled to wire bytes (the UDP fast path).
    pub fn fast(&self) -> &FastTable {
        &self.fast
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `name` is in the cluster zone (the reverse zones are only ours
    /// for the addresses we know, so they are not "in zone").
    pub fn in_zone(&self, name: &LowerName) -> bool {
        self.zone.zone_of(name)
    }

    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Lookup<'_> {
        if let Some(node) = self.nodes.get(name) {
            if let Some(c) = &node.cname {
                return Lookup::Cname(c);
            }
            let hit = node
                .rrsets
                .iter()
                .find(|r| r.rtype == qtype || qtype == RecordType::ANY);
            return match hit {
                Some(r) => Lookup::Answer(r),
                None => Lookup::NoData,
            };
        }
        if !self.zone.zone_of(name) {
            return Lookup::NotOurs;
        }
        // `<dashed-ip>.<ns>.pod.<zone>`: answered from the name itself, as
        // CoreDNS `pods insecure` does (no check that such a pod exists).
        if self.pod_records
            && self.pod_zone.zone_of(name)
            && name.num_labels() == self.pod_zone.num_labels() + 2
            && let Some(label) = name.iter().next()
            && let Some(ip) = std::str::from_utf8(label).ok().and_then(parse_dashed)
        {
            let rdata = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
                _ => return Lookup::NoData,
            };
            return Lookup::Synthesized(Box::new(Record::from_rdata(
                Name::from(name),
                self.ttl,
                rdata,
            )));
        }
        Lookup::NxDomain
    }

    /// Compiles the table from one Snapshot.
    pub fn compile(snap: &Snapshot, opts: &TableOptions) -> Table {
        let zone = fqdn(&opts.zone)
            .unwrap_or_else(|| Name::from_ascii("cluster.local.").expect("literal"));
        let mut b = TableBuilder {
            zone: zone.clone(),
            ttl: opts.ttl,
            nodes: HashMap::new(),
            ptrs: HashMap::new(),
        };
        let soa = b.apex(snap.generation);
        b.add(
            &zone,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
            VERSION_TTL,
            "dns-version",
        );
        for label in ["svc", "pod"] {
            b.exists_rel(&[label]);
        }
        for ns in snap.namespaces.iter() {
            b.exists_rel(&[ns.as_str(), "svc"]);
            if opts.pod_records {
                b.exists_rel(&[ns.as_str(), "pod"]);
            }
        }
        for svc in snap.services.values() {
            b.service(svc);
        }
        b.finish_ptrs();
        let pod_zone = zone.prepend_label("pod").expect("short label");
        let t0 = std::time::Instant::now();
        let fast = FastTable::build(
            snap.generation,
            b.nodes.iter(),
            &soa,
            &zone,
            opts.pod_records.then_some(&pod_zone),
        );
        tracing::debug!(
            generation = snap.generation,
            names = b.nodes.len(),
            took_ms = t0.elapsed().as_secs_f64() * 1e3,
            "dns fast answers compiled"
        );
        Table {
            generation: snap.generation,
            zone: LowerName::new(&zone),
            pod_zone: LowerName::new(&pod_zone),
            nodes: b.nodes,
            soa,
            ttl: opts.ttl,
            pod_records: opts.pod_records,
            fast,
        }
    }
}

/// Lower-cased FQDN from text, `None` if it is not a valid name.
fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s.trim_end_matches('.'))
        .ok()?
        .to_lowercase();
    n.set_fqdn(true);
    Some(n)
}

struct TableBuilder {
    zone: Name,
    ttl: u32,
    nodes: HashMap<LowerName, Node>,
    /// Reverse name -> PTR targets, in insertion order (ClusterIPs first).
    ptrs: HashMap<IpAddr, Vec<Name>>,
}

impl TableBuilder {
    /// The apex: SOA and NS. Returns the SOA record for negative answers.
    fn apex(&mut self, generation: u64) -> Record {
        let z = self.zone.clone();
        let mname = z
            .prepend_label("dns")
            .and_then(|n| n.prepend_label("ns"))
            .expect("short");
        let rname = z.prepend_label("hostmaster").expect("short");
        // serial = generation: secondaries and caches see a reload as a change.
        let soa = SOA::new(
            mname.clone(),
            rname,
            generation as u32,
            7200,
            1800,
            86400,
            self.ttl,
        );
        let record = Record::from_rdata(z.clone(), self.ttl.min(300), RData::SOA(soa));
        self.push(&z, record.clone(), None);
        self.push(
            &z,
            Record::from_rdata(z.clone(), self.ttl, RData::NS(NS(mname))),
            None,
        );
        record
    }

    /// Makes `<labels...>.<zone>` exist (NODATA rather than NXDOMAIN).
    fn exists_rel(&mut self, labels: &[&str]) {
        if let Some(n) = self.rel(labels) {
            self.ensure(&n);
        }
    }

    fn rel(&self, labels: &[&str]) -> Option<Name> {
        let mut n = self.zone.clone();
        for l in labels.iter().rev() {
            n = n.prepend_label(l.to_ascii_lowercase().as_str()).ok()?;
        }
        Some(n)
    }

    /// Makes a name and all its ancestors down to the zone exist.
    fn ensure(&mut self, name: &Name) {
        let mut n = name.clone();
        while self.zone.zone_of(&n) {
            let key = LowerName::new(&n);
            if self.nodes.contains_key(&key) {
                break;
            }
            self.nodes.insert(key, Node::default());
            if n.num_labels() == 0 {
                break;
            }
            n = n.base_name();
        }
    }

    fn push(&mut self, owner: &Name, record: Record, additional: Option<Vec<Record>>) {
        self.ensure(owner);
        let node = self.nodes.entry(LowerName::new(owner)).or_default();
        let rtype = record.record_type();
        let set = match node.rrsets.iter_mut().position(|r| r.rtype == rtype) {
            Some(i) => &mut node.rrsets[i],
            None => {
                node.rrsets.push(RrSet {
                    rtype,
                    answers: Vec::new(),
                    additionals: Vec::new(),
                });
                node.rrsets.last_mut().expect("just pushed")
            }
        };
        if !set.answers.contains(&record) {
            set.answers.push(record);
        }
        for a in additional.into_iter().flatten() {
            if !set.additionals.contains(&a) {
                set.additionals.push(a);
            }
        }
    }

    fn add(&mut self, base: &Name, rdata: RData, ttl: u32, label: &str) {
        if let Ok(owner) = base.prepend_label(label) {
            self.push(&owner, Record::from_rdata(owner.clone(), ttl, rdata), None);
        }
    }

    fn addr_record(&self, owner: &Name, ip: IpAddr) -> Record {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(owner.clone(), self.ttl, rdata)
    }

    fn service(&mut self, svc: &Service) {
        let Some(name) = self.rel(&[svc.name.as_str(), svc.namespace.as_str(), "svc"]) else {
            tracing::warn!(service = %svc.id, "service name is not a valid DNS name; no records");
            return;
        };
        if let Some(ext) = &svc.external_name {
            // An externalName that is an IP is not a name: NXDOMAIN (as CoreDNS).
            if ext.trim_end_matches('.').parse::<IpAddr>().is_ok() {
                return;
            }
            if let Some(target) = fqdn(ext) {
                self.ensure(&name);
                let record =
                    Record::from_rdata(name.clone(), self.ttl, RData::CNAME(CNAME(target.clone())));
                let node = self.nodes.get_mut(&LowerName::new(&name)).expect("ensured");
                node.cname = Some(Cname {
                    record,
                    target: LowerName::new(&target),
                });
            }
            return;
        }
        // (endpoint name, address, endpoint) for the endpoints DNS publishes.
        let eps: Vec<(Name, IpAddr)> = svc
            .dns_endpoints()
            .filter_map(|e| {
                let label = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
                Some((
                    name.prepend_label(label.to_ascii_lowercase().as_str())
                        .ok()?,
                    e.ip,
                ))
            })
            .collect();
        for (ep_name, ip) in &eps {
            let r = self.addr_record(ep_name, *ip);
            self.push(ep_name, r, None);
            self.ptrs.entry(*ip).or_default().push(ep_name.clone());
        }
        if svc.headless {
            if eps.is_empty() {
                return; // no ready endpoints: the name does not exist
            }
            for (_, ip) in &eps {
                let r = self.addr_record(&name, *ip);
                self.push(&name, r, None);
            }
        } else {
            for ip in &svc.cluster_ips {
                let r = self.addr_record(&name, *ip);
                self.push(&name, r, None);
                // ClusterIPs go first in PTR answers.
                self.ptrs.entry(*ip).or_default().insert(0, name.clone());
            }
            if svc.cluster_ips.is_empty() {
                self.ensure(&name);
            }
        }
        self.srv(svc, &name, &eps);
    }

    /// SRV records: per named port `_port._proto.<svc>`, and all ports at the
    /// Service name itself. Weight floor(100/n), priority 0, as CoreDNS.
    fn srv(&mut self, svc: &Service, name: &Name, eps: &[(Name, IpAddr)]) {
        let mut all: Vec<(u16, Name, Vec<Record>)> = Vec::new();
        for port in &svc.ports {
            let mut set: Vec<(u16, Name, Vec<Record>)> = Vec::new();
            if svc.headless {
                for (ep_name, ip) in eps {
                    // Headless SRV carries the endpoint's own port.
                    let p = port
                        .backends
                        .iter()
                        .find(|b| b.addr.ip() == *ip)
                        .map_or(port.port, |b| b.addr.port());
                    set.push((p, ep_name.clone(), vec![self.addr_record(ep_name, *ip)]));
                }
            } else {
                let adds = svc
                    .cluster_ips
                    .iter()
                    .map(|ip| self.addr_record(name, *ip))
                    .collect();
                set.push((port.port, name.clone(), adds));
            }
            all.extend(set.iter().cloned());
            if port.name.is_empty() {
                continue;
            }
            let proto = match port.protocol {
                Protocol::Tcp => "_tcp",
                Protocol::Udp => "_udp",
                Protocol::Sctp => "_sctp",
            };
            let label = format!("_{}", port.name.to_ascii_lowercase());
            let Ok(owner) = name
                .prepend_label(proto)
                .and_then(|n| n.prepend_label(label.as_str()))
            else {
                continue;
            };
            self.push_srv(&owner, set);
        }
        self.push_srv(name, all);
    }

    fn push_srv(&mut self, owner: &Name, set: Vec<(u16, Name, Vec<Record>)>) {
        if set.is_empty() {
            return;
        }
        let weight = (100 / set.len()) as u16;
        for (port, target, adds) in set {
            let rdata = RData::SRV(SRV::new(0, weight, port, target));
            self.push(
                owner,
                Record::from_rdata(owner.clone(), self.ttl, rdata),
                Some(adds),
            );
        }
    }

    fn finish_ptrs(&mut self) {
        for (ip, targets) in std::mem::take(&mut self.ptrs) {
            let owner = Name::from(ip);
            let mut seen = Vec::new();
            for t in targets {
                if seen.contains(&t) {
                    continue;
                }
                seen.push(t.clone());
                let r = Record::from_rdata(owner.clone(), self.ttl, RData::PTR(PTR(t)));
                // Reverse names are outside the zone: insert directly.
                let node = self.nodes.entry(LowerName::new(&owner)).or_default();
                match node.rrsets.first_mut() {
                    Some(set) => set.answers.push(r),
                    None => node.rrsets.push(RrSet {
                        rtype: RecordType::PTR,
                        answers: vec![r],
                        additionals: vec![],
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
