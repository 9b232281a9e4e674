//! Gateway API semantics, case by case after the upstream conformance
//! suite's HTTPRoute and Gateway tests (our own manifests and tables).

use super::*;
use crate::snapshot::Listen;
use crate::{Builder, CompileOptions, Snapshot};
use std::path::Path;
use std::sync::Arc;

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: nodeway}
spec: {controllerName: nodeway.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: nodeway
  listeners:
  - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: infra}
spec: {clusterIP: None, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: infra}
spec: {clusterIP: None, ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v3, namespace: infra}
spec: {clusterIP: None, ports: [{port: 8080}]}
"#;

fn snap(docs: &str) -> Arc<Snapshot> {
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("base.yaml"), Some(BASE.as_bytes()));
    b.update_file(Path::new("routes.yaml"), Some(docs.as_bytes()));
    b.build()
}

/// An HTTPRoute in `infra` attached to Gateway gw, with the given rules (YAML list items).
fn route(name: &str, hostnames: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{hostnames}]\n  rules:\n{rules}"
    )
}

/// What a request gets on port 80: the Service of the first backend, or
/// `500`/`redirect`, or `404` when no rule matches.
fn get(s: &Snapshot, host: &str, target: &str, method: &str, headers: &[(&str, &str)]) -> String {
    let Some(port) = s.gateway.port(&Listen::NodePort(80)) else {
        return "no port".into();
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let header = |name: &str| {
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let req = RequestFacts {
        host,
        path,
        query,
        method,
        header: &header,
    };
    match port.find(&req).map(|r| &r.action) {
        None => "404".into(),
        Some(RuleAction::Forward(b)) => {
            b[0].backend().map_or("500".into(), |b| b.service.1.clone())
        }
        Some(RuleAction::Redirect(_)) => "redirect".into(),
        Some(RuleAction::Fail(_)) => "500".into(),
    }
}

/// The rule a plain GET of `host` and `path` gets on these listeners.
fn rule_for(port: &PortRoutes, host: &str, path: &str) -> Option<Arc<GatewayRule>> {
    let header = |_: &str| None;
    let req = RequestFacts {
        host,
        path,
        query: None,
        method: "GET",
        header: &header,
    };
    port.find(&req).cloned()
}

/// The Service of a Forward rule's first backend, else the action.
fn first_backend(rule: Option<Arc<GatewayRule>>) -> String {
    match rule.as_deref().map(|r| &r.action) {
        Some(RuleAction::Forward(b)) => b[0].backend().unwrap().service.1.clone(),
        other => format!("{other:?}"),
    }
}

fn backend(svc: &str) -> String {
    format!("    backendRefs: [{{name: {svc}, port: 8080}}]\n")
}

fn errors(s: &Snapshot) -> Vec<String> {
    s.errors.iter().map(|e| e.to_string()).collect()
}

/// Rules with several matches OR them; a header match outranks a bare
/// `/` prefix (conformance: HTTPRouteMatching).
#[test]
fn matches_are_ored_and_ranked() {
    let rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /}}}}, {{headers: [{{name: version, value: one}}]}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /v2}}}}, {{headers: [{{name: version, value: two}}]}}]\n{}",
        backend("v1"),
        backend("v2")
    );
    let s = snap(&route("matching", "", &rules));
    assert_eq!(errors(&s), Vec::<String>::new());
    let cases = [
        ("/", &[][..], "v1"),
        ("/example", &[], "v1"),
        ("/", &[("version", "one")], "v1"),
        ("/v2", &[], "v2"),
        ("/v2/example", &[], "v2"),
        ("/v2example", &[], "v1"),
        ("/", &[("Version", "two")], "v2"),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            get(&s, "example.com", path, "GET", headers),
            want,
            "{path} {headers:?}"
        );
    }
}

