//! Gateway API kinds from the API server. They are CRDs, so they are
//! watched only where discovery shows them installed, through kube's
//! dynamic objects (the model parses them with its own serde types).

use crate::api::{Deltas, to_deltas};
use kube::core::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use model::gateway::types::GROUP;

/// The kinds nodeway reads, by group version: (kind, plural).
const WANTED: [(&str, &[(&str, &str)]); 2] = [
    (
        "v1",
        &[
            ("GatewayClass", "gatewayclasses"),
            ("Gateway", "gateways"),
            ("HTTPRoute", "httproutes"),
        ],
    ),
    ("v1beta1", &[("ReferenceGrant", "referencegrants")]),
];

/// The API resource of a Gateway API kind nodeway reads (for its status
/// too), by kind.
pub(crate) fn resource(kind: &str) -> Option<ApiResource> {
    WANTED.iter().find_map(|(version, kinds)| {
        let (kind, plural) = kinds.iter().find(|(k, _)| *k == kind)?;
        Some(ApiResource {
            group: GROUP.into(),
            version: version.to_string(),
            api_version: format!("{GROUP}/{version}"),
            kind: kind.to_string(),
            plural: plural.to_string(),
        })
    })
}

/// A Gateway API kind the cluster serves.
pub(crate) struct GatewayKind {
    pub kind: &'static str,
    resource: ApiResource,
}

/// The Gateway API kinds installed, asked of the API's discovery once at
/// start (CRDs installed later are read after a restart, as most
/// controllers do). A version the server does not have means its kinds
/// are not watched, and the log says so.
pub(crate) async fn discover(client: &Client) -> Vec<GatewayKind> {
    let mut found = Vec::new();
    for (version, kinds) in WANTED {
        let api_version = format!("{GROUP}/{version}");
        let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        let Some(served) = group_resources(client, &api_version).await else {
            tracing::info!(
                api_version,
                "Gateway API CRDs not installed: {} not watched",
                names.join(", ")
            );
            continue;
        };
        for (kind, plural) in kinds {
            if served.iter().any(|r| r.name == *plural) {
                let resource = resource(kind).expect("a kind of WANTED");
                found.push(GatewayKind { kind, resource });
            } else {
                tracing::info!(
                    api_version,
                    kind,
                    "Gateway API CRD not installed: not watched"
                );
            }
        }
    }
    if !found.is_empty() {
        let names: Vec<&str> = found.iter().map(|k| k.kind).collect();
        tracing::info!(kinds = names.join(", "), "Gateway API CRDs found: watched");
    }
    found
}

/// The resources a group version serves; `None` when the server does not
/// have it (404). Other failures (a timeout, a 5xx) are tried again a few
/// times before the kinds are given up on until a restart.
async fn group_resources(
    client: &Client,
    api_version: &str,
) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource>> {
    let mut wait = std::time::Duration::from_millis(500);
    for attempt in 1..=5 {
        match client.list_api_group_resources(api_version).await {
            Ok(list) => return Some(list.resources),
            Err(kube::Error::Api(s)) if s.is_not_found() => return None,
            Err(e) if attempt < 5 => {
                tracing::warn!(api_version, error = %e, "API discovery failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => {
                tracing::warn!(api_version, error = %e, "API discovery failed: not watched until a restart")
            }
        }
    }
    None
}

/// The watch stream of one Gateway API kind.
pub(crate) fn deltas(client: &Client, k: &GatewayKind) -> Deltas {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.resource);
    // List items come without apiVersion and kind; the model needs them.
    let types = TypeMeta {
        api_version: k.resource.api_version.clone(),
        kind: k.resource.kind.clone(),
    };
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    to_deltas(k.kind, stream, move |o: &mut DynamicObject| {
        o.types = Some(types.clone())
    })
}
