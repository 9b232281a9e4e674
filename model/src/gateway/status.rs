//! The status nodeway gives Gateway API objects: the conditions the spec
//! requires, with its reason strings. `check` prints them in folder mode;
//! in cluster mode they are what is written back.

use crate::error::ObjectKey;

/// One condition (`metav1.Condition` without its timestamp).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }

    /// `Accepted=True (Accepted)`, with the message when there is one.
    pub fn summary(&self) -> String {
        let status = if self.status { "True" } else { "False" };
        if self.message.is_empty() {
            format!("{}={status} ({})", self.kind, self.reason)
        } else {
            format!("{}={status} ({}: {})", self.kind, self.reason, self.message)
        }
    }
}

/// Conditions of one object, for the generation they describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStatus {
    pub key: ObjectKey,
    /// `metadata.uid`: a re-created object is another one.
    pub uid: Option<String>,
    /// `metadata.generation` (the conditions' `observedGeneration`).
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// `HTTPRoute` when the listener takes HTTPRoutes (nodeway's only route kind).
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: usize,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayStatus {
    pub object: ObjectStatus,
    pub listeners: Vec<ListenerStatus>,
    /// `spec.addresses` of type IPAddress (empty: every node address).
    pub addresses: Vec<String>,
}

/// A route's status for one of its parentRefs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentStatus {
    /// The Gateway as `namespace/name`.
    pub gateway: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteStatus {
    pub key: ObjectKey,
    pub uid: Option<String>,
    pub generation: Option<i64>,
    pub parents: Vec<ParentStatus>,
}

/// Every Gateway API object nodeway answers for, and what it says of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayApiStatus {
    pub classes: Vec<ObjectStatus>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
    /// Gateways of other controllers' classes (or of a class that does
    /// not exist), with why: not served, and reported.
    pub skipped: Vec<(ObjectKey, String)>,
}

impl GatewayApiStatus {
    /// `check`'s lines: one per object, listener and route parent.
    pub fn lines(&self) -> Vec<String> {
        let conditions = |c: &[Condition]| {
            c.iter()
                .map(Condition::summary)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        for c in &self.classes {
            out.push(format!(
                "GatewayClass {}: {}",
                c.key.name,
                conditions(&c.conditions)
            ));
        }
        for g in &self.gateways {
            let k = &g.object.key;
            out.push(format!(
                "Gateway {}/{}: {}",
                k.namespace,
                k.name,
                conditions(&g.object.conditions)
            ));
            for l in &g.listeners {
                out.push(format!(
                    "  listener {}: {} attached route(s); {}",
                    l.name,
                    l.attached_routes,
                    conditions(&l.conditions)
                ));
            }
        }
        for r in &self.routes {
            for p in &r.parents {
                let section = p
                    .section_name
                    .as_deref()
                    .map(|s| format!(" section {s}"))
                    .unwrap_or_default();
                let port = p.port.map(|p| format!(" port {p}")).unwrap_or_default();
                out.push(format!(
                    "HTTPRoute {}/{} -> Gateway {}{section}{port}: {}",
                    r.key.namespace,
                    r.key.name,
                    p.gateway,
                    conditions(&p.conditions)
                ));
            }
        }
        out
    }
}
