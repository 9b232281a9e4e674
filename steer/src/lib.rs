//! Socket steering: a BPF `sk_lookup` program attached to this process's
//! network namespace hands every new connection for a registered
//! destination (address, port, protocol) to one of a few sockets of ours,
//! before the kernel's own socket lookup runs. So ten thousand Service
//! addresses take one listening socket per address family, not one file
//! descriptor each; the accepted socket's local address still names the
//! destination the client dialled.
//!
//! This is what kube-proxy's DNAT rules do at the same point for each
//! ClusterIP:port: the destination wins over any socket bound there. It
//! needs CAP_BPF and CAP_NET_ADMIN and Linux 5.9 or later; [`Steering::attach`]
//! fails otherwise and the caller binds one socket per address instead.
//!
//! The program is detached by the kernel when the last descriptor of its
//! link closes, so a crashed process leaves no steering behind.
//!
//! Only established flows are untouched by a change: TCP connections are
//! found by the kernel before `sk_lookup` runs, so removing a destination
//! refuses new connections and keeps the open ones.

mod program;
mod sys;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Most destinations one [`Steering`] holds (a hash map entry each,
/// allocated as they are added: 40 bytes of key and value plus the
/// kernel's overhead).
pub const MAX_DESTINATIONS: u32 = 1 << 18;

/// Most sockets destinations can be steered to.
pub const MAX_SOCKETS: u32 = 8;

/// Transport protocol of a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// An attached steering program and its two maps: destination -> socket
/// slot, and slot -> socket.
pub struct Steering {
    destinations: OwnedFd,
    sockets: OwnedFd,
    /// Keeps the program attached; closing it detaches.
    _link: OwnedFd,
}

/// The hash map key, laid out exactly as the program builds it on its stack.
#[repr(C)]
#[derive(Clone, Copy)]
struct Destination {
    family: u32,
    /// Network byte order; an IPv4 address fills the first four bytes.
    addr: [u8; 16],
    /// `port | protocol << 16`, both in host byte order.
    port_proto: u32,
}

impl Destination {
    fn new(dest: SocketAddr, proto: Proto) -> Destination {
        let mut addr = [0u8; 16];
        let family = match dest.ip() {
            IpAddr::V4(ip) => {
                addr[..4].copy_from_slice(&ip.octets());
                libc::AF_INET
            }
            IpAddr::V6(ip) => {
                addr = ip.octets();
                libc::AF_INET6
            }
        };
        let proto = match proto {
            Proto::Tcp => libc::IPPROTO_TCP,
            Proto::Udp => libc::IPPROTO_UDP,
        };
        Destination {
            family: family as u32,
            addr,
            port_proto: u32::from(dest.port()) | (proto as u32) << 16,
        }
    }
}

impl Steering {
    /// Loads the program and attaches it to this process's network
    /// namespace. Fails without the privileges or kernel support.
    pub fn attach() -> io::Result<Steering> {
        let destinations = sys::map_create(
            sys::MapType::Hash,
            size_of::<Destination>() as u32,
            size_of::<u32>() as u32,
            MAX_DESTINATIONS,
        )?;
        let sockets = sys::map_create(
            sys::MapType::SockMap,
            size_of::<u32>() as u32,
            size_of::<u64>() as u32,
            MAX_SOCKETS,
        )?;
        let insns = program::sk_lookup(destinations.as_raw_fd(), sockets.as_raw_fd());
        let prog = sys::prog_load_sk_lookup(&insns)?;
        let netns = std::fs::File::open("/proc/self/ns/net")?;
        let link = sys::link_create_sk_lookup(prog.as_fd(), netns.as_fd())?;
        Ok(Steering {
            destinations,
            sockets,
            _link: link,
        })
    }

    /// Puts a socket in `slot` (replacing what was there). A TCP socket
    /// must be listening; a UDP socket must be bound.
    pub fn set_socket(&self, slot: u32, socket: BorrowedFd<'_>) -> io::Result<()> {
        let fd = socket.as_raw_fd() as u64;
        sys::map_update(&self.sockets, &slot, &fd)
    }

    /// New connections (or datagrams) for `dest` go to the socket in `slot`.
    pub fn steer(&self, dest: SocketAddr, proto: Proto, slot: u32) -> io::Result<()> {
        sys::map_update(&self.destinations, &Destination::new(dest, proto), &slot)
    }

    /// `dest` goes back to the kernel's own lookup. Not steered: no error.
    pub fn unsteer(&self, dest: SocketAddr, proto: Proto) -> io::Result<()> {
        match sys::map_delete(&self.destinations, &Destination::new(dest, proto)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests;
