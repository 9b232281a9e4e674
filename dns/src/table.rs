//! The DNS table: every name the cluster zone (and the reverse zones of its
//! addresses) answers, compiled from one Snapshot into precomputed records so
//! that a query is a hash lookup and a copy. Built off the query path by a
//! background task at each new generation; a query sees one whole table.
//!
//! What the table stores is sized for 10,000 Services: the records of a
//! Service that is not headless (nor ExternalName) are not kept, only their
//! precompiled fast answers and the `Arc<Service>` they came from (as
//! CoreDNS answers from its indexes). A query the fast path cannot answer
//! rebuilds that one Service's records on the spot (microseconds, off the
//! fast path). Its endpoint names (`<ip-or-hostname>.<svc>...`, answered as
//! CoreDNS does, relied on by almost nobody) and all reverse names are made
//! when asked from the same index, the reverse names with a fast answer for
//! ClusterIPs and headless endpoints. Storing every name with its hickory
//! records cost about 3 KB per endpoint.

mod ptrs;

use crate::fast::FastTable;
use crate::names::{dashed, parse_dashed};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use model::shared_map::Diff;
use model::{NamespacedName, Protocol, Service, ServiceMap, SharedMap, Snapshot};
use ptrs::{PtrIndex, PtrSource, PtrSources};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// The schema version we implement (Kubernetes DNS spec).
const SCHEMA_VERSION: &str = "1.1.0";
const VERSION_TTL: u32 = 28800;
/// Updates that change this many Services compile fast answers in parallel.
const PARALLEL_FROM: usize = 2000;
/// Deferred names are compiled this many at a time: enough to keep every
/// core busy, few enough that their records (about a kilobyte a name)
/// do not pile up. Deferring all 60,000 names of a 10,000-Service first
/// load held 40 MB of records at once, and the allocator kept that peak.
/// Tests use small batches, so that an update flushes several mid-way.
const DEFERRED_BATCH: usize = if cfg!(test) { 64 } else { 4096 };

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
#[derive(Clone, Debug)]
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
    /// Boxed: few names have one, and a `Cname` is 350 bytes.
    pub cname: Option<Box<Cname>>,
}

impl RrSet {
    /// A set of answers (all of one type) with nothing in Additional.
    fn of(answers: Vec<Record>) -> RrSet {
        RrSet {
            rtype: answers
                .first()
                .map_or(RecordType::NULL, Record::record_type),
            answers,
            additionals: Vec::new(),
        }
    }
}

impl Node {
    /// Gives back the spare capacity the builder's pushes left: a `Record`
    /// is 272 bytes, and a one-record set would otherwise hold four.
    fn shrink(&mut self) {
        self.rrsets.shrink_to_fit();
        for set in &mut self.rrsets {
            set.answers.shrink_to_fit();
            set.additionals.shrink_to_fit();
        }
    }
}

