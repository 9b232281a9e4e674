//! The UDP fast path: every authoritative answer of a table, precompiled to
//! wire bytes, so that a plain query is answered by a hash lookup and a
//! copy instead of hickory's decode / spawn / encode.
//!
//! Wire format decisions (all so that the bytes equal what the hickory path
//! sends for the same query, which the tests check byte for byte):
//! - The precompiled bytes are produced by hickory's own encoder with the
//!   same records the handler would pass it, for a lower-case question.
//!   hickory 0.26 never compresses names into the question (it stores the
//!   whole question, type and class included, as one compression
//!   candidate, which no name can match), so what follows the question
//!   does not depend on it, only on its length, which spelling keeps.
//! - The first answer's owner is written out in full in the client's
//!   spelling (the handler answers "as asked"); later names may compress to
//!   suffixes of it. We store the bytes *after* that owner and copy the
//!   owner from the request. hickory compresses case-sensitively, so a
//!   client's upper case can change later pointers: at compile time we
//!   find how far into the owner upper case leaves the bytes unchanged
//!   (`case_from`); a query with upper case beyond it takes the slow path.
//! - Negative answers (NODATA, NXDOMAIN) carry only the zone SOA in
//!   Authority, whose encoding depends on nothing in the query.
//! - Answers that would not fit the client's limit (512 without EDNS, else
//!   its payload size capped at 4096) go to the slow path, which truncates.

use crate::table::{Node, RrSet};
use crate::wire::{self, HEADER_LEN, MAX_NAME, Query};
use hickory_proto::op::{MessageType, Metadata, OpCode};
use hickory_proto::rr::{LowerName, Name, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use model::SharedMap;
use std::sync::Arc;

/// The largest UDP answer we send even if a client offers more (as the
/// hickory path).
pub const MAX_UDP_PAYLOAD: u16 = 4096;
const RCODE_NXDOMAIN: u8 = 3;
const TYPE_OPT: u16 = 41;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const TYPE_ANY: u16 = 255;

/// One precompiled positive answer.
#[derive(Debug)]
struct Reply {
    /// Everything after the first answer's owner name.
    body: Box<[u8]>,
    /// Answer, authority, additional counts.
    counts: [u16; 3],
    /// Upper case in the query name before this offset leaves `body` valid.
    case_from: usize,
}

#[derive(Debug)]
struct FastSet {
    rtype: u16,
    /// `None`: this RRset is answered by the slow path.
    reply: Option<Reply>,
}

#[derive(Debug)]
enum FastName {
    /// An ExternalName (CNAME chase): the slow path.
    Slow,
    Sets(Box<[FastSet]>),
}

/// Precompiled answers of one table, keyed by lower-case wire name. Kept
/// up to date name by name as the table changes ([`FastTable::put`]).
#[derive(Clone, Debug, Default)]
pub struct FastTable {
    enabled: bool,
    names: SharedMap<Box<[u8]>, Arc<FastName>>,
    /// The SOA record as it follows the question in negative answers, by
    /// length of the query name: its compression pointers are absolute
    /// offsets, so they move with the question.
    negative: Arc<[Option<Box<[u8]>>]>,
    zone: Box<[u8]>,
    /// Set when pod records are on: names below it may be synthesized.
    pod_zone: Option<Box<[u8]>>,
    /// Names whose children (endpoint names) the slow path makes when
    /// asked: a miss below one of them is not NXDOMAIN here.
    synthesized: SharedMap<Box<[u8]>, ()>,
}

/// What the fast path answered (for metrics).
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub qtype: u16,
    pub nxdomain: bool,
}

fn wire_name(name: &Name) -> Option<Vec<u8>> {
    let mut n = name.clone();
    n.set_fqdn(true);
    n.to_bytes().ok()
}