/// Exact beats every prefix; the longest prefix wins, segment-wise
/// (conformance: HTTPRoutePathMatchOrder).
#[test]
fn path_match_order() {
    let m = |ty: &str, v: &str, svc: &str| {
        format!(
            "  - matches: [{{path: {{type: {ty}, value: {v}}}}}]\n{}",
            backend(svc)
        )
    };
    let rules = [
        m("Exact", "/match", "v1"),
        m("Exact", "/match/exact", "v2"),
        m("Exact", "/match/exact/one", "v3"),
        m("PathPrefix", "/match/", "v3"),
        m("PathPrefix", "/match/prefix/", "v1"),
        m("PathPrefix", "/match/prefix/one", "v2"),
    ]
    .concat();
    let s = snap(&route("order", "", &rules));
    for (path, want) in [
        ("/match/exact/one", "v3"),
        ("/match/exact", "v2"),
        ("/match", "v1"),
        ("/match/prefix/one/any", "v2"),
        ("/match/prefix/any", "v1"),
        ("/match/any", "v3"),
        ("/matchx", "404"),
        ("/", "404"),
    ] {
        assert_eq!(get(&s, "h", path, "GET", &[]), want, "{path}");
    }
}

/// More header matches win; on a tie the earlier rule does
/// (conformance: HTTPRouteHeaderMatching).
#[test]
fn header_matching() {
    let h = |pairs: &[(&str, &str)], svc: &str| {
        let hs: Vec<String> = pairs
            .iter()
            .map(|(n, v)| format!("{{name: {n}, value: {v}}}"))
            .collect();
        format!(
            "  - matches: [{{headers: [{}]}}]\n{}",
            hs.join(", "),
            backend(svc)
        )
    };
    let rules = [
        h(&[("version", "one")], "v1"),
        h(&[("version", "two")], "v2"),
        h(&[("version", "two"), ("color", "orange")], "v1"),
        format!("  - matches: [{{headers: [{{name: color, value: blue}}]}}, {{headers: [{{name: color, value: green}}]}}]\n{}", backend("v1")),
        format!("  - matches: [{{headers: [{{name: color, value: red}}]}}, {{headers: [{{name: color, value: yellow}}]}}]\n{}", backend("v2")),
    ]
    .concat();
    let s = snap(&route("headers", "", &rules));
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("version", "one")], "v1"),
        (&[("version", "two")], "v2"),
        (&[("version", "two"), ("color", "orange")], "v1"),
        (&[("version", "two"), ("color", "blue")], "v2"),
        (&[("color", "orange")], "404"),
        (&[("Some-Other-Header", "one")], "404"),
        (&[("color", "green")], "v1"),
        (&[("color", "yellow")], "v2"),
        (&[("color", "purple")], "404"),
    ];
    for (headers, want) in cases {
        assert_eq!(get(&s, "h", "/", "GET", headers), want, "{headers:?}");
    }
}

/// Query parameters (case-sensitive, first value), methods, and their
/// rank below path length and above nothing (conformance:
/// HTTPRouteQueryParamMatching, HTTPRouteMethodMatching).
#[test]
fn query_and_method() {
    let rules = format!(
        "  - matches: [{{queryParams: [{{name: animal, value: whale}}]}}]\n{}  - matches: [{{queryParams: [{{name: animal, value: dolphin}}]}}]\n{}  - matches: [{{queryParams: [{{name: animal, value: dolphin}}, {{name: color, value: blue}}]}}, {{queryParams: [{{name: ANIMAL, value: Whale}}]}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /path5}}}}]\n{}  - matches: [{{method: POST, path: {{type: PathPrefix, value: /m}}}}]\n{}",
        backend("v1"),
        backend("v2"),
        backend("v3"),
        backend("v1"),
        backend("v2")
    );
    let s = snap(&route("query", "", &rules));
    for (target, method, want) in [
        ("/?animal=whale", "GET", "v1"),
        ("/?animal=dolphin", "GET", "v2"),
        ("/?animal=dolphin&color=blue", "GET", "v3"),
        ("/?ANIMAL=Whale", "GET", "v3"),
        ("/?animal=whale&otherparam=irrelevant", "GET", "v1"),
        ("/?animal=dolphin&color=yellow", "GET", "v2"),
        ("/?color=blue", "GET", "404"),
        ("/?animal=whaledolphin", "GET", "404"),
        ("/?animal=whale&animal=dolphin", "GET", "v1"),
        ("/path5?animal=dolphin", "GET", "v1"),
        ("/m", "POST", "v2"),
        ("/m", "GET", "404"),
    ] {
        assert_eq!(get(&s, "h", target, method, &[]), want, "{method} {target}");
    }
}

