use super::*;
use crate::service::Protocol;
use std::net::SocketAddr;

fn b() -> Builder {
    Builder::new(CompileOptions::default())
}

fn up(b: &mut Builder, file: &str, text: &str) {
    b.update_file(Path::new(file), Some(text.as_bytes()));
}

const SVC_A: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 127.0.0.10\n  ports: [{name: http, port: 80, targetPort: web}]\n  selector: {app: a}\n";

fn svc_c(cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: c}}\nspec: {{clusterIP: {cluster_ip}, ports: [{{port: 80}}]}}\n"
    )
}

#[test]
fn invalid_object_keeps_last_good_version_and_others_update() {
    let mut b = b();
    up(&mut b, "a.yaml", SVC_A);
    up(&mut b, "c.yaml", &svc_c("127.0.0.30"));
    assert_eq!(b.build().services.len(), 2);
    up(
        &mut b,
        "a.yaml",
        &SVC_A.replace("port: 80,", "port: 70000,"),
    );
    up(&mut b, "c.yaml", &svc_c("127.0.0.31"));
    let s = b.build();
    assert_eq!(
        s.service("default", "a").unwrap().ports[0].port,
        80,
        "last good kept"
    );
    assert_eq!(
        s.service("default", "c").unwrap().cluster_ips[0].to_string(),
        "127.0.0.31"
    );
    assert_eq!(s.errors.len(), 1);
    let e = s.errors[0].to_string();
    assert_eq!(
        e,
        "a.yaml: Service default/a: spec.ports[0].port: 70000 is outside 1..65535"
    );
}

#[test]
fn invalid_new_object_is_absent() {
    let mut b = b();
    up(&mut b, "a.yaml", &SVC_A.replace("127.0.0.10", "not-an-ip"));
    let s = b.build();
    assert!(s.service("default", "a").is_none());
    assert_eq!(s.errors[0].field.as_deref(), Some("spec.clusterIP"));
}

#[test]
fn unparsable_file_keeps_objects_and_errors_clear_when_fixed() {
    let mut b = b();
    up(&mut b, "a.yaml", SVC_A);
    up(&mut b, "a.yaml", "kind: [");
    let s = b.build();
    assert!(s.service("default", "a").is_some());
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].object.is_none());
    up(&mut b, "a.yaml", SVC_A);
    assert!(b.build().errors.is_empty());
}

#[test]
fn removed_file_removes_objects() {
    let mut b = b();
    up(&mut b, "a.yaml", SVC_A);
    b.update_file(Path::new("a.yaml"), None);
    assert!(b.build().services.is_empty());
}

fn cluster_ip(s: &Snapshot, name: &str) -> String {
    s.service("default", name).unwrap().cluster_ips[0].to_string()
}

/// As `kubectl apply -f FOLDER` would leave it: the last file in name
/// order wins, with a warning naming both places; when it goes, the other
/// copy takes over without being read again.
#[test]
fn same_object_in_two_files_the_last_wins_and_the_other_takes_over() {
    let mut b = b();
    up(&mut b, "b.yaml", &svc_c("127.0.0.31"));
    up(&mut b, "a.yaml", &svc_c("127.0.0.30"));
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.31");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.warnings.len(), 1);
    assert_eq!(
        s.warnings[0].to_string(),
        "a.yaml: Service default/c: also defined in b.yaml, which is used (the last file in name order wins)"
    );
    // The copy aside follows its file.
    up(&mut b, "a.yaml", &svc_c("127.0.0.32"));
    assert_eq!(cluster_ip(&b.build(), "c"), "127.0.0.31");
    b.update_file(Path::new("b.yaml"), None);
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.32");
    assert!(s.warnings.is_empty());
    // Back again: it wins again.
    up(&mut b, "b.yaml", &svc_c("127.0.0.31"));
    assert_eq!(cluster_ip(&b.build(), "c"), "127.0.0.31");
    b.update_file(Path::new("a.yaml"), None);
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.31");
    assert!(s.warnings.is_empty());
}

#[test]
fn same_object_twice_in_one_file_the_last_copy_wins() {
    let mut b = b();
    up(
        &mut b,
        "a.yaml",
        &format!("{}---\n{}", svc_c("127.0.0.30"), svc_c("127.0.0.31")),
    );
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.31");
    assert!(s.errors.is_empty());
    assert_eq!(
        s.warnings[0].to_string(),
        "a.yaml: Service default/c: defined twice in this file; the last copy is used"
    );
}

