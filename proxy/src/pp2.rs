//! PROXY protocol v2 header (haproxy's proxy-protocol.txt, section 2.2):
//! tells a backend the real client address, which a userspace proxy
//! otherwise hides behind its own.

use std::net::{IpAddr, SocketAddr};

const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a TCP connection from `client` to `service` (the address
/// the client connected to). Mixed families are sent as IPv6, mapping the
/// IPv4 side.
pub(crate) fn header(client: SocketAddr, service: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + 36);
    h.extend_from_slice(&SIGNATURE);
    h.push(0x21); // version 2, command PROXY
    match (client.ip(), service.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&service.port().to_be_bytes());
    h
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_layout() {
        let h = header(
            "10.1.2.3:4567".parse().unwrap(),
            "127.0.10.1:80".parse().unwrap(),
        );
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 12);
        assert_eq!(&h[16..20], &[10, 1, 2, 3]);
        assert_eq!(&h[20..24], &[127, 0, 10, 1]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 4567);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 80);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn mixed_families_use_ipv6() {
        let h = header(
            "[::1]:1000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        assert_eq!(h[13], 0x21);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 36);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(
            &h[32..48],
            &"::ffff:127.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }
}
