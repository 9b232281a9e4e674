use super::*;
use std::path::Path;

fn parse(text: &str) -> ParsedFile {
    parse_file(Path::new("m.yaml"), text.as_bytes(), &Default::default()).unwrap()
}

#[test]
fn multi_document_with_comments_and_empty_docs() {
    let p = parse(
        "---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n",
    );
    let kinds: Vec<&str> = p
        .objects
        .iter()
        .map(|o| o.as_ref().unwrap().kind())
        .collect();
    assert_eq!(kinds, vec!["Service", "Namespace"]);
    let svc = p.objects[0].as_ref().unwrap();
    assert_eq!(
        svc.namespace(),
        "default",
        "namespace defaults like kubectl"
    );
}

#[test]
fn kind_list_and_anchors() {
    let p = parse(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: &m {name: a, namespace: x}\n  spec: {ports: [{port: 80}]}\n- apiVersion: v1\n  kind: Endpoints\n  metadata: *m\n",
    );
    assert_eq!(p.objects.len(), 2);
    assert_eq!(
        p.objects[1].as_ref().unwrap().key().to_string(),
        "Endpoints x/a"
    );
}

#[test]
fn json_is_accepted() {
    let p = parse_file(
        Path::new("s.json"),
        br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":80}]}}"#,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(p.objects.len(), 1);
}

#[test]
fn other_kinds_are_skipped() {
    let p = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");
    assert!(p.objects.is_empty());
}

#[test]
fn billion_laughs_is_an_error_not_an_oom() {
    let mut y = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for c in 'b'..='j' {
        y.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = c;
    }
    let e = parse_file(Path::new("laughs.yaml"), y.as_bytes(), &Default::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("laughs.yaml: invalid YAML"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_an_error() {
    let y = "[".repeat(200) + &"]".repeat(200);
    assert!(parse_file(Path::new("deep.yaml"), y.as_bytes(), &Default::default()).is_err());
    let j = "{\"a\":".repeat(100) + "1" + &"}".repeat(100);
    assert!(parse_file(Path::new("deep.json"), j.as_bytes(), &Default::default()).is_err());
}

#[test]
fn oversized_file_is_rejected() {
    let big = vec![b' '; MAX_FILE_BYTES + 1];
    let e = parse_file(Path::new("big.yaml"), &big, &Default::default()).unwrap_err();
    assert!(e.reason.contains("limit"), "{e}");
}

#[test]
fn undecodable_object_names_its_field() {
    let p = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: x}\nspec:\n  ports:\n  - port: eighty\n",
    );
    let (key, fe) = p.objects[0].as_ref().unwrap_err();
    assert_eq!(key.to_string(), "Service x/a");
    assert_eq!(fe[0].field, "spec.ports[0].port");
}

#[test]
fn non_string_name_still_names_the_object() {
    let p = parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: off}\nspec: {ports: [{port: 80}]}\n",
    );
    let (key, fe) = p.objects[0].as_ref().unwrap_err();
    assert_eq!(key.to_string(), "Service default/false");
    assert_eq!(fe[0].field, "metadata.name");
}

#[test]
fn managed_fields_and_last_applied_are_not_kept() {
    let meta = "metadata:\n  name: a\n  annotations: {kubectl.kubernetes.io/last-applied-configuration: '{\"big\": 1}', keep: me}\n  managedFields: [{manager: kubectl, operation: Apply}]\n";
    let p = parse(&format!("apiVersion: v1\nkind: Namespace\n{meta}"));
    let meta_kept = p.objects[0].as_ref().unwrap().metadata().unwrap();
    assert!(meta_kept.managed_fields.is_none());
    let ann = meta_kept.annotations.as_ref().unwrap();
    assert_eq!(ann.keys().collect::<Vec<_>>(), ["keep"]);
    // A Service keeps no ObjectMeta, only its annotations.
    let p = parse(&format!(
        "apiVersion: v1\nkind: Service\n{meta}spec: {{ports: [{{port: 80}}]}}\n"
    ));
    let Ok(Object::Service(s)) = &p.objects[0] else {
        panic!("{:?}", p.objects[0]);
    };
    assert_eq!(s.annotations.keys().collect::<Vec<_>>(), ["keep"]);
}

/// An empty value where the API server would default the field is the
/// default, not an error (generators often write `""` for "unset").
#[test]
fn empty_values_mean_the_api_server_default() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: \"\"}\nspec:\n  type: \"\"\n  clusterIP: \"\"\n  sessionAffinity: \"\"\n  externalTrafficPolicy: \"\"\n  ports: [{name: web, port: 80, protocol: \"\", targetPort: 0}, {name: alt, port: 81, targetPort: \"\"}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [\"10.1.0.1\"]}]\nports: [{name: web, port: 80, protocol: \"\"}]\n";
    let mut b = crate::builder::Builder::new(crate::snapshot::CompileOptions::default());
    b.update_file(Path::new("m.yaml"), Some(yaml.as_bytes()));
    let s = b.build();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let svc = s.service("default", "a").expect("in namespace default");
    assert_eq!(svc.service_type, crate::service::ServiceType::ClusterIP);
    assert_eq!(svc.cluster_ips.len(), 1, "allocated");
    assert_eq!(svc.ports[0].protocol, crate::service::Protocol::Tcp);
    assert_eq!(svc.ports[0].backends[0].port, 80, "targetPort = port");
}