/// The last copy decides even when it is bad: the earlier good copy is
/// not served in its place (the last good version is).
#[test]
fn a_bad_last_copy_keeps_the_last_good_version_not_the_earlier_copy() {
    let mut b = b();
    up(&mut b, "a.yaml", &svc_c("127.0.0.30"));
    up(
        &mut b,
        "a.yaml",
        &format!("{}---\n{}", svc_c("127.0.0.31"), svc_c("not-an-ip")),
    );
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.30");
    assert_eq!(s.errors.len(), 1);
    // A bad copy followed by a good one: the good one, and no error.
    up(
        &mut b,
        "a.yaml",
        &format!("{}---\n{}", svc_c("not-an-ip"), svc_c("127.0.0.32")),
    );
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.32");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
}

/// A copy kept aside that turns bad keeps its last good version aside,
/// and takes over with it.
#[test]
fn a_copy_aside_that_turns_bad_keeps_its_last_good_version() {
    let mut b = b();
    up(&mut b, "a.yaml", &svc_c("127.0.0.30"));
    up(&mut b, "b.yaml", &svc_c("127.0.0.31"));
    up(&mut b, "a.yaml", &svc_c("not-an-ip"));
    assert_eq!(cluster_ip(&b.build(), "c"), "127.0.0.31");
    b.update_file(Path::new("b.yaml"), None);
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.30");
    assert_eq!(s.errors.len(), 1, "a.yaml's bad copy is still reported");
}

/// The API server's copy beats a file's, whatever the names; the file's
/// comes back when the API deletes the object.
#[test]
fn the_api_copy_beats_a_file_copy() {
    let mut b = b();
    let api = Path::new("k8s/Service/default/c");
    b.update(api, Origin::Api, Some(svc_c("127.0.0.40").as_bytes()));
    up(&mut b, "zz.yaml", &svc_c("127.0.0.30"));
    let s = b.build();
    assert_eq!(cluster_ip(&s, "c"), "127.0.0.40");
    assert_eq!(
        s.warnings[0].to_string(),
        "zz.yaml: Service default/c: the Kubernetes API also has this object; its copy is used"
    );
    b.update(api, Origin::Api, None);
    assert_eq!(cluster_ip(&b.build(), "c"), "127.0.0.30");
    b.update(api, Origin::Api, Some(svc_c("127.0.0.41").as_bytes()));
    assert_eq!(cluster_ip(&b.build(), "c"), "127.0.0.41");
}

fn addrs(s: &Snapshot, name: &str, port: usize) -> Vec<(SocketAddr, bool)> {
    s.service("default", name).unwrap().ports[port]
        .backends
        .iter()
        .map(|b| (b.addr(), b.ready))
        .collect()
}