/// A listener's hostname narrows the routes' (conformance:
/// HTTPRouteHostnameIntersection, HTTPRouteListenerHostnameMatching).
#[test]
fn hostnames_and_listener_isolation() {
    let gateway = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: hosts, namespace: infra}
spec:
  gatewayClassName: nodeway
  addresses: [{value: 127.0.0.9}]
  listeners:
  - {name: exact, protocol: HTTP, port: 80, hostname: very.specific.com}
  - {name: wild, protocol: HTTP, port: 80, hostname: "*.wildcard.io"}
  - {name: any, protocol: HTTP, port: 80}
"#;
    let attach = |name: &str, section: &str, hosts: &str, svc: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: [{{name: hosts, sectionName: {section}}}]\n  hostnames: [{hosts}]\n  rules:\n  - {}",
            backend(svc).trim_start()
        )
    };
    let docs = [
        gateway.to_string(),
        attach("a", "exact", "non.matching.com, very.specific.com", "v1"),
        attach("b", "wild", "wildcard.io, foo.wildcard.io", "v2"),
        attach("c", "wild", "\"*.wildcard.io\"", "v3"),
        attach("d", "any", "", "v1"),
        attach("e", "exact", "specific.but.wrong.com", "v2"),
    ]
    .concat();
    let s = snap(&docs);
    assert_eq!(errors(&s), Vec::<String>::new());
    let port = s
        .gateway
        .port(&Listen::Addr("127.0.0.9:80".parse().unwrap()))
        .expect("served");
    let who = |host: &str| first_backend(rule_for(port, host, "/"));
    assert_eq!(who("very.specific.com"), "v1");
    assert_eq!(who("very.specific.com:1234"), "v1");
    assert_eq!(who("foo.wildcard.io"), "v2");
    assert_eq!(who("bar.foo.wildcard.io"), "v3");
    // The wildcard listener takes it; its routes do not fall back to the
    // host-less listener's.
    assert_eq!(who("wildcard.io"), "v1");
    assert_eq!(who("non.matching.com"), "v1");
    let e = s
        .gateway
        .status()
        .routes
        .iter()
        .find(|r| r.key.name == "e")
        .unwrap();
    assert_eq!(
        e.parents[0].conditions[0].reason,
        "NoMatchingListenerHostname"
    );
    let exact = port.listener("very.specific.com").unwrap();
    assert_eq!(&*exact.name, "exact");
}

fn parent_reasons(s: &Snapshot, route: &str) -> Vec<(&'static str, bool, &'static str)> {
    let r = s
        .gateway
        .status()
        .routes
        .iter()
        .find(|r| r.key.name == route)
        .expect("a route status");
    r.parents[0]
        .conditions
        .iter()
        .map(|c| (c.kind, c.status, c.reason))
        .collect()
}

/// Backends that do not resolve: the rule answers 500 and the route says
/// why; a ReferenceGrant allows a Service in another namespace.
#[test]
fn backend_refs_resolution() {
    let in_ns = |ns: &str, name: &str, backend: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n  hostnames: [{name}.example]\n  rules:\n  - backendRefs: [{backend}]\n"
        )
    };
    let grant = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-app, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]
  to: [{group: "", kind: Service, name: v1}]
