//! The status of the Gateway API objects nodeway answers for, written to
//! their status subresource (with `--publish-status`): the conditions the
//! spec requires, with `observedGeneration`, on GatewayClasses, Gateways
//! (and their listeners) and HTTPRoutes (one entry per parent of ours).
//!
//! A read-modify-write like the Ingress status: a condition keeps its
//! `lastTransitionTime` while its status stays; an HTTPRoute's parent
//! entries of other controllers are left alone, and ours are taken off a
//! route that no longer names a Gateway of ours; a Gateway served on every
//! node lists each node's address (each adds its own). Every node computes
//! the same conditions from the same objects, so a write that changes
//! nothing is skipped, and what was last written (per object, by uid) is
//! remembered to spare the reads.

use kube::api::PostParams;
use kube::core::DynamicObject;
use kube::{Api, Client};
use model::gateway::{CONTROLLER, Condition, GatewayApiStatus, ListenerStatus, ParentStatus};
use model::{ObjectKey, Snapshot};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use model::gateway::types::GROUP;
/// Conflicts in a row before a write is left for the next round.
const CONFLICT_TRIES: usize = 5;

/// Writes the Gateway API status of each Snapshot.
pub struct GatewayStatusWriter {
    client: Client,
    /// This node's addresses: a Gateway without `spec.addresses` is served there.
    node_addresses: Vec<String>,
    /// The status last written (or found) per object, by key and uid.
    written: HashMap<(ObjectKey, Option<String>), Value>,
}

/// One object's status as nodeway would write it (without timestamps).
struct Wanted {
    key: ObjectKey,
    uid: Option<String>,
    /// `None`: written to whatever version is there (taking our route
    /// parents off).
    generation: Option<i64>,
    status: Value,
    /// A Gateway served on every node: its addresses are merged with the
    /// other nodes', not replaced.
    merge_addresses: bool,
}

impl GatewayStatusWriter {
    pub fn new(client: Client, node_ips: &[IpAddr]) -> GatewayStatusWriter {
        GatewayStatusWriter {
            client,
            node_addresses: node_ips.iter().map(IpAddr::to_string).collect(),
            written: HashMap::new(),
        }
    }

    /// Brings every object's status in line with `snap`; whether every write worked.
    pub async fn sync(&mut self, snap: &Snapshot) -> bool {
        let mut complete = true;
        let wanted = self.wanted(snap.gateway.status());
        // Objects no longer ours are forgotten; on a route, our parent
        // entries come off first.
        let current: HashSet<_> = wanted
            .iter()
            .map(|w| (w.key.clone(), w.uid.clone()))
            .collect();
        let gone: Vec<_> = self
            .written
            .keys()
            .filter(|k| !current.contains(*k))
            .cloned()
            .collect();
        for (key, uid) in gone {
            if key.kind == "HTTPRoute" {
                let off = Wanted {
                    key: key.clone(),
                    uid: uid.clone(),
                    generation: None,
                    status: json!({"parents": []}),
                    merge_addresses: false,
                };
                if self.write(&off).await.is_none() {
                    complete = false;
                    continue;
                }
            }
            self.written.remove(&(key, uid));
        }
        for w in wanted {
            let id = (w.key.clone(), w.uid.clone());
            if self.written.get(&id) == Some(&w.status) {
                continue;
            }
            match self.write(&w).await {
                Some(()) => {
                    self.written.insert(id, w.status);
                }
                None => complete = false,
            }
        }
        complete
    }