#[test]
fn endpointslices_across_two_slices_are_merged_and_deduplicated() {
    let mut b = b();
    up(
        &mut b,
        "s.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 127.0.0.10\n  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]\n",
    );
    let slice = |n: &str, ip: &str, ready: bool| {
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {n}, labels: {{kubernetes.io/service-name: s}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}, {{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n- addresses: [{ip}]\n  conditions: {{ready: {ready}}}\n- addresses: [127.0.1.9]\n"
        )
    };
    up(
        &mut b,
        "e.yaml",
        &(slice("s-1", "127.0.1.1", true) + &slice("s-2", "127.0.1.2", false)),
    );
    let s = b.build();
    assert_eq!(
        addrs(&s, "s", 0),
        vec![
            ("127.0.1.1:8080".parse().unwrap(), true),
            ("127.0.1.2:8080".parse().unwrap(), false),
            ("127.0.1.9:8080".parse().unwrap(), true),
        ]
    );
    let dns = &s.service("default", "s").unwrap().ports[1];
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(dns.backends[0].port, 5353);
    assert_eq!(s.service("default", "s").unwrap().endpoints.len(), 3);
}

/// A Service with one slice takes the slice's endpoint list as is (no
/// copy per Service); the slice keeps one endpoint per address, by
/// address, the ready one winning, as merging several slices does.
#[test]
fn one_slice_lends_its_endpoint_list_to_the_service() {
    let mut b = b();
    up(
        &mut b,
        "s.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 127.0.0.10\n  ports: [{name: http, port: 80}]\n",
    );
    up(
        &mut b,
        "e.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- {addresses: [127.0.1.5], conditions: {ready: false}, hostname: first}\n- {addresses: [127.0.1.3]}\n- {addresses: [127.0.1.5], hostname: second}\n- {addresses: [127.0.1.5], conditions: {ready: false}}\n",
    );
    let s = b.build();
    let svc = s.service("default", "s").unwrap();
    let eps: Vec<(String, bool, Option<&str>)> = svc
        .endpoints
        .iter()
        .map(|e| (e.ip.to_string(), e.ready, e.hostname.as_deref()))
        .collect();
    assert_eq!(
        eps,
        [
            ("127.0.1.3".to_string(), true, None),
            ("127.0.1.5".to_string(), true, Some("second")),
        ]
    );
    assert_eq!(
        addrs(&s, "s", 0),
        vec![
            ("127.0.1.3:8080".parse().unwrap(), true),
            ("127.0.1.5:8080".parse().unwrap(), true),
        ]
    );
    let key = ObjectKey::new("EndpointSlice", "default", "s-1");
    let Some((_, Object::EndpointSlice(slice))) = b.objects.get(&key) else {
        panic!("slice not kept");
    };
    assert!(Arc::ptr_eq(&slice.endpoints, &svc.endpoints));
}

/// Slices are kept compact, so they are validated in their API form when
/// parsed: every bad field is named, and the last good version stays.
#[test]
fn a_bad_endpointslice_names_each_field_and_keeps_its_last_good_version() {
    let mut b = b();
    up(
        &mut b,
        "s.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}\n",
    );
    let slice = |ip: &str, port: u32| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s-1, labels: {{kubernetes.io/service-name: s}}}}\naddressType: IPv4\nports: [{{port: {port}}}]\nendpoints:\n- addresses: [{ip}]\n"
        )
    };
    up(&mut b, "e.yaml", &slice("127.0.1.1", 8080));
    assert_eq!(
        addrs(&b.build(), "s", 0),
        vec![("127.0.1.1:8080".parse().unwrap(), true)]
    );
    up(&mut b, "e.yaml", &slice("nope", 0));
    let s = b.build();
    assert_eq!(
        addrs(&s, "s", 0),
        vec![("127.0.1.1:8080".parse().unwrap(), true)]
    );
    let errors: Vec<String> = s.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            "e.yaml: EndpointSlice default/s-1: endpoints[0].addresses[0]: \"nope\" is not an IPv4 address",
            "e.yaml: EndpointSlice default/s-1: ports[0].port: 0 is outside 1..65535",
        ]
    );
}

#[test]
fn endpoints_object_is_the_fallback() {
    let mut b = b();
    up(
        &mut b,
        "s.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec: {clusterIP: 127.0.0.11, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: ext}\nsubsets:\n- addresses: [{ip: 127.0.2.1}, {ip: 127.0.2.2}]\n  notReadyAddresses: [{ip: 127.0.2.3}]\n  ports: [{port: 8080}]\n",
    );
    let s = b.build();
    let got = addrs(&s, "ext", 0);
    assert_eq!(got.len(), 3);
    assert_eq!(got.iter().filter(|(_, r)| *r).count(), 2);
}

#[test]
fn selector_picks_ready_pods_with_named_target_port() {
    let mut b = b();
    up(&mut b, "a.yaml", SVC_A);
    let pod = |n: &str, ip: &str, ready: &str, app: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, labels: {{app: {app}}}}}\nspec:\n  containers: [{{name: c, image: x, ports: [{{name: web, containerPort: 9090}}]}}]\nstatus:\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"{ready}\"}}]\n"
        )
    };
    up(
        &mut b,
        "p.yaml",
        &(pod("p1", "127.0.3.1", "True", "a")
            + &pod("p2", "127.0.3.2", "False", "a")
            + &pod("p3", "127.0.3.3", "True", "b")),
    );
    let s = b.build();
    assert_eq!(
        addrs(&s, "a", 0),
        vec![
            ("127.0.3.1:9090".parse().unwrap(), true),
            ("127.0.3.2:9090".parse().unwrap(), false),
        ]
    );
    // publishNotReadyAddresses: the EndpointSlice controller calls every Pod ready.
    let published = SVC_A.replacen("spec:\n", "spec:\n  publishNotReadyAddresses: true\n", 1);
    up(&mut b, "a.yaml", &published);
    let s = b.build();
    assert!(s.errors.is_empty(), "{published}: {:?}", s.errors);
    assert!(addrs(&s, "a", 0).iter().all(|(_, ready)| *ready));
}

