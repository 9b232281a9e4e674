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
//! Established flows are untouched by a change: TCP connections are found
//! by the kernel before `sk_lookup` runs, so removing a destination refuses
//! new connections and keeps the open ones. Destinations are TCP only: the
//! program returns at once for other protocols, so UDP traffic on the host
//! (DNS servers take a lookup per datagram) pays one comparison.

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

/// An attached steering program and its two maps: destination -> socket
/// slot, and slot -> socket.
pub struct Steering {
    destinations: sys::Map,
    sockets: sys::Map,
    /// Keeps the program attached; closing it detaches.
    _link: OwnedFd,
}

/// The hash map key of a TCP destination, laid out exactly as the program
/// builds it on its stack: family (u32), address (16 bytes, network order,
/// an IPv4 address in the first four), `port | protocol << 16` (u32); the
/// integers in host byte order, as the program stores them.
fn destination(dest: SocketAddr) -> [u8; 24] {
    let mut key = [0u8; 24];
    let family = match dest.ip() {
        IpAddr::V4(ip) => {
            key[4..8].copy_from_slice(&ip.octets());
            libc::AF_INET
        }
        IpAddr::V6(ip) => {
            key[4..20].copy_from_slice(&ip.octets());
            libc::AF_INET6
        }
    };
    key[..4].copy_from_slice(&(family as u32).to_ne_bytes());
    let port_proto = u32::from(dest.port()) | (libc::IPPROTO_TCP as u32) << 16;
    key[20..].copy_from_slice(&port_proto.to_ne_bytes());
    key
}

impl Steering {
    /// Loads the program and attaches it to this process's network
    /// namespace. Fails without the privileges or kernel support.
    pub fn attach() -> io::Result<Steering> {
        sys::raise_memlock();
        let destinations = sys::map_create(
            sys::MapType::Hash,
            24,
            size_of::<u32>() as u32,
            MAX_DESTINATIONS,
        )?;
        let sockets = sys::map_create(
            sys::MapType::SockMap,
            size_of::<u32>() as u32,
            size_of::<u64>() as u32,
            MAX_SOCKETS,
        )?;
        let insns = program::sk_lookup(destinations.raw_fd(), sockets.raw_fd());
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
        self.sockets.update(&slot.to_ne_bytes(), &fd.to_ne_bytes())
    }

    /// New TCP connections for `dest` go to the socket in `slot`.
    pub fn steer(&self, dest: SocketAddr, slot: u32) -> io::Result<()> {
        self.destinations
            .update(&destination(dest), &slot.to_ne_bytes())
    }

    /// `dest` goes back to the kernel's own lookup. Not steered: no error.
    pub fn unsteer(&self, dest: SocketAddr) -> io::Result<()> {
        match self.destinations.delete(&destination(dest)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests;