/// The response hickory's encoder produces (as the handler builds it) for
/// the question `name`/`qtype` IN, minus header and question.
fn encode(
    name: &[u8],
    qtype: u16,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> Option<(Vec<u8>, [u16; 3])> {
    let mut question = name.to_vec();
    question.extend_from_slice(&qtype.to_be_bytes());
    question.extend_from_slice(&[0, 1]);
    let queries = Queries::read(&mut BinDecoder::new(&question), 1).ok()?;
    let mut md = Metadata::new(0, MessageType::Response, OpCode::Query);
    md.authoritative = true;
    let response = MessageResponseBuilder::new(&queries, None).build(
        md,
        answers.iter(),
        authorities.iter(),
        std::iter::empty(),
        additionals.iter(),
    );
    let mut bytes = Vec::new();
    let header = response
        .destructive_emit(&mut BinEncoder::new(&mut bytes))
        .ok()?;
    if header.truncation {
        return None;
    }
    let c = header.counts();
    let tail = bytes.get(HEADER_LEN + question.len()..)?.to_vec();
    Some((tail, [c.answers, c.authorities, c.additionals]))
}

/// `name` (lower-case wire) with the letters of its first `labels` labels
/// upper-cased; returns it and the offset where the next label starts.
fn upper_prefix(name: &[u8], labels: usize) -> (Vec<u8>, usize) {
    let mut v = name.to_vec();
    let mut i = 0;
    for _ in 0..labels {
        let len = usize::from(v[i]);
        if len == 0 {
            break;
        }
        v[i + 1..i + 1 + len].make_ascii_uppercase();
        i += 1 + len;
    }
    (v, i)
}

/// The positive answer for `set`, as the handler sends it for a query
/// spelled like `spelling` (wire form).
fn encode_set(spelling: &[u8], qtype: u16, set: &RrSet) -> Option<(Vec<u8>, [u16; 3])> {
    let asked = Name::read(&mut BinDecoder::new(spelling)).ok()?;
    let answers: Vec<Record> = set
        .answers
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.name = asked.clone();
            r
        })
        .collect();
    encode(spelling, qtype, &answers, &[], &set.additionals)
}

/// A name of `len` wire bytes (`x` labels), if one exists (2 does not).
/// Negative answers do not depend on the question's bytes, only on its
/// length (hickory never compresses into the question).
fn filler_name(len: usize) -> Option<Vec<u8>> {
    if len == 0 || len == 2 || len > MAX_NAME {
        return None;
    }
    let mut name = Vec::with_capacity(len);
    let mut left = len - 1; // the root's zero
    while left > 0 {
        // Never leave a remainder of 1 (a label needs 2 bytes at least).
        let mut take = left.min(64);
        if left - take == 1 {
            take -= 1;
        }
        name.push((take - 1) as u8);
        name.extend(std::iter::repeat_n(b'x', take - 1));
        left -= take;
    }
    name.push(0);
    Some(name)
}

/// Whether `body` may hold a compression pointer to `from..to`.
fn points_into(body: &[u8], from: usize, to: usize) -> bool {
    body.windows(2).any(|w| {
        let p = usize::from(u16::from_be_bytes([w[0], w[1]]) & 0x3FFF);
        w[0] & 0xC0 == 0xC0 && (from..to).contains(&p)
    })
}

fn label_count(name: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while let Some(&len) = name.get(i)
        && len > 0
    {
        i += 1 + usize::from(len);
        n += 1;
    }
    n
}

fn compile_set(name: &[u8], set: &RrSet) -> Option<Reply> {
    let qtype = u16::from(set.rtype);
    // The table's owners are the lower-case name itself: as the handler
    // answers a lower-case query, with no renaming.
    let (base, counts) = encode(name, qtype, &set.answers, &[], &set.additionals)?;
    // The first owner must be the query name written out in full.
    let body = base.strip_prefix(name)?;
    let labels = label_count(name);
    let same = |n: usize| {
        let (spelled, end) = upper_prefix(name, n);
        let ok = encode_set(&spelled, qtype, set)
            .is_some_and(|(t, _)| t.strip_prefix(spelled.as_slice()) == Some(body));
        (ok, end)
    };
    // Without a pointer into the owner, its spelling cannot matter (a
    // pointer-like byte pair inside rdata only costs the checks below).
    let owner_at = HEADER_LEN + name.len() + 4;
    let mut case_from = name.len();
    if points_into(body, owner_at, owner_at + name.len()) && !same(labels).0 {
        // Upper case up to label n either keeps the bytes or not, and more
        // upper case never restores a match: bisect for the last n that does.
        let (mut ok, mut bad) = (0, labels);
        case_from = 0;
        while bad - ok > 1 {
            let mid = (ok + bad) / 2;
            match same(mid) {
                (true, end) => (ok, case_from) = (mid, end),
                _ => bad = mid,
            }
        }
    }
    Some(Reply {
        body: body.into(),
        counts,
        case_from,
    })
}