#[test]
fn two_services_claiming_one_address_older_wins() {
    let mut b = b();
    up(
        &mut b,
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: new, creationTimestamp: \"2024-02-01T00:00:00Z\"}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: old, creationTimestamp: \"2023-01-01T00:00:00Z\"}\nspec: {clusterIP: 127.0.0.10, ports: [{port: 80}]}\n",
    );
    let s = b.build();
    assert_eq!(s.frontends.len(), 1);
    assert_eq!(
        &*s.frontends.values().next().unwrap().service.id,
        "default/old"
    );
    assert_eq!(s.errors.len(), 1);
    // Both sides named: objects, fields and files.
    assert_eq!(
        s.errors[0].to_string(),
        "a.yaml: Service default/new: spec.clusterIP: 127.0.0.10:80/TCP is already used by Service default/old (spec.clusterIP in a.yaml); this port is not served"
    );
}

#[test]
fn nodeport_range_and_uniqueness() {
    let mut b = b();
    up(
        &mut b,
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: NodePort, clusterIP: 127.0.0.10, ports: [{port: 80, nodePort: 30080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {type: NodePort, clusterIP: 127.0.0.11, ports: [{port: 80, nodePort: 30080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c}\nspec: {type: NodePort, clusterIP: 127.0.0.12, ports: [{port: 80, nodePort: 80}]}\n",
    );
    let s = b.build();
    let np: Vec<_> = s
        .frontends
        .values()
        .filter(|f| matches!(f.listen, crate::Listen::NodePort(_)))
        .collect();
    assert_eq!(np.len(), 1);
    assert_eq!(s.errors.len(), 2, "{:?}", s.errors);
    assert!(
        s.errors
            .iter()
            .any(|e| e.reason.contains("outside the node port range"))
    );
}

/// The node-port range is an option, yet a Service's range errors come
/// with its others, in field order, as one validation pass gives them.
#[test]
fn a_range_error_is_reported_with_the_other_errors_of_its_service() {
    let mut b = b();
    up(
        &mut b,
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: NodePort, ports: [{port: 0, nodePort: 80}]}\n",
    );
    let errs: Vec<String> = b.build().errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("spec.ports[0].port: 0 is outside 1..65535"),
        "{errs:?}"
    );
    assert!(
        errs[1].contains("spec.ports[0].nodePort: 80 is outside the node port range 30000-32767"),
        "{errs:?}"
    );
}

#[test]
fn health_check_node_ports_are_validated_and_claimed_once() {
    let lb = |name: &str, ip: &str, extra: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer, clusterIP: {ip}, ports: [{{port: 80, nodePort: 30081}}], {extra}}}\n"
        )
    };
    let mut b = b();
    let text = [
        // The one that gets 31000.
        lb(
            "a",
            "127.0.0.10",
            "externalTrafficPolicy: Local, healthCheckNodePort: 31000",
        )
        .replace("30081", "30082"),
        // Same port again: the later Service loses it.
        lb(
            "b",
            "127.0.0.11",
            "externalTrafficPolicy: Local, healthCheckNodePort: 31000",
        )
        .replace("30081", "30083"),
        // Another Service's nodePort.
        lb(
            "c",
            "127.0.0.12",
            "externalTrafficPolicy: Local, healthCheckNodePort: 30082",
        )
        .replace("30081", "30084"),
        // Only for policy Local.
        lb("d", "127.0.0.13", "healthCheckNodePort: 31001").replace("30081", "30085"),
        // Within the node port range.
        lb(
            "e",
            "127.0.0.14",
            "externalTrafficPolicy: Local, healthCheckNodePort: 80",
        )
        .replace("30081", "30086"),
    ]
    .concat();
    up(&mut b, "a.yaml", &text);
    let s = b.build();
    let hc: Vec<_> = s
        .health_checks
        .iter()
        .map(|h| (h.port, h.service.name.as_str()))
        .collect();
    assert_eq!(hc, [(31000, "a")]);
    let errs: Vec<String> = s.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 4, "{errs:?}");
    for want in [
        "Service default/b: spec.healthCheckNodePort: 31000 is already used by Service default/a",
        "Service default/c: spec.healthCheckNodePort: 30082 is Service default/a's nodePort",
        "Service default/d: spec.healthCheckNodePort: may only be set when type is LoadBalancer and externalTrafficPolicy is Local",
        "Service default/e: spec.healthCheckNodePort: 80 is outside the node port range",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{want} not in {errs:?}"
        );
    }
}