/// The outcome of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    Answer(&'a RrSet),
    /// Records made at query time: pod records, the names of Services whose
    /// records are not stored, reverse names.
    Synthesized(RrSet),
    Cname(&'a Cname),
    NoData,
    NxDomain,
    /// Not a name we are authoritative for: forward it.
    NotOurs,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub generation: u64,
    zone_name: Name,
    zone: LowerName,
    pod_zone: LowerName,
    nodes: SharedMap<LowerName, Arc<Node>>,
    soa: Record,
    ttl: u32,
    pod_records: bool,
    fast: FastTable,
    /// The Snapshot maps this table was built from: the next update diffs
    /// against them to find what changed.
    from_services: ServiceMap,
    from_namespaces: Arc<BTreeSet<String>>,
    /// While a big batch is built: names whose fast answers are still to
    /// compile (in parallel, every [`DEFERRED_BATCH`] names and at the end
    /// of the update).
    deferred: Option<Vec<(LowerName, Arc<Node>)>>,
    /// Reverse names: the Services that point each address at a name.
    ptrs: PtrIndex,
    /// Services whose records are made when asked (not headless, not
    /// ExternalName), by the Service's name.
    synthesized: SharedMap<LowerName, Arc<Service>>,
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

    /// Names with records stored or a fast answer (names made only when
    /// asked are not counted).
    pub fn len(&self) -> usize {
        self.nodes.len().max(self.fast.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            return self.synthesized_ptr(name, qtype);
        }
        if let Some(found) = self.made_when_asked(name, qtype) {
            return found;
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
            let record = Record::from_rdata(Name::from(name), self.ttl, rdata);
            return Lookup::Synthesized(RrSet::of(vec![record]));
        }
        Lookup::NxDomain
    }

    /// A name of a Service whose records are not stored: its own name and
    /// its SRV names (up to two labels below it), from its records built
    /// for this query, and its endpoint names. `None`: no such Service.
    fn made_when_asked(&self, name: &LowerName, qtype: RecordType) -> Option<Lookup<'_>> {
        let mut owner = name.clone();
        for depth in 0..3 {
            if let Some(svc) = self.synthesized.get(&owner) {
                let (_, b) = self.build_service(svc)?;
                if let Some(node) = b.nodes.get(name) {
                    let hit = node
                        .rrsets
                        .iter()
                        .find(|r| r.rtype == qtype || qtype == RecordType::ANY);
                    return Some(match hit {
                        Some(set) => Lookup::Synthesized(set.clone()),
                        None => Lookup::NoData,
                    });
                }
                return Some(match depth {
                    1 => self.endpoint_name(svc, name, qtype),
                    _ => Lookup::NxDomain,
                });
            }
            if owner.is_root() {
                break;
            }
            owner = owner.base_name();
        }
        None
    }

    /// `<label>.<svc>.<ns>.svc.<zone>`: the endpoints of `svc` with that
    /// hostname or dashed address, as CoreDNS answers them (A and AAAA
    /// sets; ANY gets the first endpoint's type).
    fn endpoint_name(&self, svc: &Service, name: &LowerName, qtype: RecordType) -> Lookup<'_> {
        let Some(label) = name.iter().next() else {
            return Lookup::NxDomain;
        };
        let owner = Name::from(name);
        let records: Vec<Record> = svc
            .dns_endpoints()
            .filter(|e| endpoint_label(e).as_bytes() == label)
            .map(|e| addr_record(&owner, e.ip, self.ttl))
            .collect();
        let Some(first) = records.first().map(Record::record_type) else {
            return Lookup::NxDomain;
        };
        let want = if qtype == RecordType::ANY {
            first
        } else {
            qtype
        };
        let set: Vec<Record> = records
            .into_iter()
            .filter(|r| r.record_type() == want)
            .collect();
        if set.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Synthesized(RrSet::of(set))
        }
    }

    /// The reverse name of an address a Service points at (ClusterIP or
    /// endpoint); not ours (forwarded) otherwise.
    fn synthesized_ptr(&self, name: &LowerName, qtype: RecordType) -> Lookup<'_> {
        let Some((ip, list)) = reverse_ip(name).and_then(|ip| Some((ip, self.ptrs.get(&ip)?)))
        else {
            return Lookup::NotOurs;
        };
        match qtype {
            RecordType::PTR | RecordType::ANY => Lookup::Synthesized(RrSet::of(ptr_records(
                ip,
                list.as_slice(),
                &self.zone_name,
                self.ttl,
            ))),
            _ => Lookup::NoData,
        }
    }

    /// Every name with its records and fast answers, sorted: two tables
    /// that answer alike describe alike (tests compare incremental updates
    /// with fresh compiles this way).
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .nodes
            .iter()
            .map(|(name, node)| format!("{name} {node:?}"))
            .collect();
        names.extend(self.fast.describe());
        let synthesized = self
            .synthesized
            .iter()
            .map(|(name, svc)| format!("endpoints of {name} from {}", svc.id));
        let ptrs = self.ptrs.iter().map(|(ip, list)| {
            let targets = ptr_records(ip, list.as_slice(), &self.zone_name, self.ttl);
            format!("ptr {ip} {targets:?}")
        });
        names.extend(synthesized.chain(ptrs));
        names.sort();
        format!(
            "soa {:?}\n{:?}\n{}",
            self.soa,
            self.fast.negative_answers(),
            names.join("\n")
        )
    }

    /// Compiles the table from one Snapshot, from scratch.
    pub fn compile(snap: &Snapshot, opts: &TableOptions) -> Table {
        Table::update(None, snap, opts)
    }

    /// The table for `snap`, reusing `prev` (built with the same options):
    /// only the names of Services and namespaces that changed since `prev`'s
    /// Snapshot are rebuilt, with their fast answers; the rest is shared.
    pub fn update(prev: Option<&Table>, snap: &Snapshot, opts: &TableOptions) -> Table {
        let t0 = std::time::Instant::now();
        let mut t = match prev {
            Some(p) => p.clone(),
            None => Table::blank(opts),
        };
        t.generation = snap.generation;
        t.apex();
        t.namespaces(&snap.namespaces);
        let from = std::mem::take(&mut t.from_services);
        let changed = snap.services.diff(&from, Arc::ptr_eq);
        // A first load (or a change of most of the cluster) compiles its
        // fast answers on every core, in batches.
        if changed.len() >= PARALLEL_FROM {
            t.deferred = Some(Vec::new());
        }
        let mut dirty_ptrs = BTreeSet::new();
        for d in &changed {
            let (key, old, new) = match d {
                Diff::Added(k, s) => (*k, None, Some(*s)),
                Diff::Changed(k, o, s) => (*k, Some(*o), Some(*s)),
                Diff::Removed(k, o) => (*k, Some(*o), None),
            };
            if let Some(old) = old {
                t.remove_service(key, old, &mut dirty_ptrs);
            }
            if let Some(new) = new {
                t.add_service(key, new, &mut dirty_ptrs);
            }
        }
        for ip in dirty_ptrs {
            t.rebuild_ptr(ip);
        }
        if let Some(batch) = t.deferred.take() {
            // Each name is put once per update (a Service's names are its
            // own; apex, namespaces and reverse names are put once each).
            t.fast.put_all(batch);
        }
        t.from_services = snap.services.clone();
        tracing::debug!(
            generation = snap.generation,
            services = changed.len(),
            names = t.nodes.len(),
            took_ms = t0.elapsed().as_secs_f64() * 1e3,
            "dns table updated"
        );
        t
    }

    fn blank(opts: &TableOptions) -> Table {
        let zone = fqdn(&opts.zone)
            .unwrap_or_else(|| Name::from_ascii("cluster.local.").expect("literal"));
        let pod_zone = zone.prepend_label("pod").expect("short label");
        let fast = FastTable::new(&zone, opts.pod_records.then_some(&pod_zone));
        Table {
            generation: 0,
            zone: LowerName::new(&zone),
            pod_zone: LowerName::new(&pod_zone),
            soa: Record::from_rdata(zone.clone(), 0, RData::NS(NS(zone.clone()))),
            zone_name: zone,
            nodes: SharedMap::new(),
            ttl: opts.ttl,
            pod_records: opts.pod_records,
            fast,
            from_services: ServiceMap::new(),
            from_namespaces: Arc::default(),
            ptrs: PtrIndex::default(),
            synthesized: SharedMap::new(),
            deferred: None,
        }
    }

    /// Puts compiled nodes in the table with their fast answers.
    fn put(&mut self, nodes: HashMap<LowerName, Node>) {
        for (name, mut node) in nodes {
            node.shrink();
            let node = Arc::new(node);
            self.put_fast(name.clone(), node.clone());
            self.nodes.insert(name, node);
        }
    }

    /// Compiles (or defers) the fast answers of a node that is not stored.
    fn put_fast(&mut self, name: LowerName, node: Arc<Node>) {
        match &mut self.deferred {
            Some(batch) => {
                batch.push((name, node));
                if batch.len() >= DEFERRED_BATCH {
                    self.fast.put_all(std::mem::take(batch));
                }
            }
            None => self.fast.put(&name, &node),
        }
    }

    fn take(&mut self, name: &LowerName) {
        self.nodes.remove(name);
        self.fast.remove(name);
    }

    fn builder(&self, floor: Name) -> TableBuilder {
        TableBuilder {
            floor,
            ttl: self.ttl,
            nodes: HashMap::new(),
            ptrs: Vec::new(),
        }
    }

    /// The apex (SOA, NS, the schema version, `svc` and `pod`): its SOA
    /// serial is the generation, so it is rebuilt every time (four names).
    fn apex(&mut self) {
        let mut b = self.builder(self.zone_name.clone());
        let soa = b.apex(&self.zone_name, self.generation);
        b.add(
            &self.zone_name,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
            VERSION_TTL,
            "dns-version",
        );
        for label in ["svc", "pod"] {
            if let Ok(n) = self.zone_name.prepend_label(label) {
                b.ensure(&n);
            }
        }
        self.put(b.nodes);
        self.soa = soa;
        self.fast.set_negative(self.generation, &self.soa);
    }

    /// `<ns>.svc` (and `<ns>.pod`) for namespaces that came or went.
    fn namespaces(&mut self, now: &Arc<BTreeSet<String>>) {
        if Arc::ptr_eq(now, &self.from_namespaces) {
            return;
        }
        let old = std::mem::replace(&mut self.from_namespaces, now.clone());
        let mut labels = vec!["svc"];
        if self.pod_records {
            labels.push("pod");
        }
        for ns in old.difference(now) {
            for l in &labels {
                if let Some(n) = rel(&self.zone_name, &[ns.as_str(), l]) {
                    self.take(&LowerName::new(&n));
                }
            }
        }
        let mut nodes = HashMap::new();
        for ns in now.difference(&old) {
            for l in &labels {
                if let Some(n) = rel(&self.zone_name, &[ns.as_str(), l]) {
                    // Empty: it exists (NODATA, not NXDOMAIN); its parents
                    // are the apex's.
                    nodes.insert(LowerName::new(&n), Node::default());
                }
            }
        }
        self.put(nodes);
    }

    /// The records of one Service, as built for the table: its name and
    /// the builder holding its nodes and reverse-name sources. `None` for
    /// a name that is not a valid DNS name.
    fn build_service(&self, svc: &Service) -> Option<(Name, TableBuilder)> {
        let name = rel(
            &self.zone_name,
            &[svc.name.as_str(), svc.namespace.as_str(), "svc"],
        )?;
        let mut b = self.builder(name.clone());
        b.service(svc, &name);
        Some((name, b))
    }

    /// Takes out what `old` (the version the table holds) put in: its
    /// names, fast answers and reverse-name sources, found by building it
    /// again rather than remembered per Service.
    fn remove_service(
        &mut self,
        key: &NamespacedName,
        old: &Service,
        dirty_ptrs: &mut BTreeSet<IpAddr>,
    ) {
        let Some((name, b)) = self.build_service(old) else {
            return;
        };
        for n in b.nodes.keys() {
            self.take(n);
        }
        let lower = LowerName::new(&name);
        if self.synthesized.remove(&lower).is_some() {
            self.fast.set_synthesized(&lower, false);
        }
        for (ip, _) in &b.ptrs {
            if let Some(list) = self.ptrs.get(ip) {
                let before = list.as_slice().len();
                let rest: Vec<PtrSource> = list
                    .as_slice()
                    .iter()
                    .filter(|p| p.key() != (key.0.as_str(), key.1.as_str()))
                    .cloned()
                    .collect();
                match PtrSources::from_vec(rest) {
                    None => {
                        self.ptrs.remove(ip);
                    }
                    Some(rest) if rest.as_slice().len() != before => {
                        self.ptrs.insert(*ip, rest);
                    }
                    Some(_) => {}
                }
            }
            dirty_ptrs.insert(*ip);
        }
    }

    fn add_service(
        &mut self,
        key: &NamespacedName,
        svc: &Arc<Service>,
        dirty_ptrs: &mut BTreeSet<IpAddr>,
    ) {
        let Some((name, mut b)) = self.build_service(svc) else {
            tracing::warn!(service = %svc.id, "service name is not a valid DNS name; no records");
            return;
        };
        for (ip, cluster_ip) in std::mem::take(&mut b.ptrs) {
            let mut list: Vec<PtrSource> = self
                .ptrs
                .get(&ip)
                .map(|l| l.as_slice().to_vec())
                .unwrap_or_default();
            if list
                .iter()
                .any(|p| p.key() == (key.0.as_str(), key.1.as_str()) && p.cluster_ip == cluster_ip)
            {
                continue;
            }
            list.push(PtrSource {
                service: svc.clone(),
                cluster_ip,
            });
            // Merged in Service order whatever the order of updates.
            list.sort_by(|a, b| a.key().cmp(&b.key()));
            if let Some(list) = PtrSources::from_vec(list) {
                self.ptrs.insert(ip, list);
            }
            dirty_ptrs.insert(ip);
        }
        if made_when_asked(svc) {
            let lower = LowerName::new(&name);
            self.synthesized.insert(lower.clone(), svc.clone());
            self.fast.set_synthesized(&lower, true);
            for (n, mut node) in b.nodes {
                node.shrink();
                self.put_fast(n, Arc::new(node));
            }
        } else {
            self.put(b.nodes);
        }
    }

    /// The fast answer of `ip`'s reverse name, for ClusterIPs and headless
    /// endpoints (see [`PtrSource::fast`]); the slow path makes the records
    /// when asked.
    fn rebuild_ptr(&mut self, ip: IpAddr) {
        let key = LowerName::new(&Name::from(ip));
        let list = match self.ptrs.get(&ip) {
            Some(list) if list.as_slice().iter().any(PtrSource::fast) => list.clone(),
            _ => {
                self.take(&key);
                return;
            }
        };
        let node = Node {
            rrsets: vec![RrSet {
                rtype: RecordType::PTR,
                answers: ptr_records(ip, list.as_slice(), &self.zone_name, self.ttl),
                additionals: vec![],
            }],
            cname: None,
        };
        self.put_fast(key, Arc::new(node));
    }
}