"#;
    let docs = [
        in_ns("infra", "missing", "{name: nope, port: 8080}"),
        in_ns("infra", "badport", "{name: v1, port: 81}"),
        in_ns(
            "infra",
            "kind",
            "{group: example.com, kind: Bucket, name: b}",
        ),
        in_ns("web", "nogrant", "{name: v1, namespace: infra, port: 8080}"),
        in_ns("app", "granted", "{name: v1, namespace: infra, port: 8080}"),
        in_ns(
            "app",
            "notnamed",
            "{name: v2, namespace: infra, port: 8080}",
        ),
        in_ns(
            "infra",
            "weights",
            "{name: v1, port: 8080, weight: 0}, {name: v2, port: 8080, weight: 0}",
        ),
        grant.to_string(),
    ]
    .concat();
    let s = snap(&docs);
    assert_eq!(errors(&s), Vec::<String>::new());
    for (route, reason) in [
        ("missing", "BackendNotFound"),
        ("badport", "BackendNotFound"),
        ("kind", "InvalidKind"),
        ("nogrant", "RefNotPermitted"),
        ("notnamed", "RefNotPermitted"),
    ] {
        assert_eq!(
            parent_reasons(&s, route),
            [
                ("Accepted", true, "Accepted"),
                ("ResolvedRefs", false, reason)
            ],
            "{route}"
        );
        assert_eq!(
            get(&s, &format!("{route}.example"), "/", "GET", &[]),
            "500",
            "{route}"
        );
    }
    assert_eq!(
        parent_reasons(&s, "granted")[1],
        ("ResolvedRefs", true, "ResolvedRefs")
    );
    assert_eq!(get(&s, "granted.example", "/", "GET", &[]), "v1");
    // All weights zero: 500, though every reference resolves.
    assert_eq!(
        parent_reasons(&s, "weights")[1],
        ("ResolvedRefs", true, "ResolvedRefs")
    );
    assert_eq!(get(&s, "weights.example", "/", "GET", &[]), "500");
}

/// Rules without backendRefs answer 500; an ExtensionRef filter is not
/// skipped: its rule answers 500 too; a redirect needs no backend.
#[test]
fn rules_that_answer_themselves() {
    let rules = "  - matches: [{path: {value: /none}}]\n  - matches: [{path: {value: /ext}}]\n    filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Magic, name: m}}]\n    backendRefs: [{name: v1, port: 8080}]\n  - matches: [{path: {value: /moved}}]\n    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, statusCode: 301}}]\n";
    let s = snap(&route("self", "", rules));
    assert_eq!(errors(&s), Vec::<String>::new());
    assert_eq!(get(&s, "h", "/none", "GET", &[]), "500");
    assert_eq!(get(&s, "h", "/ext", "GET", &[]), "500");
    assert_eq!(get(&s, "h", "/moved/x", "GET", &[]), "redirect");
}

/// parentRefs a listener refuses: by namespace, by sectionName/port,
/// by kind; the listener's attachedRoutes counts only accepted routes.
#[test]
fn attachment_conditions() {
    let gw = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same, namespace: infra}
spec:
  gatewayClassName: nodeway
  addresses: [{value: 127.0.0.10}]
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: tls-only, protocol: HTTP, port: 81, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}
"#;
    let r = |ns: &str, name: &str, parent: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{{name: v1, namespace: infra, port: 8080}}]}}]\n"
        )
    };
    let docs = [
        gw.to_string(),
        r("infra", "ok", "{name: same}"),
        r("web", "other-ns", "{name: same, namespace: infra}"),
        r("infra", "wrong-section", "{name: same, sectionName: nope}"),
        r("infra", "wrong-port", "{name: same, port: 8080}"),
        r("infra", "wrong-kind", "{name: same, sectionName: tls-only}"),
    ]
    .concat();
    let s = snap(&docs);
    for (route, reason) in [
        ("other-ns", "NotAllowedByListeners"),
        ("wrong-section", "NoMatchingParent"),
        ("wrong-port", "NoMatchingParent"),
        ("wrong-kind", "NotAllowedByListeners"),
    ] {
        assert_eq!(
            parent_reasons(&s, route)[0],
            ("Accepted", false, reason),
            "{route}"
        );
    }
    assert_eq!(parent_reasons(&s, "ok")[0], ("Accepted", true, "Accepted"));
    let g = s
        .gateway
        .status()
        .gateways
        .iter()
        .find(|g| g.object.key.name == "same")
        .unwrap();
    assert_eq!(g.listeners[0].attached_routes, 1);
    assert_eq!(g.listeners[1].attached_routes, 0);
    assert!(g.listeners[1].supported_kinds.is_empty());
    let resolved = g.listeners[1]
        .conditions
        .iter()
        .find(|c| c.kind == "ResolvedRefs")
        .unwrap();
    assert_eq!(
        (resolved.status, resolved.reason),
        (false, "InvalidRouteKinds")
    );
}

