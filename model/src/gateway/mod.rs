//! Gateway API: GatewayClass, Gateway and HTTPRoute (v1) and ReferenceGrant
//! (v1beta1), validated, attached and compiled into a [`GatewayTable`] with
//! the status the spec requires of each object.
//!
//! Pure like the rest of the model: which Gateways are ours (class
//! controller [`CONTROLLER`]), where their listeners are served, which
//! routes attach to which listener (parentRefs, allowedRoutes, hostname
//! intersection), and each rule's matches in the spec's precedence order.

mod compile;
mod duration;
mod listeners;
mod overlap;
mod routes;
mod selector;
pub mod status;
mod table;
pub mod types;
pub mod validate;

pub use compile::compile;
pub use duration::parse_duration;
pub use overlap::{Overlap, overlaps};
pub use status::{
    Condition, GatewayApiStatus, GatewayStatus, ListenerStatus, ObjectStatus, ParentStatus,
    RouteStatus,
};
pub use table::{
    GatewayRule, GatewayTable, ListenerRoutes, MatchEntry, Mirror, PathMatch, PortRoutes,
    RequestFacts, RequestMatch, RuleAction, RuleFilters, ValueMatch, ValuePattern, WeightedBackend,
    hostname_matches,
};

use crate::snapshot::{NamespacedName, SecretMap, ServiceMap};
use std::collections::{BTreeMap, HashSet};
use types::{GROUP, GatewayClass, HttpRoute, ReferenceGrant};

/// A RegularExpression match as it is compiled: anchored at both ends.
/// Validation compiles this same form, so the compiler never meets one
/// that fails (a `(?x)` flag, for one, could swallow the anchors).
pub fn anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

/// `spec.controllerName` of the GatewayClasses nodeway serves.
pub const CONTROLLER: &str = "nodeway.io/gateway-controller";

/// Everything Gateway API compilation reads.
pub struct GatewayInput<'a> {
    pub classes: Vec<&'a GatewayClass>,
    pub gateways: Vec<&'a types::Gateway>,
    pub routes: Vec<&'a HttpRoute>,
    pub grants: Vec<&'a ReferenceGrant>,
    /// Labels of the Namespace objects there are.
    pub namespaces: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    pub services: &'a ServiceMap,
    pub secrets: &'a SecretMap,
    /// Filled with every Service a route names (found or not).
    pub named_services: &'a mut HashSet<NamespacedName>,
}

impl GatewayInput<'_> {
    /// A namespace's labels, with `kubernetes.io/metadata.name`, which the
    /// API server sets on every namespace (also on one with no object here).
    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(ns)
            .map(|l| (*l).clone())
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), ns.into());
        labels
    }
}

/// The ReferenceGrants, asked whether a reference across namespaces is allowed.
struct Grants<'a>(Vec<&'a ReferenceGrant>);

impl Grants<'_> {
    /// Whether a `from_kind` (of the Gateway API group) in `from_ns` may
    /// refer to the core `to_kind` named `to_name` in `to_ns`.
    fn allows(
        &self,
        from_kind: &str,
        from_ns: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        self.0.iter().any(|g| {
            g.metadata.namespace.as_deref().unwrap_or("default") == to_ns
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
    }
}

#[cfg(test)]
mod tests;