/// Whether a Service's records are made when asked rather than stored.
fn made_when_asked(svc: &Service) -> bool {
    !svc.headless && svc.external_name.is_none()
}

/// The PTR records of one address: ClusterIP names first, then endpoint
/// names, each in Service order, without repeats.
fn ptr_records(ip: IpAddr, list: &[PtrSource], zone: &Name, ttl: u32) -> Vec<Record> {
    let owner = Name::from(ip);
    let mut answers: Vec<Record> = Vec::new();
    let firsts = list.iter().filter(|p| p.cluster_ip);
    for p in firsts.chain(list.iter().filter(|p| !p.cluster_ip)) {
        let svc = &p.service;
        let mut labels = vec![svc.name.as_str(), svc.namespace.as_str(), "svc"];
        let endpoint = (!p.cluster_ip)
            .then(|| svc.dns_endpoints().find(|e| e.ip == ip))
            .flatten();
        let label = endpoint.map(endpoint_label);
        if let Some(l) = &label {
            labels.insert(0, l);
        }
        let Some(target) = rel(zone, &labels) else {
            continue;
        };
        let r = Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(target)));
        if !answers.contains(&r) {
            answers.push(r);
        }
    }
    answers
}

/// The address a reverse name (`in-addr.arpa.` or `ip6.arpa.`) stands for.
fn reverse_ip(name: &LowerName) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let (suffix, digits) = match labels.as_slice() {
        [d @ .., b"in-addr", b"arpa"] if d.len() == 4 => ("v4", d),
        [d @ .., b"ip6", b"arpa"] if d.len() == 32 => ("v6", d),
        _ => return None,
    };
    let text: Vec<&str> = digits
        .iter()
        .rev()
        .map(|l| std::str::from_utf8(l).ok())
        .collect::<Option<_>>()?;
    if suffix == "v4" {
        return text.join(".").parse().ok().map(IpAddr::V4);
    }
    let mut s = String::with_capacity(39);
    for (i, nibble) in text.iter().enumerate() {
        if nibble.len() != 1 {
            return None;
        }
        if i > 0 && i % 4 == 0 {
            s.push(':');
        }
        s.push_str(nibble);
    }
    s.parse().ok().map(IpAddr::V6)
}

