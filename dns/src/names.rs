//! Name helpers: dashed-IP labels (endpoint and pod names) and their parsing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The label an endpoint without a hostname gets: `10-0-0-5`, or for IPv6 the
/// compressed text form with `:` replaced by `-` and a `0` appended after a
/// final `-` (CoreDNS does this so the label never ends with a dash, which
/// is not a valid hostname label).
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            if s.starts_with('-') {
                s.insert(0, '0');
            }
            s
        }
    }
}

/// Parses a dashed label back into an address (pod records). Accepts the
/// IPv4 form `a-b-c-d` and the IPv6 form produced by [`dashed`].
pub fn parse_dashed(label: &str) -> Option<IpAddr> {
    if label.len() > 45 || label.is_empty() {
        return None;
    }
    let dots = label.replace('-', ".");
    if let Ok(v4) = dots.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    let colons = label.replace('-', ":");
    if let Ok(v6) = colons.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_labels_round_trip() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(dashed(ip), "10-0-0-5");
        assert_eq!(parse_dashed("10-0-0-5"), Some(ip));
    }

    #[test]
    fn ipv6_labels_never_start_or_end_with_a_dash() {
        let ip: IpAddr = "fd00::".parse().unwrap();
        assert_eq!(dashed(ip), "fd00--0");
        assert_eq!(parse_dashed("fd00--0"), Some(ip));
        let ip: IpAddr = "fd00::1:2".parse().unwrap();
        assert_eq!(dashed(ip), "fd00--1-2");
        assert_eq!(parse_dashed("fd00--1-2"), Some(ip));
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(dashed(ip), "0--1");
        assert_eq!(parse_dashed("0--1"), Some(ip));
    }

    #[test]
    fn junk_is_not_an_address() {
        assert_eq!(parse_dashed("web-0"), None);
        assert_eq!(parse_dashed("1-2-3"), None);
        assert_eq!(parse_dashed(""), None);
        assert_eq!(parse_dashed("256-0-0-1"), None);
    }
}