impl FastTable {
    /// No answers yet, and off until [`FastTable::set_negative`] is given a
    /// generation above 0 (nothing loaded: the slow path answers SERVFAIL).
    pub(crate) fn new(zone: &Name, pod_zone: Option<&Name>) -> FastTable {
        FastTable {
            zone: wire_name(zone).unwrap_or_default().into(),
            pod_zone: pod_zone.and_then(wire_name).map(Into::into),
            ..FastTable::default()
        }
    }

    /// The negative answers for this generation's SOA (its serial is the
    /// generation), which also switches the fast path on.
    pub(crate) fn set_negative(&mut self, generation: u64, soa: &Record) {
        self.enabled = generation > 0 && !self.zone.is_empty();
        if !self.enabled {
            return;
        }
        self.negative = (0..=MAX_NAME)
            .map(|len| {
                let name = filler_name(len)?;
                let (tail, _) = encode(&name, 1, &[], std::slice::from_ref(soa), &[])?;
                Some(tail.into_boxed_slice())
            })
            .collect();
    }

    /// Compiles the answers of one name (replacing what it had).
    pub(crate) fn put(&mut self, name: &LowerName, node: &Node) {
        if let Some(compiled) = compile_name(name, node) {
            self.names.insert(compiled.key, compiled.fast);
        }
    }