/// The first label of an endpoint's name: its hostname, or its dashed
/// address; lower-case.
fn endpoint_label(e: &model::Endpoint) -> String {
    match &e.hostname {
        Some(h) => h.to_ascii_lowercase(),
        None => dashed(e.ip),
    }
}

fn addr_record(owner: &Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, rdata)
}

/// `<labels...>.<zone>`, lower-cased; `None` if not a valid name.
fn rel(zone: &Name, labels: &[&str]) -> Option<Name> {
    let mut n = zone.clone();
    for l in labels.iter().rev() {
        n = n.prepend_label(l.to_ascii_lowercase().as_str()).ok()?;
    }
    Some(n)
}

/// Lower-cased FQDN from text, `None` if it is not a valid name.
fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s.trim_end_matches('.'))
        .ok()?
        .to_lowercase();
    n.set_fqdn(true);
    Some(n)
}

/// Builds the nodes of one source (the apex, namespaces, one Service).
struct TableBuilder {
    /// Names are made to exist up to here (a Service's own name); above
    /// it they belong to the namespace and the apex.
    floor: Name,
    ttl: u32,
    nodes: HashMap<LowerName, Node>,
    /// (address, is a ClusterIP) of the reverse names pointing at the
    /// Service, in the order they were met.
    ptrs: Vec<(IpAddr, bool)>,
}