#[test]
fn unchanged_services_keep_their_arc() {
    let mut b = b();
    up(&mut b, "a.yaml", SVC_A);
    up(&mut b, "c.yaml", &svc_c("127.0.0.30"));
    let s1 = b.build();
    up(&mut b, "c.yaml", &svc_c("127.0.0.31"));
    let s2 = b.build();
    assert!(Arc::ptr_eq(
        s1.service("default", "a").unwrap(),
        s2.service("default", "a").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        s1.service("default", "c").unwrap(),
        s2.service("default", "c").unwrap()
    ));
    assert_eq!(s2.generation, 2);
}

#[test]
fn headless_and_externalname() {
    let mut b = b();
    up(
        &mut b,
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ExternalName, externalName: www.example.com}\n",
    );
    let s = b.build();
    assert!(s.service("default", "h").unwrap().headless);
    assert_eq!(
        s.service("default", "x").unwrap().external_name.as_deref(),
        Some("www.example.com")
    );
    assert!(s.frontends.is_empty());
    assert!(s.namespaces.contains("default"));
}

#[test]
fn services_of_another_service_proxy_get_no_frontend() {
    let mut b = b();
    up(
        &mut b,
        "a.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: cilium}}\nspec: {clusterIP: 127.0.0.40, ports: [{port: 80}]}\n",
    );
    up(&mut b, "c.yaml", &svc_c("127.0.0.41"));
    let s = b.build();
    assert!(s.service("default", "other").unwrap().proxied_elsewhere);
    let ids: Vec<&str> = s.frontends.values().map(|f| &*f.service.id).collect();
    assert_eq!(ids, vec!["default/c"]);
}

/// Endpoint changes carry the time the endpoints controller says they were
/// triggered, under the generation that carries them; a change that keeps
/// the annotation adds nothing.
#[test]
fn endpoint_change_trigger_times_are_logged_by_generation() {
    let mut b = b();
    let slice = |ip: &str, at: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s-1, labels: {{kubernetes.io/service-name: s}}, annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"{at}\"}}}}\naddressType: IPv4\nports: [{{port: 80}}]\nendpoints:\n- addresses: [{ip}]\n"
        )
    };
    up(
        &mut b,
        "e.yaml",
        &slice("127.0.1.1", "2026-12-04T10:00:00Z"),
    );
    let first = b.build();
    up(
        &mut b,
        "e.yaml",
        &slice("127.0.1.2", "2026-12-04T10:00:00Z"),
    );
    let same = b.build();
    up(
        &mut b,
        "e.yaml",
        &slice("127.0.1.3", "2026-12-04T10:00:01.5Z"),
    );
    let third = b.build();
    let at = |s: &str| std::time::SystemTime::from(s.parse::<jiff::Timestamp>().unwrap());
    assert_eq!(
        *third.trigger_times,
        [
            crate::TriggerTime {
                generation: first.generation,
                at: at("2026-12-04T10:00:00Z")
            },
            crate::TriggerTime {
                generation: third.generation,
                at: at("2026-12-04T10:00:01.5Z")
            },
        ]
    );
    assert!(Arc::ptr_eq(&first.trigger_times, &same.trigger_times));
}

/// As kube-proxy: an Endpoints object mirrors a slice's change, and
/// headless or other proxies' slices are not programmed: none is timed.
#[test]
fn only_proxied_endpointslices_are_timed() {
    let mut b = b();
    let at =
        "annotations: {endpoints.kubernetes.io/last-change-trigger-time: \"2026-12-04T10:00:00Z\"}";
    up(
        &mut b,
        "e.yaml",
        &format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: s, {at}}}\nsubsets: [{{addresses: [{{ip: 127.0.1.1}}], ports: [{{port: 80}}]}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: h-1, labels: {{kubernetes.io/service-name: h, service.kubernetes.io/headless: \"\"}}, {at}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.1.2]}}]\n"
        ),
    );
    assert!(b.build().trigger_times.is_empty());
}