    /// Each object's status as nodeway would write it.
    fn wanted(&self, st: &GatewayApiStatus) -> Vec<Wanted> {
        let mut out = Vec::new();
        for c in &st.classes {
            out.push(Wanted {
                key: c.key.clone(),
                uid: c.uid.clone(),
                generation: c.generation,
                status: json!({"conditions": conditions(&c.conditions, c.generation)}),
                merge_addresses: false,
            });
        }
        for g in &st.gateways {
            let generation = g.object.generation;
            let on_nodes = g.addresses.is_empty();
            let addresses = if on_nodes {
                &self.node_addresses
            } else {
                &g.addresses
            };
            let status = json!({
                "addresses": addresses.iter().map(|a| json!({"type": "IPAddress", "value": a})).collect::<Vec<_>>(),
                "conditions": conditions(&g.object.conditions, generation),
                "listeners": g.listeners.iter().map(|l| listener(l, generation)).collect::<Vec<_>>(),
            });
            out.push(Wanted {
                key: g.object.key.clone(),
                uid: g.object.uid.clone(),
                generation,
                status,
                merge_addresses: on_nodes,
            });
        }
        for r in &st.routes {
            let parents: Vec<Value> = r.parents.iter().map(|p| parent(p, r.generation)).collect();
            out.push(Wanted {
                key: r.key.clone(),
                uid: r.uid.clone(),
                generation: r.generation,
                status: json!({"parents": parents}),
                merge_addresses: false,
            });
        }
        out
    }

    /// One read-modify-write; `None` when it failed (tried again later).
    /// Written only to the object the status was made for (its uid and
    /// generation), unless `generation` is `None`.
    async fn write(&self, w: &Wanted) -> Option<()> {
        let key = &w.key;
        let api = self.api(key)?;
        let id = format!("{} {}/{}", key.kind, key.namespace, key.name);
        for _ in 0..CONFLICT_TRIES {
            let mut obj = match api.get_status(&key.name).await {
                Ok(o) => o,
                // Gone, or only in a file merged with the API: nothing to write.
                Err(kube::Error::Api(s)) if s.is_not_found() => return Some(()),
                Err(e) => {
                    tracing::warn!(object = %id, error = %e, "cannot read the status");
                    return None;
                }
            };
            let stale = w.generation.is_some() && obj.metadata.generation != w.generation;
            if stale || (w.uid.is_some() && obj.metadata.uid != w.uid) {
                // Changed (or re-created) since: the next Snapshot has its status.
                return Some(());
            }
            let old = obj.data.get("status").cloned().unwrap_or(Value::Null);
            let new = merged(key.kind, &old, &w.status, w.merge_addresses);
            if new == old {
                return Some(());
            }
            obj.data["status"] = new;
            match api
                .replace_status(&key.name, &PostParams::default(), &obj)
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %id, "Gateway API status updated");
                    return Some(());
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(kube::Error::Api(s)) if s.is_not_found() => return Some(()),
                Err(e) => {
                    tracing::warn!(object = %id, error = %e, "cannot update the status");
                    return None;
                }
            }
        }
        None
    }

    fn api(&self, key: &ObjectKey) -> Option<Api<DynamicObject>> {
        let resource = crate::api_gateway::resource(key.kind)?;
        Some(if key.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &key.namespace, &resource)
        })
    }
}

fn conditions(list: &[Condition], generation: Option<i64>) -> Vec<Value> {
    list.iter()
        .map(|c| {
            json!({
                "type": c.kind,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation,
            })
        })
        .collect()
}

fn listener(l: &ListenerStatus, generation: Option<i64>) -> Value {
    json!({
        "name": l.name,
        "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
        "attachedRoutes": l.attached_routes,
        "conditions": conditions(&l.conditions, generation),
    })
}

fn parent(p: &ParentStatus, generation: Option<i64>) -> Value {
    let (namespace, name) = p.gateway.split_once('/').unwrap_or(("", &p.gateway));
    let mut parent_ref =
        json!({"group": GROUP, "kind": "Gateway", "namespace": namespace, "name": name});
    if let Some(s) = &p.section_name {
        parent_ref["sectionName"] = json!(s);
    }
    if let Some(port) = p.port {
        parent_ref["port"] = json!(port);
    }
    json!({"parentRef": parent_ref, "controllerName": CONTROLLER, "conditions": conditions(&p.conditions, generation)})
}