impl TableBuilder {
    /// The apex: SOA and NS. Returns the SOA record for negative answers.
    fn apex(&mut self, z: &Name, generation: u64) -> Record {
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
        self.push(z, record.clone(), None);
        self.push(
            z,
            Record::from_rdata(z.clone(), self.ttl, RData::NS(NS(mname))),
            None,
        );
        record
    }

    /// Makes a name and its ancestors down to the floor exist.
    fn ensure(&mut self, name: &Name) {
        let mut n = name.clone();
        while self.floor.zone_of(&n) {
            let key = LowerName::new(&n);
            if self.nodes.contains_key(&key) {
                break;
            }
            self.nodes.insert(key, Node::default());
            if n.num_labels() == self.floor.num_labels() {
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
        addr_record(owner, ip, self.ttl)
    }

    fn service(&mut self, svc: &Service, name: &Name) {
        if let Some(ext) = &svc.external_name {
            // An externalName that is an IP is not a name: NXDOMAIN (as CoreDNS).
            if ext.trim_end_matches('.').parse::<IpAddr>().is_ok() {
                return;
            }
            if let Some(target) = fqdn(ext) {
                self.ensure(name);
                let record =
                    Record::from_rdata(name.clone(), self.ttl, RData::CNAME(CNAME(target.clone())));
                let node = self.nodes.get_mut(&LowerName::new(name)).expect("ensured");
                node.cname = Some(Box::new(Cname {
                    record,
                    target: LowerName::new(&target),
                }));
            }
            return;
        }
        // (endpoint name, address) for the endpoints DNS publishes; stored
        // for headless Services only (others are made when asked).
        let eps: Vec<(Name, IpAddr)> = svc
            .dns_endpoints()
            .filter(|_| svc.headless)
            .filter_map(|e| Some((name.prepend_label(endpoint_label(e).as_str()).ok()?, e.ip)))
            .collect();
        for (ep_name, ip) in &eps {
            let r = self.addr_record(ep_name, *ip);
            self.push(ep_name, r, None);
        }
        // Reverse names point at every published endpoint whose name is a
        // valid DNS name (a hostname may not be: the address is then not
        // ours, and forwarded).
        for e in svc.dns_endpoints() {
            if name.prepend_label(endpoint_label(e).as_str()).is_ok() {
                self.ptrs.push((e.ip, false));
            }
        }
        if svc.headless {
            if eps.is_empty() {
                return; // no ready endpoints: the name does not exist
            }
            for (_, ip) in &eps {
                let r = self.addr_record(name, *ip);
                self.push(name, r, None);
            }
        } else {
            for ip in &svc.cluster_ips {
                let r = self.addr_record(name, *ip);
                self.push(name, r, None);
                self.ptrs.push((*ip, true));
            }
            if svc.cluster_ips.is_empty() {
                self.ensure(name);
            }
        }
        self.srv(svc, name, &eps);
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
                        .find(|b| b.ip == *ip)
                        .map_or(port.port, |b| b.port);
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
}

#[cfg(test)]
mod tests;