/// Listener conditions: protocols nodeway does not serve, conflicts (no
/// listener of a conflicting set wins), an HTTPS certificate that is
/// missing; the Gateway is Accepted with ListenersNotValid while one
/// listener still works. Gateways of other classes get no status.
#[test]
fn listener_conditions() {
    let gw = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: mixed, namespace: infra}
spec:
  gatewayClassName: nodeway
  addresses: [{value: 127.0.0.11}]
  listeners:
  - {name: ok, protocol: HTTP, port: 80}
  - {name: tcp, protocol: TCP, port: 9000}
  - {name: a, protocol: HTTP, port: 8080, hostname: a.example}
  - {name: b, protocol: HTTPS, port: 8080, tls: {certificateRefs: [{name: cert}]}}
  - {name: c, protocol: HTTP, port: 8081, hostname: c.example}
  - {name: d, protocol: HTTP, port: 8081, hostname: c.example}
  - {name: nocert, protocol: HTTPS, port: 8443, tls: {certificateRefs: [{name: missing}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: infra}
spec:
  gatewayClassName: other
  listeners: [{name: http, protocol: HTTP, port: 80}]
"#;
    let attach = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: everywhere, namespace: infra}\nspec:\n  parentRefs: [{name: mixed}]\n  rules: [{backendRefs: [{name: v1, port: 8080}]}]\n";
    let s = snap(&format!("{gw}{attach}"));
    assert_eq!(errors(&s), Vec::<String>::new());
    let st = s.gateway.status();
    let names: Vec<&str> = st
        .gateways
        .iter()
        .map(|g| g.object.key.name.as_str())
        .collect();
    assert_eq!(names, ["gw", "mixed"], "only Gateways of our classes");
    let warnings: Vec<String> = s.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.contains(&"routes.yaml: Gateway infra/theirs: GatewayClass other is example.com/other's, not nodeway's: not served".to_string()),
        "{warnings:?}"
    );
    assert_eq!(st.classes.len(), 1);
    let g = &st.gateways[1];
    let reasons: Vec<(&str, bool, &str)> = g
        .object
        .conditions
        .iter()
        .map(|c| (c.kind, c.status, c.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("Accepted", true, "ListenersNotValid"),
            ("Programmed", true, "Programmed")
        ]
    );
    let cond = |listener: &str, kind: &str| {
        let l = g.listeners.iter().find(|l| l.name == listener).unwrap();
        let c = l.conditions.iter().find(|c| c.kind == kind).unwrap();
        (c.status, c.reason)
    };
    assert_eq!(cond("ok", "Programmed"), (true, "Programmed"));
    assert_eq!(cond("tcp", "Accepted"), (false, "UnsupportedProtocol"));
    assert_eq!(cond("a", "Conflicted"), (true, "ProtocolConflict"));
    assert_eq!(cond("b", "Conflicted"), (true, "ProtocolConflict"));
    assert_eq!(cond("c", "Conflicted"), (true, "HostnameConflict"));
    assert_eq!(cond("d", "Conflicted"), (true, "HostnameConflict"));
    assert_eq!(
        cond("nocert", "ResolvedRefs"),
        (false, "InvalidCertificateRef")
    );
    assert_eq!(cond("nocert", "Programmed"), (false, "Invalid"));
    // Routes count on accepted listeners only, unresolved references or not.
    let attached: Vec<(&str, usize)> = g
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(
        attached,
        [
            ("ok", 1),
            ("tcp", 0),
            ("a", 0),
            ("b", 0),
            ("c", 0),
            ("d", 0),
            ("nocert", 1)
        ]
    );
    let served: Vec<String> = s.gateway.ports().map(|(l, _)| format!("{l:?}")).collect();
    assert_eq!(served, ["Addr(127.0.0.11:80)", "NodePort(80)"]);
}

