//! The request handler: one table lookup per query for the cluster zone,
//! the forwarder for everything else.

use crate::fast::MAX_UDP_PAYLOAD;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::table::{Lookup, Table};
use control::View;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct Handler {
    pub tables: View<Table>,
    pub forwarder: Arc<Forwarder>,
    /// Client networks allowed to recurse (use the forwarder).
    pub allow_recursion: Arc<[IpNet]>,
    pub metrics: Metrics,
}

/// What to send back, before it is encoded.
struct Reply<'a> {
    rcode: ResponseCode,
    authoritative: bool,
    truncated: bool,
    answers: Cow<'a, [Record]>,
    /// Records after `answers` (an ExternalName target's chased records).
    chased: Vec<Record>,
    authorities: Cow<'a, [Record]>,
    additionals: Cow<'a, [Record]>,
}

impl<'a> Reply<'a> {
    fn code(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            authoritative: false,
            truncated: false,
            answers: Cow::Borrowed(&[]),
            chased: Vec::new(),
            authorities: Cow::Borrowed(&[]),
            additionals: Cow::Borrowed(&[]),
        }
    }

    fn negative(rcode: ResponseCode, table: &'a Table) -> Self {
        Reply {
            authoritative: true,
            authorities: Cow::Borrowed(std::slice::from_ref(table.soa())),
            ..Reply::code(rcode)
        }
    }

    fn answer(answers: Cow<'a, [Record]>, additionals: &'a [Record]) -> Self {
        Reply {
            authoritative: true,
            answers,
            additionals: Cow::Borrowed(additionals),
            ..Reply::code(ResponseCode::NoError)
        }
    }
}

/// Records with the owner spelled as the client asked (names compare
/// case-insensitively, but answers echo the query's case). Borrowed when
/// the spelling already matches, which is the common case.
fn as_asked<'a>(records: &'a [Record], asked: &Name) -> Cow<'a, [Record]> {
    if records.iter().all(|r| r.name.eq_case(asked)) {
        return Cow::Borrowed(records);
    }
    Cow::Owned(
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.name = asked.clone();
                r
            })
            .collect(),
    )
}

impl Handler {
    pub(crate) fn may_recurse(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow_recursion.iter().any(|n| n.contains(&ip))
    }

    async fn reply<'a>(&self, table: &'a Table, request: &Request, may_recurse: bool) -> Reply<'a> {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let q = info.query;
        if q.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let (name, qtype, asked) = (q.name(), q.query_type(), q.original().name());
        let lookup = table.lookup(name, qtype);
        if table.generation == 0 && !matches!(lookup, Lookup::NotOurs) {
            // Nothing loaded yet: we do not know, and must not say NXDOMAIN.
            return Reply::code(ResponseCode::ServFail);
        }
        match lookup {
            Lookup::Answer(set) => Reply::answer(as_asked(&set.answers, asked), &set.additionals),
            Lookup::Synthesized(set) => Reply {
                additionals: Cow::Owned(set.additionals),
                ..Reply::answer(Cow::Owned(as_asked(&set.answers, asked).into_owned()), &[])
            },
            Lookup::NoData => Reply::negative(ResponseCode::NoError, table),
            Lookup::NxDomain => Reply::negative(ResponseCode::NXDomain, table),
            Lookup::Cname(c) => {
                let mut reply =
                    Reply::answer(as_asked(std::slice::from_ref(&c.record), asked), &[]);
                if !matches!(qtype, RecordType::A | RecordType::AAAA) {
                    return reply;
                }
                if table.in_zone(&c.target) {
                    match table.lookup(&c.target, qtype) {
                        Lookup::Answer(set) => reply.chased = set.answers.clone(),
                        Lookup::Synthesized(set) => reply.chased = set.answers,
                        _ => {}
                    }
                } else {
                    // Chased for the zone's own answer, so any client may
                    // trigger it: the target is fixed by the manifest.
                    let target = hickory_proto::op::Query::query(Name::from(&c.target), qtype);
                    if let Ok(msg) = self.forwarder.resolve(&target).await {
                        reply.truncated = msg.metadata.truncation;
                        reply.chased = msg.answers;
                    }
                }
                reply
            }
            Lookup::NotOurs if !may_recurse => Reply::code(ResponseCode::Refused),
            Lookup::NotOurs => match self.forwarder.resolve(q.original()).await {
                Ok(msg) => Reply {
                    rcode: msg.metadata.response_code,
                    truncated: msg.metadata.truncation,
                    answers: Cow::Owned(as_asked_forwarded(msg.answers, asked)),
                    authorities: Cow::Owned(msg.authorities),
                    additionals: Cow::Owned(msg.additionals),
                    ..Reply::code(ResponseCode::NoError)
                },
                Err(_) => Reply::code(ResponseCode::ServFail),
            },
        }
    }
}

/// Forwarded answers: records owned by the asked name get its spelling
/// (cached entries may have been filled by a query spelled differently).
fn as_asked_forwarded(mut records: Vec<Record>, asked: &Name) -> Vec<Record> {
    for r in &mut records {
        if r.name.eq_ignore_root(asked) && !r.name.eq_case(asked) {
            r.name = asked.clone();
        }
    }
    records
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let start = Instant::now();
        // One table per query, held by Arc (not a guard) across the awaits.
        let table = self.tables.load_full();
        let may_recurse = self.may_recurse(request.src().ip());
        let reply = self.reply(&table, request, may_recurse).await;

        let mut md = Metadata::response_from_request(&request.metadata);
        md.response_code = reply.rcode;
        md.authoritative = reply.authoritative;
        md.truncation = reply.truncated;
        md.recursion_available = may_recurse;
        // Echo EDNS with the client's size: the encoder truncates UDP
        // answers (setting TC) to it, or to 512 without EDNS.
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            ours
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            md,
            reply.answers.iter().chain(reply.chased.iter()),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(RecordType::Unknown(0), |q| q.query_type());
        let info = match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, client.addr = %request.src(), "dns answer not sent");
                let mut md = Metadata::response_from_request(&request.metadata);
                md.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: md,
                    counts: HeaderCounts::default(),
                })
            }
        };
        self.metrics
            .query(qtype, info.response_code, start.elapsed());
        info
    }
}
