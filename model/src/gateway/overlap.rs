//! Requests an Ingress and an HTTPRoute both claim: the HTTPRoute wins
//! where they share a listener, and the user is told.

use super::table::{GatewayTable, PathMatch};
use crate::ingress::{IngressTable, PathKind};
use std::collections::BTreeSet;

/// One host and path an HTTPRoute takes from an Ingress.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Overlap {
    /// `namespace/name` of each.
    pub http_route: String,
    pub ingress: String,
    pub host: String,
    pub path: String,
}

impl Overlap {
    pub fn message(&self) -> String {
        let host = if self.host.is_empty() {
            "*"
        } else {
            &self.host
        };
        format!(
            "{host}{} is also claimed by Ingress {}; on a listener both serve, the HTTPRoute wins",
            self.path, self.ingress
        )
    }
}

/// Exact and prefix paths written the same on the same host (a route's
/// bare `/` prefix included); header, query and method matches aside.
pub fn overlaps(ingress: &IngressTable, gateway: &GatewayTable) -> Vec<Overlap> {
    if gateway.is_empty() {
        return Vec::new();
    }
    let key = |prefix: bool, path: &str| (prefix, path.trim_end_matches('/').to_string());
    let mut claimed: std::collections::HashMap<(String, (bool, String)), &str> = Default::default();
    for r in ingress.routes() {
        let prefix = match r.kind {
            PathKind::Exact => false,
            PathKind::Prefix => true,
            PathKind::Regex => continue,
        };
        claimed
            .entry((r.host.to_string(), key(prefix, &r.path)))
            .or_insert(&r.ingress);
    }
    let mut out = BTreeSet::new();
    for (_, port) in gateway.ports() {
        for l in port.listeners() {
            for (host, entry) in l.rules() {
                let (prefix, path) = match &entry.matcher.path {
                    PathMatch::Exact(p) => (false, &**p),
                    PathMatch::Prefix(p) => (true, &**p),
                    PathMatch::Regex(_) => continue,
                };
                if let Some(ing) = claimed.get(&(host.to_string(), key(prefix, path))) {
                    out.insert(Overlap {
                        http_route: entry.rule.route.to_string(),
                        ingress: ing.to_string(),
                        host: host.to_string(),
                        path: if path.is_empty() {
                            "/".into()
                        } else {
                            path.into()
                        },
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}