/// What the API server would refuse is an error naming the field, and
/// the object keeps no version (others still compile).
#[test]
fn validation_names_the_field() {
    let rules = "  - matches: [{path: {type: PathPrefix, value: relative}}]\n    backendRefs: [{name: v1}]\n  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]\n";
    let s = snap(&format!(
        "{}{}",
        route("bad", "", rules),
        route("good", "", "  - backendRefs: [{name: v1, port: 8080}]\n")
    ));
    let errs = errors(&s);
    for field in [
        "spec.rules[0].matches[0].path.value",
        "spec.rules[0].backendRefs[0].port",
        "spec.rules[1].filters[0].requestRedirect.statusCode",
    ] {
        assert!(
            errs.iter()
                .any(|e| e.contains("HTTPRoute infra/bad") && e.contains(field)),
            "{field}: {errs:?}"
        );
    }
    assert_eq!(get(&s, "h", "/", "GET", &[]), "v1");
    let bad_type = route(
        "badtype",
        "",
        "  - matches: [{path: {type: Glob, value: /}}]\n",
    );
    let errs = errors(&snap(&bad_type));
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.rules[0].matches[0].path.type")),
        "{errs:?}"
    );
}

/// HTTPS listeners: a certificate from the Gateway's namespace, or from
/// another one only with a ReferenceGrant; the SNI name picks the
/// listener, and so the certificate.
#[test]
fn https_certificates() {
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let secret = |ns: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: {ns}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
            indent(include_str!("../ingress/testdata/cert.pem")),
            indent(include_str!("../ingress/testdata/key.pem"))
        )
    };
    let gw = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: infra}
spec:
  gatewayClassName: nodeway
  addresses: [{value: 127.0.0.12}]
  listeners:
  - {name: own, protocol: HTTPS, port: 443, hostname: a.example, tls: {certificateRefs: [{name: cert}]}}
  - {name: other, protocol: HTTPS, port: 443, hostname: b.example, tls: {certificateRefs: [{name: cert, namespace: certs}]}}
  - {name: granted, protocol: HTTPS, port: 443, hostname: c.example, tls: {certificateRefs: [{name: cert, namespace: shared}]}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: infra-gateways, namespace: shared}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret}]
"#;
    let s = snap(
        &[
            secret("infra"),
            secret("certs"),
            secret("shared"),
            gw.to_string(),
        ]
        .concat(),
    );
    assert_eq!(errors(&s), Vec::<String>::new());
    let g = s
        .gateway
        .status()
        .gateways
        .iter()
        .find(|g| g.object.key.name == "tls")
        .unwrap();
    let cond = |listener: &str, kind: &str| {
        let l = g.listeners.iter().find(|l| l.name == listener).unwrap();
        let c = l.conditions.iter().find(|c| c.kind == kind).unwrap();
        (c.status, c.reason)
    };
    assert_eq!(cond("own", "ResolvedRefs"), (true, "ResolvedRefs"));
    assert_eq!(cond("own", "Programmed"), (true, "Programmed"));
    assert_eq!(cond("other", "ResolvedRefs"), (false, "RefNotPermitted"));
    assert_eq!(cond("granted", "ResolvedRefs"), (true, "ResolvedRefs"));
    let port = s
        .gateway
        .port(&Listen::Addr("127.0.0.12:443".parse().unwrap()))
        .unwrap();
    assert!(port.tls);
    let secret = |sni: Option<&str>| port.cert_for(sni).map(|c| c.secret.to_string());
    assert_eq!(secret(Some("a.example")), Some("infra/cert".into()));
    assert_eq!(secret(Some("c.example")), Some("shared/cert".into()));
    // b.example's listener is not served (its certificate is refused).
    assert_eq!(secret(Some("b.example")), None);
    assert_eq!(secret(None), None);
}

/// Weighted backends in proportion, weight 0 never, an unresolved
/// backend's share unanswered (the caller gives it 500).
#[test]
fn weighted_pick() {
    let s = snap(&route(
        "w",
        "",
        "  - backendRefs: [{name: v1, port: 8080, weight: 3}, {name: nope, port: 8080, weight: 1}, {name: v2, port: 8080, weight: 0}]\n",
    ));
    let port = s.gateway.port(&Listen::NodePort(80)).unwrap();
    let rule = rule_for(port, "h", "/").unwrap();
    let RuleAction::Forward(backends) = &rule.action else {
        panic!("a Forward rule")
    };
    let picks: Vec<String> = (0..8)
        .map(|t| {
            RuleAction::pick(backends, t).map_or("500".into(), |r| {
                r.backend.as_ref().unwrap().service.1.clone()
            })
        })
        .collect();
    // 3:1 in every 4, interleaved.
    assert_eq!(picks, ["v1", "500", "v1", "v1", "v1", "500", "v1", "v1"]);
}

