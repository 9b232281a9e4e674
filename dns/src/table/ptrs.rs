//! The reverse-name index: which Services point each address at a name.
//! Every endpoint address has an entry (CoreDNS answers reverse lookups of
//! any endpoint), 110,000 at 10,000 Services, so an entry is kept small:
//! IPv4 and IPv6 addresses have a map each (a 4-byte key instead of a
//! 17-byte `IpAddr`), and one target is kept inline in 16 bytes.

use model::{Service, SharedMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// One PTR target of a reverse name: the Service's name (for its
/// ClusterIP) or the name of its endpoint with that address.
#[derive(Clone, Debug)]
pub(super) struct PtrSource {
    pub service: Arc<Service>,
    /// A ClusterIP's name goes before endpoint names.
    pub cluster_ip: bool,
}

impl PtrSource {
    /// Whether the reverse name has a fast answer: ClusterIPs and headless
    /// endpoints do; other endpoints' are only made when asked.
    pub fn fast(&self) -> bool {
        self.cluster_ip || self.service.headless
    }

    pub fn key(&self) -> (&str, &str) {
        (&self.service.namespace, &self.service.name)
    }
}

/// The PTR targets of one address: almost always one, kept inline (an
/// allocation per endpoint address otherwise). `Many` is a thin pointer,
/// so the enum's tag fits in `One`'s `bool` and the whole is 16 bytes.
#[derive(Clone, Debug)]
pub(super) enum PtrSources {
    One(PtrSource),
    Many(Arc<Vec<PtrSource>>),
}

impl PtrSources {
    pub fn from_vec(mut v: Vec<PtrSource>) -> Option<PtrSources> {
        match v.len() {
            0 => None,
            1 => v.pop().map(PtrSources::One),
            _ => Some(PtrSources::Many(Arc::new(v))),
        }
    }

    pub fn as_slice(&self) -> &[PtrSource] {
        match self {
            PtrSources::One(p) => std::slice::from_ref(p),
            PtrSources::Many(v) => v,
        }
    }
}

/// The index itself, by address.
#[derive(Clone, Debug, Default)]
pub(super) struct PtrIndex {
    v4: SharedMap<Ipv4Addr, PtrSources>,
    v6: SharedMap<Ipv6Addr, PtrSources>,
}

impl PtrIndex {
    pub fn get(&self, ip: &IpAddr) -> Option<&PtrSources> {
        match ip {
            IpAddr::V4(a) => self.v4.get(a),
            IpAddr::V6(a) => self.v6.get(a),
        }
    }

    pub fn insert(&mut self, ip: IpAddr, list: PtrSources) {
        match ip {
            IpAddr::V4(a) => self.v4.insert(a, list),
            IpAddr::V6(a) => self.v6.insert(a, list),
        };
    }

    pub fn remove(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(a) => self.v4.remove(a),
            IpAddr::V6(a) => self.v6.remove(a),
        };
    }

    /// In no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &PtrSources)> {
        let v4 = self.v4.iter().map(|(a, l)| (IpAddr::V4(*a), l));
        v4.chain(self.v6.iter().map(|(a, l)| (IpAddr::V6(*a), l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of the layout: a one-target entry of an IPv4 address is
    /// 24 bytes, not 48.
    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<PtrSources>(), 16);
        assert_eq!(std::mem::size_of::<(Ipv4Addr, PtrSources)>(), 24);
    }
}