    /// [`FastTable::put`] for many names (each once), compiled on every core.
    pub(crate) fn put_all(&mut self, batch: Vec<(LowerName, Arc<Node>)>) {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let chunk = batch.len().div_ceil(threads).max(1);
        let compiled: Vec<Vec<Option<CompiledName>>> = std::thread::scope(|s| {
            let workers: Vec<_> = batch
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || part.iter().map(|(n, node)| compile_name(n, node)).collect())
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a fast-answer compile panicked"))
                .collect()
        });
        for name in compiled.into_iter().flatten().flatten() {
            self.names.insert(name.key, name.fast);
        }
    }

    /// Every name with its precompiled answers, and the names whose
    /// children are synthesized (for [`crate::table::Table::describe`]).
    pub(crate) fn describe(&self) -> Vec<String> {
        let text =
            |k: &[u8]| Name::from_bytes(k).map_or_else(|_| format!("{k:?}"), |n| n.to_string());
        let answers = self
            .names
            .iter()
            .map(|(k, v)| format!("fast {} {v:?}", text(k)));
        let synthesized = self
            .synthesized
            .keys()
            .map(|k| format!("fast children of {} made when asked", text(k)));
        answers.chain(synthesized).collect()
    }

    /// The names whose answers differ from `old`'s (added, changed or
    /// removed), for tests of what an update rebuilds.
    #[cfg(test)]
    pub(crate) fn changed_since(&self, old: &FastTable) -> Vec<String> {
        use model::shared_map::Diff;
        self.names
            .diff(&old.names, Arc::ptr_eq)
            .into_iter()
            .map(|d| match d {
                Diff::Added(k, _) | Diff::Changed(k, _, _) | Diff::Removed(k, _) => {
                    Name::from_bytes(k).map_or_else(|_| format!("{k:?}"), |n| n.to_string())
                }
            })
            .collect()
    }

    /// How many names have precompiled answers.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn negative_answers(&self) -> (bool, &[Option<Box<[u8]>>]) {
        (self.enabled, &self.negative)
    }

    /// Marks (or unmarks) `name` as one whose children are synthesized.
    pub(crate) fn set_synthesized(&mut self, name: &LowerName, on: bool) {
        let Some(key) = wire_name(&Name::from(name)) else {
            return;
        };
        if on {
            self.synthesized.insert(key.into_boxed_slice(), ());
        } else {
            self.synthesized.remove(&key[..]);
        }
    }

    pub(crate) fn remove(&mut self, name: &LowerName) {
        if let Some(key) = wire_name(&Name::from(name)) {
            self.names.remove(&key[..]);
        }
    }

    /// Answers `pkt` into `out` if the fast path can, exactly as the slow
    /// path would; `None` leaves it to the slow path.
    pub fn answer(
        &self,
        pkt: &[u8],
        recursion_available: bool,
        out: &mut Vec<u8>,
    ) -> Option<Answered> {
        if !self.enabled {
            return None;
        }
        let mut lower = [0u8; MAX_NAME];
        let q = wire::parse(pkt, &mut lower)?;
        if matches!(q.qtype, TYPE_OPT | TYPE_IXFR | TYPE_AXFR) {
            return None;
        }
        let (rcode, owner, body, counts) = self.find(&q)?;
        let qlen = q.question_len();
        let owner_len = if owner { q.name.len() } else { 0 };
        let opt_len = if q.edns.is_some() { 11 } else { 0 };
        let limit = q.edns.map_or(512, |s| s.clamp(512, MAX_UDP_PAYLOAD));
        if HEADER_LEN + qlen + owner_len + body.len() + opt_len > usize::from(limit) {
            return None; // the slow path sets TC and cuts as hickory does
        }
        out.clear();
        out.extend_from_slice(&pkt[..2]); // ID
        // QR, OPCODE 0, AA, TC 0, RD echoed | RA, Z 0, AD 0, CD echoed, RCODE.
        out.push(0x84 | (pkt[2] & 0x01));
        out.push(if recursion_available { 0x80 } else { 0 } | (pkt[3] & 0x10) | rcode);
        let additional = counts[2] + u16::from(q.edns.is_some());
        for c in [1, counts[0], counts[1], additional] {
            out.extend_from_slice(&c.to_be_bytes());
        }
        // The question as sent, then the owner in the client's spelling.
        out.extend_from_slice(&pkt[HEADER_LEN..HEADER_LEN + qlen]);
        out.extend_from_slice(&pkt[HEADER_LEN..HEADER_LEN + owner_len]);
        out.extend_from_slice(body);
        if let Some(size) = q.edns {
            // Our OPT: root owner, payload size, rcode/version/flags 0, no options.
            let size = size.clamp(512, MAX_UDP_PAYLOAD).to_be_bytes();
            out.extend_from_slice(&[0, 0, 41, size[0], size[1], 0, 0, 0, 0, 0, 0]);
        }
        Some(Answered {
            qtype: q.qtype,
            nxdomain: rcode == RCODE_NXDOMAIN,
        })
    }

    /// (rcode, whether an owner name precedes the body, body, counts).
    fn find(&self, q: &Query<'_>) -> Option<(u8, bool, &[u8], [u16; 3])> {
        let negative = |rcode| {
            let soa = self.negative.get(q.name.len())?.as_deref()?;
            Some((rcode, false, soa, [0, 1, 0]))
        };
        match self.names.get(q.name).map(|n| &**n) {
            Some(FastName::Slow) => None,
            Some(FastName::Sets(sets)) => {
                let set = if q.qtype == TYPE_ANY {
                    sets.first()
                } else {
                    sets.iter().find(|s| s.rtype == q.qtype)
                };
                let Some(set) = set else {
                    return negative(0); // NODATA
                };
                let r = set.reply.as_ref()?;
                if q.last_upper.is_some_and(|u| u >= r.case_from) {
                    return None;
                }
                Some((0, true, &r.body[..], r.counts))
            }
            None => {
                if self.pod_zone.as_deref().is_some_and(|p| q.is_within(p)) {
                    return None; // pod records are synthesized by the slow path
                }
                if !q.is_within(&self.zone) {
                    return None; // forwarded (or refused): the slow path
                }
                let first = usize::from(*q.name.first()?);
                let parent = q.name.get(1 + first..)?;
                if self.synthesized.get(parent).is_some() {
                    return None; // an endpoint name the slow path makes
                }
                negative(RCODE_NXDOMAIN)
            }
        }
    }
}

/// One name's fast answers, ready to go into the table.
struct CompiledName {
    /// The name's lower-case wire form: the table's key.
    key: Box<[u8]>,
    fast: Arc<FastName>,
}

/// The fast answers of one name, keyed by its lower-case wire form.
fn compile_name(name: &LowerName, node: &Node) -> Option<CompiledName> {
    let key = wire_name(&Name::from(name))?;
    let fast = if node.cname.is_some() {
        FastName::Slow
    } else {
        FastName::Sets(
            node.rrsets
                .iter()
                .map(|set| FastSet {
                    rtype: u16::from(set.rtype),
                    reply: compile_set(&key, set),
                })
                .collect(),
        )
    };
    Some(CompiledName {
        key: key.into_boxed_slice(),
        fast: Arc::new(fast),
    })
}

#[cfg(test)]
mod tests;