/// An HTTPRoute and an Ingress claiming the same host and path: a
/// warning on the HTTPRoute (where they share a listener it wins).
#[test]
fn overlap_with_an_ingress_is_a_warning() {
    let ingress = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy, namespace: infra}
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /cart/, pathType: Prefix, backend: {service: {name: v1, port: {number: 8080}}}}
      - {path: /other, pathType: Prefix, backend: {service: {name: v1, port: {number: 8080}}}}
"#;
    let rules = "  - matches: [{path: {value: /cart}}, {path: {type: Exact, value: /other}}]\n    backendRefs: [{name: v2, port: 8080}]\n";
    let s = snap(&format!("{ingress}{}", route("new", "shop.example", rules)));
    let warnings: Vec<String> = s.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "routes.yaml: HTTPRoute infra/new: shop.example/cart is also claimed by Ingress infra/legacy; on a listener both serve, the HTTPRoute wins"
        ]
    );
}

/// A pattern that compiles alone but not anchored (`(?x)` makes `#` a
/// comment that would swallow the anchors) is refused at validation, so
/// compiling never fails; dotted listener names are valid section names;
/// `0.0.0.0` is not an address a Gateway can be served at.
#[test]
fn regexes_listener_names_and_addresses() {
    let s = snap(&route(
        "re",
        "",
        "  - matches: [{path: {type: RegularExpression, value: \"(?x)foo#\"}}]\n    backendRefs: [{name: v1, port: 8080}]\n",
    ));
    let errs = errors(&s);
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.rules[0].matches[0].path.value")),
        "{errs:?}"
    );
    let gw = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: odd, namespace: infra}
spec:
  gatewayClassName: nodeway
  addresses: [{value: 0.0.0.0}]
  listeners: [{name: http.example, protocol: HTTP, port: 80}]
"#;
    let s = snap(gw);
    assert_eq!(errors(&s), Vec::<String>::new());
    let g = s
        .gateway
        .status()
        .gateways
        .iter()
        .find(|g| g.object.key.name == "odd")
        .unwrap();
    assert_eq!(g.object.conditions[0].reason, "UnsupportedAddress");
}

/// On a listener with a hostname, a route that names no hostname ranks
/// with one that names the listener's: by path (Exact first), not after it.
#[test]
fn routes_without_hostnames_rank_by_path_on_a_named_listener() {
    let gw = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: named, namespace: infra}
spec:
  gatewayClassName: nodeway
  addresses: [{value: 127.0.0.13}]
  listeners: [{name: foo, protocol: HTTP, port: 80, hostname: foo.example.com}]
"#;
    let r = |name: &str, hosts: &str, path: &str, svc: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  parentRefs: [{{name: named}}]\n  hostnames: [{hosts}]\n  rules: [{{matches: [{path}], backendRefs: [{{name: {svc}, port: 8080}}]}}]\n"
        )
    };
    let s = snap(
        &[
            gw.to_string(),
            r("a", "", "{path: {type: Exact, value: /login}}", "v1"),
            r("b", "foo.example.com", "{path: {value: /}}", "v2"),
        ]
        .concat(),
    );
    let port = s
        .gateway
        .port(&Listen::Addr("127.0.0.13:80".parse().unwrap()))
        .unwrap();
    let pick = |path: &str| first_backend(rule_for(port, "foo.example.com", path));
    assert_eq!(pick("/login"), "v1");
    assert_eq!(pick("/other"), "v2");
}

