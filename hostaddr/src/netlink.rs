//! The few rtnetlink requests the keeper needs, over a raw NETLINK_ROUTE
//! socket: find or create the interface, bring it up, list, add and
//! delete its addresses. Requests are synchronous (the kernel answers at
//! once); callers run them off the async workers.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFA_F_NODAD: u8 = 0x02;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// Who added an address (Linux 6.1+); ours are marked with [`PROTO`].
const IFA_PROTO: u16 = 11;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// The `ifa_proto` nodeway marks its addresses with, so a later run knows
/// them even after a crash (an unassigned value: the kernel's own are 0-3).
pub const PROTO: u8 = 0x6e;

/// One address on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub ip: IpAddr,
    pub prefix: u8,
    /// `ifa_proto`, where the kernel reports it.
    pub proto: Option<u8>,
}

pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

/// The index of interface `name`, if it exists.
pub fn link_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Rtnl { fd, seq: 0 })
    }

    /// Creates a dummy interface `name` (fails where the kernel has no
    /// dummy driver).
    pub fn create_dummy(&mut self, name: &str) -> io::Result<()> {
        let mut body = ifinfomsg(0, 0, 0);
        attr(&mut body, IFLA_IFNAME, &c_string(name));
        let mut kind = Vec::new();
        attr(&mut kind, IFLA_INFO_KIND, b"dummy");
        attr(&mut body, IFLA_LINKINFO | NLA_F_NESTED, &kind);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &body)
            .map(drop)
    }

    /// Brings interface `index` up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let up = libc::IFF_UP as u32;
        let body = ifinfomsg(index, up, up);
        self.request(RTM_NEWLINK, 0, &body).map(drop)
    }

    /// The addresses of interface `index`.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<Addr>> {
        let body = ifaddrmsg(libc::AF_UNSPEC as u8, 0, 0);
        let replies = self.request(RTM_GETADDR, NLM_F_DUMP, &body)?;
        Ok(replies
            .iter()
            .filter_map(|r| parse_addr(r, index))
            .collect())
    }

    /// Adds `ip` as a host address (/32, /128) marked as ours.
    pub fn add(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let body = addr_body(index, ip, true);
        match self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &body) {
            // A kernel before 6.1 refuses IFA_PROTO: add it unmarked.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let body = addr_body(index, ip, false);
                self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &body)
                    .map(drop)
            }
            r => r.map(drop),
        }
    }

    pub fn delete(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let body = addr_body(index, ip, false);
        self.request(RTM_DELADDR, 0, &body).map(drop)
    }

    /// Sends one request and reads the answer: the payloads of a dump, or
    /// nothing once the kernel acknowledged; its error as an `io::Error`.
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: sends `msg`'s bytes to the kernel (address: the socket's
        // default peer, the kernel, for an unconnected netlink socket).
        let sent = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        self.read_answer(flags & NLM_F_DUMP == NLM_F_DUMP)
    }

    fn read_answer(&mut self, dump: bool) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: reads at most buf.len() bytes into buf.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > rest.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                let payload = &rest[16..len];
                rest = &rest[align(len).min(rest.len())..];
                if seq != self.seq {
                    continue; // an answer to an earlier request
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            payload
                                .get(0..4)
                                .ok_or_else(|| io::Error::other("short error"))?
                                .try_into()
                                .expect("4 bytes"),
                        );
                        if code == 0 && !dump {
                            return Ok(out);
                        }
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push(payload.to_vec()),
                }
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one attribute (padded to 4 bytes).
fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align(buf.len()), 0);
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

fn ifaddrmsg(family: u8, prefix: u8, index: u32) -> Vec<u8> {
    // family, prefixlen, flags, scope (global), index
    let mut b = vec![family, prefix, 0, 0];
    b.extend_from_slice(&index.to_ne_bytes());
    b
}

fn addr_body(index: u32, ip: IpAddr, mark: bool) -> Vec<u8> {
    let (family, prefix, bytes) = match ip {
        IpAddr::V4(v4) => (libc::AF_INET as u8, 32, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, 128, v6.octets().to_vec()),
    };
    let mut b = ifaddrmsg(family, prefix, index);
    if ip.is_ipv6() {
        // No duplicate address detection: a tentative address cannot be
        // used for a second or so, and a Service address is ours alone.
        b[2] = IFA_F_NODAD;
    }
    attr(&mut b, IFA_LOCAL, &bytes);
    attr(&mut b, IFA_ADDRESS, &bytes);
    if mark {
        attr(&mut b, IFA_PROTO, &[PROTO]);
    }
    b
}

/// An RTM_NEWADDR payload of interface `index`, as an [`Addr`].
fn parse_addr(p: &[u8], index: u32) -> Option<Addr> {
    let head = p.get(..8)?;
    if u32::from_ne_bytes(head[4..8].try_into().ok()?) != index {
        return None;
    }
    let (family, prefix) = (head[0], head[1]);
    let (mut local, mut address, mut proto) = (None, None, None);
    let mut rest = &p[8..];
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes(rest[0..2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest[2..4].try_into().ok()?);
        if len < 4 || len > rest.len() {
            break;
        }
        let data = &rest[4..len];
        match kind {
            IFA_LOCAL => local = ip_from(family, data),
            IFA_ADDRESS => address = ip_from(family, data),
            IFA_PROTO => proto = data.first().copied(),
            _ => {}
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    Some(Addr {
        ip: local.or(address)?,
        prefix,
        proto,
    })
}

fn ip_from(family: u8, data: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), data.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
        (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
        _ => None,
    }
}