/// The status to write: `wanted`, with each condition's
/// `lastTransitionTime` kept from `old` while its status is the same (else
/// now); for an HTTPRoute, the parents of other controllers kept too; with
/// `merge_addresses`, the addresses already there kept (other nodes').
fn merged(kind: &str, old: &Value, wanted: &Value, merge_addresses: bool) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let mut new = wanted.clone();
    match kind {
        "HTTPRoute" => {
            let theirs = old["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["controllerName"] != CONTROLLER);
            let ours = new["parents"].as_array_mut().expect("built above");
            for p in ours.iter_mut() {
                let before = old["parents"].as_array().into_iter().flatten().find(|o| {
                    o["controllerName"] == CONTROLLER && o["parentRef"] == p["parentRef"]
                });
                stamp(&mut p["conditions"], before.map(|b| &b["conditions"]), &now);
            }
            let mut all: Vec<Value> = theirs.cloned().collect();
            all.append(ours);
            new["parents"] = Value::Array(all);
        }
        _ => {
            if merge_addresses {
                let mut all: Vec<Value> = old["addresses"].as_array().cloned().unwrap_or_default();
                for a in new["addresses"].as_array().into_iter().flatten() {
                    if !all.iter().any(|o| o["value"] == a["value"]) {
                        all.push(a.clone());
                    }
                }
                // One order on every node, so their writes agree.
                all.sort_by(|a, b| a["value"].as_str().cmp(&b["value"].as_str()));
                new["addresses"] = Value::Array(all);
            }
            stamp(&mut new["conditions"], Some(&old["conditions"]), &now);
            if let Some(listeners) = new["listeners"].as_array_mut() {
                for l in listeners {
                    let before = old["listeners"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|o| o["name"] == l["name"]);
                    stamp(&mut l["conditions"], before.map(|b| &b["conditions"]), &now);
                }
            }
        }
    }
    new
}

/// Sets each condition's `lastTransitionTime`: the old one's when the
/// type's status did not change, else `now`.
fn stamp(conditions: &mut Value, old: Option<&Value>, now: &str) {
    for c in conditions.as_array_mut().into_iter().flatten() {
        let same = old
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|o| o["type"] == c["type"] && o["status"] == c["status"]);
        c["lastTransitionTime"] = match same.and_then(|o| o.get("lastTransitionTime")) {
            Some(t) => t.clone(),
            None => json!(now),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A condition whose status stays keeps its transition time; one that
    /// flips gets a new one; other controllers' route parents stay.
    #[test]
    fn merge_keeps_transition_times_and_foreign_parents() {
        let old = json!({"parents": [
            {"controllerName": "example.com/other", "parentRef": {"name": "x"}, "conditions": []},
            {"controllerName": CONTROLLER, "parentRef": {"name": "gw"}, "conditions": [
                {"type": "Accepted", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]});
        let wanted = json!({"parents": [
            {"controllerName": CONTROLLER, "parentRef": {"name": "gw"}, "conditions": [
                {"type": "Accepted", "status": "True"},
                {"type": "ResolvedRefs", "status": "False"}]}]});
        let new = merged("HTTPRoute", &old, &wanted, false);
        let parents = new["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0]["controllerName"], "example.com/other");
        let c = &parents[1]["conditions"];
        assert_eq!(c[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_ne!(c[1]["lastTransitionTime"], "2026-01-01T00:00:00Z");
        // Writing the same again changes nothing (the writer then skips it).
        assert_eq!(merged("HTTPRoute", &new, &wanted, false), new);
    }

    /// A Gateway served on every node lists each node's address.
    #[test]
    fn node_addresses_merge() {
        let old =
            json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.7"}], "conditions": []});
        let wanted =
            json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.5"}], "conditions": []});
        let new = merged("Gateway", &old, &wanted, true);
        let values: Vec<&str> = new["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, ["10.0.0.5", "10.0.0.7"]);
        assert_eq!(
            merged("Gateway", &old, &wanted, false)["addresses"],
            wanted["addresses"]
        );
    }
}