/// RequestMirror's share: percent or fraction (all when neither), one of
/// them at most, in range.
#[test]
fn mirror_share() {
    let rule = |mirror: &str| {
        format!(
            "  - filters: [{{type: RequestMirror, requestMirror: {{backendRef: {{name: v2, port: 8080}}{mirror}}}}}]\n    backendRefs: [{{name: v1, port: 8080}}]\n"
        )
    };
    let taken = |mirror: &str| {
        let s = snap(&route("m", "", &rule(mirror)));
        let port = s.gateway.port(&Listen::NodePort(80)).unwrap();
        let rule = rule_for(port, "h", "/").unwrap();
        let m = &rule.filters.mirrors[0];
        let taken: Vec<usize> = (0..100).filter(|t| m.takes(*t)).collect();
        // Copies are numbered 0, 1, 2, ... (they go round the endpoints).
        let numbers: Vec<usize> = taken.iter().map(|t| m.copy_number(*t)).collect();
        assert_eq!(numbers, (0..taken.len()).collect::<Vec<_>>());
        taken.len()
    };
    assert_eq!(taken(""), 100);
    assert_eq!(taken(", percent: 30"), 30);
    assert_eq!(taken(", fraction: {numerator: 1, denominator: 5}"), 20);
    for bad in [
        ", percent: 130",
        ", percent: 10, fraction: {numerator: 1}",
        ", fraction: {numerator: 3, denominator: 2}",
    ] {
        let errs = errors(&snap(&route("m", "", &rule(bad))));
        assert!(
            errs.iter().any(|e| e.contains("requestMirror")),
            "{bad}: {errs:?}"
        );
    }
}

/// A route that turns bad keeps its last good version (served, and the
/// error names the field); an unknown filter type is such an error.
#[test]
fn a_bad_change_keeps_the_last_good_route() {
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("base.yaml"), Some(BASE.as_bytes()));
    let good = route("r", "", "  - backendRefs: [{name: v1, port: 8080}]\n");
    b.update_file(Path::new("routes.yaml"), Some(good.as_bytes()));
    assert_eq!(get(&b.build(), "h", "/", "GET", &[]), "v1");
    let bad = route(
        "r",
        "",
        "  - filters: [{type: Magic}]\n    backendRefs: [{name: v2, port: 8080}]\n",
    );
    b.update_file(Path::new("routes.yaml"), Some(bad.as_bytes()));
    let s = b.build();
    assert_eq!(get(&s, "h", "/", "GET", &[]), "v1");
    let errs = errors(&s);
    assert!(
        errs.iter().any(
            |e| e.contains("HTTPRoute infra/r: spec.rules[0].filters[0]")
                && e.contains("unknown variant `Magic`")
        ),
        "{errs:?}"
    );
}

/// Paths are compared percent-decoded (as requests are normalized), and
/// a Host with a trailing dot or a port is the same host.
#[test]
fn encoded_paths_and_host_forms() {
    let rules = "  - matches: [{path: {type: Exact, value: /a%20b}}]\n    backendRefs: [{name: v1, port: 8080}]\n";
    let s = snap(&route("enc", "shop.example", rules));
    assert_eq!(errors(&s), Vec::<String>::new());
    assert_eq!(get(&s, "shop.example", "/a b", "GET", &[]), "v1");
    assert_eq!(get(&s, "Shop.Example.", "/a b", "GET", &[]), "v1");
    assert_eq!(get(&s, "shop.example:8080", "/a b", "GET", &[]), "v1");
    let errs = errors(&snap(&route(
        "dots",
        "",
        "  - matches: [{path: {value: /a/%2e%2e/b}}]\n",
    )));
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.rules[0].matches[0].path.value")),
        "{errs:?}"
    );
}

/// A status-only update (a new resourceVersion and status, as a status
/// write makes) leaves the objects equal: the Gateway table is not rebuilt.
#[test]
fn a_status_only_update_costs_no_recompile() {
    let mut b = Builder::new(CompileOptions::default());
    b.update_file(Path::new("base.yaml"), Some(BASE.as_bytes()));
    let with = |rv: &str, status: &str| {
        route("r", "", "  - backendRefs: [{name: v1, port: 8080}]\n").replace(
            "namespace: infra}",
            &format!("namespace: infra, resourceVersion: \"{rv}\"}}"),
        ) + status
    };
    b.update_file(Path::new("routes.yaml"), Some(with("1", "").as_bytes()));
    let before = b.build();
    let status = "status: {parents: [{controllerName: nodeway.io/gateway-controller, parentRef: {name: gw}, conditions: []}]}\n";
    b.update_file(Path::new("routes.yaml"), Some(with("2", status).as_bytes()));
    let after = b.build();
    assert!(Arc::ptr_eq(&before.gateway, &after.gateway));
    assert_eq!(get(&after, "h", "/", "GET", &[]), "v1");
}
