//! UDP serving: our own receive loops on the `--dns-listen` socket. A plain
//! query with a precompiled answer is answered in the loop (no task, no
//! allocation); everything else is handed, in-process, to the same
//! hickory `RequestHandler` that serves TCP, in a task of its own so a slow
//! forward never stalls the loop. TCP stays on hickory's `Server`.

use crate::handler::Handler;
use dgram::{BATCH, RecvBatch, SendBatch};
use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// Slow-path datagrams in flight at once; beyond it datagrams are dropped
/// (the client retries), so a flood cannot grow memory without bound.
const MAX_SLOW: usize = 4096;
/// Receive buffer per datagram: larger requests are not queries we answer.
const RECV_BUF: usize = 4096;

pub(crate) struct UdpServer {
    loops: Vec<JoinHandle<()>>,
    slow: Arc<Semaphore>,
}

impl UdpServer {
    /// Starts `loops` receive loops sharing `socket`.
    pub(crate) fn start(socket: UdpSocket, handler: Handler, loops: usize) -> UdpServer {
        let socket = Arc::new(socket);
        let handler = Arc::new(handler);
        let slow = Arc::new(Semaphore::new(MAX_SLOW));
        let loops = (0..loops.max(1))
            .map(|_| tokio::spawn(serve(socket.clone(), handler.clone(), slow.clone())))
            .collect();
        UdpServer { loops, slow }
    }

    /// Stops receiving; waits up to `until` for slow-path answers in flight.
    pub(crate) async fn shutdown(self, until: Instant) {
        for l in &self.loops {
            l.abort();
        }
        let all = self.slow.acquire_many(MAX_SLOW as u32);
        let left = until.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, all).await.is_err() {
            tracing::warn!("dns: UDP answers still in flight at the end of the grace period");
        }
    }
}

async fn serve(socket: Arc<UdpSocket>, handler: Arc<Handler>, slow: Arc<Semaphore>) {
    let fd = socket.as_raw_fd();
    let mut rx = RecvBatch::new(BATCH, RECV_BUF);
    let mut tx = SendBatch::new();
    let mut answered = [(0u16, false); BATCH];
    loop {
        let n = match socket.async_io(Interest::READABLE, || rx.recv(fd)).await {
            Ok(n) => n,
            Err(e) => {
                // Not WouldBlock (async_io waits those out): back off a
                // little so a persistent error cannot spin the worker.
                tracing::debug!(error = %e, "dns: UDP receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
        };
        let start = Instant::now();
        tx.clear();
        {
            // The guard is dropped before any await.
            let table = handler.tables.load();
            for i in 0..n {
                let (pkt, Some(src)) = rx.get(i) else {
                    continue;
                };
                let ra = handler.may_recurse(src.ip());
                match table.fast().answer(pkt, ra, tx.next_buf()) {
                    Some(a) => {
                        answered[tx.len()] = (a.qtype, a.nxdomain);
                        tx.commit(src);
                    }
                    None => match slow.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (h, s) = (handler.clone(), socket.clone());
                            tokio::spawn(slow_path(h, s, pkt.to_vec(), src, permit));
                        }
                        Err(_) => {
                            tracing::debug!(client.addr = %src, "dns: too many UDP queries in flight; dropped");
                        }
                    },
                }
            }
        }
        let mut sent = 0;
        while sent < tx.len() {
            match socket
                .async_io(Interest::WRITABLE, || tx.send(fd, sent))
                .await
            {
                Ok(m) => sent += m.max(1),
                Err(e) => {
                    // Only the first message of the call failed: skip it.
                    tracing::debug!(error = %e, "dns answer not sent");
                    sent += 1;
                }
            }
        }
        // Each fast answer's latency: from its batch's arrival to the send.
        let took = start.elapsed();
        for &(qtype, nxdomain) in &answered[..tx.len()] {
            let rcode = if nxdomain {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            };
            handler.metrics.query(RecordType::from(qtype), rcode, took);
        }
    }
}

/// What hickory's server does with a UDP datagram, minus its request log.
async fn slow_path(
    handler: Arc<Handler>,
    socket: Arc<UdpSocket>,
    pkt: Vec<u8>,
    src: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let Ok(header) = Header::read(&mut BinDecoder::new(&pkt)) else {
        return; // shorter than a header: not a DNS query, no answer
    };
    let responder = UdpResponder { socket, dst: src };
    match Request::from_bytes(pkt, src, Protocol::Udp) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return; // never answer responses (reflection)
            }
            handler
                .handle_request::<_, TokioTime>(&request, responder)
                .await;
        }
        Err(e) => {
            tracing::debug!(error = %e, client.addr = %src, "dns: malformed query");
            let Ok(none) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let response = MessageResponseBuilder::new(&none, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let mut r = responder;
            if let Err(e) = r.send_response(response).await {
                tracing::debug!(error = %e, "dns: FORMERR not sent");
            }
        }
    }
}

/// Encodes a response as hickory's own UDP response handle does: cut to
/// the EDNS size we echo, or 512 without EDNS, setting TC; SERVFAIL if
/// it cannot be encoded.
pub(crate) fn encode_udp<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let max = response.edns().map_or(512, |e| e.max_payload());
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    let info = match response.destructive_emit(&mut encoder) {
        Ok(info) => info,
        Err(e) => {
            tracing::error!(error = %e, "dns: error encoding an answer; SERVFAIL");
            bytes.clear();
            let mut md = Metadata::new(id, MessageType::Response, OpCode::Query);
            md.response_code = ResponseCode::ServFail;
            let header = Header {
                metadata: md,
                counts: HeaderCounts::default(),
            };
            header.emit(&mut BinEncoder::new(&mut bytes))?;
            ResponseInfo::from(header)
        }
    };
    Ok((info, bytes))
}

/// Sends a hickory response over our UDP socket, encoded as hickory's own
/// UDP response handle does: cut to the client's EDNS size, or 512.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode_udp(response)?;
        self.socket.send_to(&bytes, self.dst).await?;
        Ok(info)
    }
}
