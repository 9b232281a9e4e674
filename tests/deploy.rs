//! The deploy manifests are valid Kubernetes objects: each document reads
//! into its k8s-openapi type, and writing it back loses nothing (a field
//! the API does not have would be dropped, and the comparison fails).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Value {
    let typed: T = serde_json::from_value(doc.clone()).expect("reads as its API type");
    serde_json::to_value(typed).unwrap()
}

#[test]
fn deploy_manifests_are_valid_kubernetes_objects() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut kinds = Vec::new();
    let files = ["deploy/daemonset.yaml", "deploy-standalone/daemonset.yaml"];
    for file in files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let back = match kind.as_str() {
                "Namespace" => round_trip::<Namespace>(&doc),
                "ConfigMap" => round_trip::<ConfigMap>(&doc),
                "ServiceAccount" => round_trip::<ServiceAccount>(&doc),
                "ClusterRole" => round_trip::<ClusterRole>(&doc),
                "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(&doc),
                "DaemonSet" => round_trip::<DaemonSet>(&doc),
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            };
            assert_eq!(
                back,
                doc,
                "{}: {kind} has fields its API type does not",
                path.display()
            );
            kinds.push(format!("{file}: {kind}"));
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "deploy-standalone/daemonset.yaml: ConfigMap",
            "deploy-standalone/daemonset.yaml: DaemonSet",
            "deploy-standalone/daemonset.yaml: Namespace",
            "deploy-standalone/daemonset.yaml: ServiceAccount",
            "deploy/daemonset.yaml: ClusterRole",
            "deploy/daemonset.yaml: ClusterRoleBinding",
            "deploy/daemonset.yaml: DaemonSet",
            "deploy/daemonset.yaml: Namespace",
            "deploy/daemonset.yaml: ServiceAccount",
        ]
    );
}

/// Least privilege: list and watch of what the source reads, and get and
/// update of `ingresses/status` only because the DaemonSet runs
/// `--publish-status`.
#[test]
fn the_cluster_role_grants_only_what_nodeway_uses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/deploy/daemonset.yaml");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap().clone();
    let role: ClusterRole = serde_json::from_value(of("ClusterRole")).unwrap();
    let mut grants = Vec::new();
    for rule in role.rules.unwrap() {
        for group in rule.api_groups.unwrap() {
            for res in rule.resources.clone().unwrap() {
                grants.push(format!("{group}/{res}: {}", rule.verbs.join(",")));
            }
        }
    }
    grants.sort();
    assert_eq!(
        grants,
        [
            "/namespaces: list,watch",
            "/secrets: list,watch",
            "/services: list,watch",
            "discovery.k8s.io/endpointslices: list,watch",
            "gateway.networking.k8s.io/gatewayclasses/status: get,update",
            "gateway.networking.k8s.io/gatewayclasses: list,watch",
            "gateway.networking.k8s.io/gateways/status: get,update",
            "gateway.networking.k8s.io/gateways: list,watch",
            "gateway.networking.k8s.io/httproutes/status: get,update",
            "gateway.networking.k8s.io/httproutes: list,watch",
            "gateway.networking.k8s.io/referencegrants: list,watch",
            "networking.k8s.io/ingressclasses: list,watch",
            "networking.k8s.io/ingresses/status: get,update",
            "networking.k8s.io/ingresses: list,watch",
        ]
    );
    let ds: DaemonSet = serde_json::from_value(of("DaemonSet")).unwrap();
    let args = ds.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.iter().any(|a| a == "--publish-status"), "{args:?}");
}
