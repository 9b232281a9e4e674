//! Ingress semantics: the Kubernetes path-matching table, hosts, precedence,
//! classes, validation, annotations and normalization.

use super::path::*;
use super::*;
use crate::{Builder, CompileOptions, Snapshot};
use std::path::Path;
use std::sync::Arc;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 127.0.10.1
  ports: [{name: http, port: 80, targetPort: 8080}, {name: admin, port: 81}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec:
  clusterIP: 127.0.10.2
  ports: [{name: http, port: 80}]
"#;

fn snap_with(opts: CompileOptions, docs: &str) -> Arc<Snapshot> {
    let mut b = Builder::new(opts);
    b.update_file(Path::new("svc.yaml"), Some(SERVICES.as_bytes()));
    b.update_file(Path::new("ing.yaml"), Some(docs.as_bytes()));
    b.build()
}

fn snap(docs: &str) -> Arc<Snapshot> {
    snap_with(CompileOptions::default(), docs)
}

/// An Ingress with the given (pathType, path) rules for one host.
fn ingress(name: &str, host: Option<&str>, paths: &[(&str, &str)], extra_meta: &str) -> String {
    let mut s = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{extra_meta}spec:\n  rules:\n  - "
    );
    if let Some(h) = host {
        s.push_str(&format!("host: \"{h}\"\n    "));
    }
    s.push_str("http:\n      paths:\n");
    for (ty, p) in paths {
        s.push_str(&format!(
            "      - {{pathType: {ty}, path: \"{p}\", backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        ));
    }
    s
}

/// (path as written, kind) of the route a request picks, or None.
fn pick(s: &Snapshot, host: &str, path: &str) -> Option<(String, PathKind)> {
    s.ingress
        .find(host, path)
        .map(|r| (r.path.to_string(), r.kind))
}

/// (rules, request, expected match).
type Row<'a> = (
    &'a [(&'a str, &'a str)],
    &'a str,
    Option<(&'a str, PathKind)>,
);

#[test]
fn kubernetes_path_matching_table() {
    use PathKind::*;
    // Every row of the path-matching table in the Ingress docs, and then some.
    let rows: &[Row<'_>] = &[
        (&[("Prefix", "/")], "/anything/at/all", Some(("/", Prefix))),
        (&[("Exact", "/foo")], "/foo", Some(("/foo", Exact))),
        (&[("Exact", "/foo")], "/bar", None),
        (&[("Exact", "/foo")], "/foo/", None),
        (&[("Exact", "/foo/")], "/foo", None),
        (&[("Prefix", "/foo")], "/foo", Some(("/foo", Prefix))),
        (&[("Prefix", "/foo")], "/foo/", Some(("/foo", Prefix))),
        (&[("Prefix", "/foo/")], "/foo", Some(("/foo/", Prefix))),
        (&[("Prefix", "/foo/")], "/foo/", Some(("/foo/", Prefix))),
        (&[("Prefix", "/aaa/bb")], "/aaa/bbb", None),
        (
            &[("Prefix", "/aaa/bbb")],
            "/aaa/bbb",
            Some(("/aaa/bbb", Prefix)),
        ),
        (
            &[("Prefix", "/aaa/bbb/")],
            "/aaa/bbb",
            Some(("/aaa/bbb/", Prefix)),
        ),
        (
            &[("Prefix", "/aaa/bbb")],
            "/aaa/bbb/",
            Some(("/aaa/bbb", Prefix)),
        ),
        (
            &[("Prefix", "/aaa/bbb")],
            "/aaa/bbb/ccc",
            Some(("/aaa/bbb", Prefix)),
        ),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa")],
            "/aaa/ccc",
            Some(("/aaa", Prefix)),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            "/aaa/bbb",
            Some(("/aaa/bbb", Prefix)),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            "/ccc",
            Some(("/", Prefix)),
        ),
        (&[("Prefix", "/aaa")], "/ccc", None),
        (
            &[("Prefix", "/foo"), ("Exact", "/foo")],
            "/foo",
            Some(("/foo", Exact)),
        ),
        (
            &[("ImplementationSpecific", "/foo")],
            "/foo/bar",
            Some(("/foo", Prefix)),
        ),
        (&[("ImplementationSpecific", "/foo")], "/foobar", None),
    ];
    for (i, (rules, req, want)) in rows.iter().enumerate() {
        let s = snap(&ingress("t", Some("x.com"), rules, ""));
        assert!(s.errors.is_empty(), "row {i}: {:?}", s.errors);
        let got = pick(&s, "x.com", req);
        let want = want.map(|(p, k)| (p.to_string(), k));
        assert_eq!(got, want, "row {i}: rules {rules:?} request {req}");
    }
}

#[test]
fn trailing_slash_rule_beats_plain_and_query_is_not_part() {
    let s = snap(&ingress(
        "t",
        Some("x.com"),
        &[("Prefix", "/foo"), ("Prefix", "/foo/")],
        "",
    ));
    assert_eq!(pick(&s, "x.com", "/foo/bar").unwrap().0, "/foo/");
    assert_eq!(pick(&s, "x.com", "/foo/").unwrap().0, "/foo/");
    // As ingress-nginx orders them (longest first): `/foo` keeps `/foo`
    // itself, and a warning names both.
    assert_eq!(pick(&s, "x.com", "/foo").unwrap().0, "/foo");
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0].message.contains(
            "Prefix paths \"/foo/\" (Ingress default/t) and \"/foo\" (Ingress default/t) differ only by a trailing slash"
        ),
        "{}",
        s.warnings[0]
    );
    // Either order of definition.
    let s = snap(&ingress(
        "t",
        Some("x.com"),
        &[("Prefix", "/foo/"), ("Prefix", "/foo")],
        "",
    ));
    assert_eq!(pick(&s, "x.com", "/foo").unwrap().0, "/foo");
    assert_eq!(pick(&s, "x.com", "/foo/x").unwrap().0, "/foo/");
    // Exact is case-sensitive; Prefix too.
    let s = snap(&ingress("t", Some("x.com"), &[("Exact", "/Foo")], ""));
    assert!(pick(&s, "x.com", "/foo").is_none());
    assert!(pick(&s, "x.com", "/Foo").is_some());
}

#[test]
fn hosts_exact_beats_wildcard_beats_hostless() {
    let docs = ingress("a", Some("foo.bar.com"), &[("Prefix", "/exact")], "")
        + &ingress("b", Some("*.bar.com"), &[("Prefix", "/wild")], "")
        + &ingress("c", None, &[("Prefix", "/any")], "");
    let s = snap(&docs);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(pick(&s, "foo.bar.com", "/exact").unwrap().0, "/exact");
    assert_eq!(pick(&s, "FOO.Bar.com:8080", "/exact").unwrap().0, "/exact");
    assert_eq!(pick(&s, "foo.bar.com.", "/exact").unwrap().0, "/exact");
    // The exact host's table is used alone: no fall-through to the wildcard.
    assert!(pick(&s, "foo.bar.com", "/wild").is_none());
    assert_eq!(pick(&s, "baz.bar.com", "/wild").unwrap().0, "/wild");
    // A wildcard covers exactly one label.
    assert!(pick(&s, "a.b.bar.com", "/wild").is_none());
    assert!(pick(&s, "bar.com", "/wild").is_none());
    assert_eq!(pick(&s, "bar.com", "/any").unwrap().0, "/any");
    assert_eq!(pick(&s, "127.0.0.1:80", "/any").unwrap().0, "/any");
    assert_eq!(pick(&s, "[::1]:80", "/any").unwrap().0, "/any");
    // `check` lists routes sorted by host.
    let hosts: Vec<String> = s.ingress.routes().map(|r| r.host.to_string()).collect();
    assert_eq!(hosts, vec!["", "*.bar.com", "foo.bar.com"]);
}

#[test]
fn oldest_ingress_wins_then_namespace_name() {
    let older = "  creationTimestamp: \"2020-01-01T00:00:00Z\"\n";
    let newer = "  creationTimestamp: \"2024-01-01T00:00:00Z\"\n";
    let docs = ingress("zz-old", Some("x.com"), &[("Prefix", "/p")], older)
        + &ingress("aa-new", Some("x.com"), &[("Prefix", "/p")], newer);
    let s = snap(&docs);
    assert_eq!(
        &*s.ingress.find("x.com", "/p").unwrap().ingress,
        "default/zz-old"
    );
    assert!(s.warnings.iter().any(|w| {
        w.message
            .contains("already routed by Ingress default/zz-old")
    }));
    // Same age: namespace/name decides.
    let docs = ingress("bb", Some("x.com"), &[("Prefix", "/p")], older)
        + &ingress("aa", Some("x.com"), &[("Prefix", "/p")], older);
    let s = snap(&docs);
    assert_eq!(
        &*s.ingress.find("x.com", "/p").unwrap().ingress,
        "default/aa"
    );
    // A younger Ingress's longer path still wins on length.
    let docs = ingress("old", Some("x.com"), &[("Prefix", "/p")], older)
        + &ingress("new", Some("x.com"), &[("Prefix", "/p/q")], newer);
    let s = snap(&docs);
    assert_eq!(
        &*s.ingress.find("x.com", "/p/q/r").unwrap().ingress,
        "default/new"
    );
}

#[test]
fn default_backend_catches_everything_unmatched() {
    let docs = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: def}
spec:
  defaultBackend: {service: {name: other, port: {name: http}}}
"#
    .to_string()
        + &ingress("r", Some("x.com"), &[("Exact", "/e")], "");
    let s = snap(&docs);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let r = s.ingress.find("unknown.host", "/zzz").unwrap();
    assert_eq!(&*r.ingress, "default/def");
    let b = r.backend.as_ref().unwrap();
    assert_eq!(b.service, ("default".to_string(), "other".to_string()));
    assert_eq!(&*b.key, "default/other:80");
    assert_eq!(
        &*s.ingress.find("x.com", "/nope").unwrap().ingress,
        "default/def"
    );
    assert_eq!(
        &*s.ingress.find("x.com", "/e").unwrap().ingress,
        "default/r"
    );
}

#[test]
fn backend_port_by_name_and_a_missing_service_or_port_is_a_warning() {
    let docs = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: byname}
spec:
  rules:
  - host: x.com
    http:
      paths:
      - {pathType: Prefix, path: /a, backend: {service: {name: web, port: {name: admin}}}}
      - {pathType: Prefix, path: /b, backend: {service: {name: ghost, port: {number: 80}}}}
      - {pathType: Prefix, path: /c, backend: {service: {name: web, port: {number: 99}}}}
"#;
    let s = snap(docs);
    let a = s
        .ingress
        .find("x.com", "/a")
        .unwrap()
        .backend
        .clone()
        .unwrap();
    assert_eq!(a.port, 1);
    assert!(s.ingress.find("x.com", "/b").unwrap().backend.is_none());
    assert!(s.ingress.find("x.com", "/c").unwrap().backend.is_none());
    // The API server accepts dangling references; ingress-nginx answers 503.
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let warnings: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
    let expect = [
        "spec.rules[0].http.paths[1].backend.service.name: Service default/ghost does not exist",
        "spec.rules[0].http.paths[2].backend.service.port: Service default/web has no port 99",
    ];
    for e in expect {
        assert!(warnings.iter().any(|w| w.contains(e)), "{e}: {warnings:?}");
    }
}

#[test]
fn class_selection() {
    let mk = |meta: &str, spec_class: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: i\n{meta}spec:\n{spec_class}  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
        )
    };
    let served = |s: &Snapshot| s.ingress.ingress_count() == 1;
    assert!(served(&snap(&mk("", "  ingressClassName: nodeway\n"))));
    assert!(served(&snap(&mk(
        "  annotations: {kubernetes.io/ingress.class: nginx}\n",
        ""
    ))));
    let foreign = snap(&mk("", "  ingressClassName: traefik\n"));
    assert!(!served(&foreign));
    assert!(
        foreign
            .warnings
            .iter()
            .any(|w| w.message.contains("\"traefik\"")),
        "{:?}",
        foreign.warnings
    );
    assert!(!served(&snap(&mk(
        "  annotations: {kubernetes.io/ingress.class: haproxy}\n",
        ""
    ))));
    // An IngressClass with our controller makes its name ours.
    let cls = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: edge}\nspec: {controller: nodeway.io/ingress-controller}\n---\n";
    assert!(served(&snap(
        &(cls.to_string() + &mk("", "  ingressClassName: edge\n"))
    )));
    // Classless: served only with watch_without_class or our default class.
    let strict = CompileOptions {
        ingress: IngressOptions {
            classes: vec!["nodeway".into()],
            watch_without_class: false,
        },
        ..Default::default()
    };
    assert!(served(&snap(&mk("", ""))));
    assert!(!served(&snap_with(strict.clone(), &mk("", ""))));
    let default_cls = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: nodeway\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: nodeway.io/ingress-controller}\n---\n";
    assert!(served(&snap_with(
        strict,
        &(default_cls.to_string() + &mk("", ""))
    )));
    // Another controller's default class takes class-less Ingresses, even
    // with watch_without_class (the admission plugin would have named it).
    let theirs = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: traefik\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: traefik.io/ingress-controller}\n---\n";
    let s = snap(&(theirs.to_string() + &mk("", "")));
    assert!(!served(&s));
    assert!(
        s.warnings
            .iter()
            .any(|w| w.message.contains("the default class \"traefik\"'s")),
        "{:?}",
        s.warnings
    );
    // Two defaults: the admission plugin stamps the newest.
    let dated = |cls: &str, when: &str| {
        cls.replacen(
            "metadata:\n",
            &format!("metadata:\n  creationTimestamp: \"{when}\"\n"),
            1,
        )
    };
    let older_ours = dated(default_cls, "2025-01-01T00:00:00Z");
    let newer_theirs = dated(theirs, "2026-01-01T00:00:00Z");
    assert!(!served(&snap(
        &(older_ours.clone() + &newer_theirs + &mk("", ""))
    )));
    let newer_ours = dated(default_cls, "2026-06-01T00:00:00Z");
    assert!(served(&snap(&(newer_ours + &newer_theirs + &mk("", "")))));
}

fn validation_fields(doc: &str) -> Vec<String> {
    let ing: k8s_openapi::api::networking::v1::Ingress = serde_saphyr::from_str(doc).unwrap();
    validate(&ing).into_iter().map(|e| e.field).collect()
}

#[test]
fn protections_nodeway_lacks_refuse_the_ingress_instead_of_failing_open() {
    let doc = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: basic-auth
    nginx.ingress.kubernetes.io/limit-rps: "5"
    nginx.ingress.kubernetes.io/auth-tls-verify-client: "off"
    nginx.ingress.kubernetes.io/ssl-passthrough: "false"
    nginx.ingress.kubernetes.io/proxy-buffer-size: "8k"
    nginx.ingress.kubernetes.io/satisfy: all
    nginx.ingress.kubernetes.io/auth-realm: "tunes auth, switches nothing on"
spec:
  rules:
  - http:
      paths:
      - {pathType: Prefix, path: /, backend: {service: {name: web, port: {number: 80}}}}
"#;
    let f = validation_fields(doc);
    assert_eq!(
        f,
        [
            "metadata.annotations[nginx.ingress.kubernetes.io/auth-secret]",
            "metadata.annotations[nginx.ingress.kubernetes.io/auth-type]",
            "metadata.annotations[nginx.ingress.kubernetes.io/limit-rps]",
        ],
        "switched off or harmless ones pass"
    );
}

#[test]
fn validation_names_the_field() {
    let doc = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bad
  annotations:
    nginx.ingress.kubernetes.io/proxy-body-size: "lots"
    nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers x"
    nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/8, nope"
    nginx.ingress.kubernetes.io/some-future-thing: "ignored"
    nginx.ingress.kubernetes.io/canary-by-header: "x canary"
spec:
  rules:
  - host: "Bad_Host"
    http:
      paths:
      - {pathType: Prefix, path: /ok, backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: Sometimes, path: /x, backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: Exact, path: "/a/../b", backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: Prefix, path: "rel", backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: Prefix, path: "/r", backend: {resource: {kind: Bucket, name: b}}}
      - {pathType: Prefix, path: "/p", backend: {service: {name: web, port: {number: 70000}}}}
"#;
    let f = validation_fields(doc);
    for want in [
        "metadata.annotations[nginx.ingress.kubernetes.io/proxy-body-size]",
        "metadata.annotations[nginx.ingress.kubernetes.io/configuration-snippet]",
        "metadata.annotations[nginx.ingress.kubernetes.io/whitelist-source-range]",
        "metadata.annotations[nginx.ingress.kubernetes.io/canary-by-header]",
        "spec.rules[0].host",
        "spec.rules[0].http.paths[1].pathType",
        "spec.rules[0].http.paths[2].path",
        "spec.rules[0].http.paths[3].path",
        "spec.rules[0].http.paths[4].backend.resource",
        "spec.rules[0].http.paths[5].backend.service.port.number",
    ] {
        assert!(f.contains(&want.to_string()), "missing {want} in {f:?}");
    }
    assert_eq!(f.len(), 10, "{f:?}");
    // A regex Ingress: the regex must compile.
    let doc = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: re, annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}}
spec:
  rules:
  - http:
      paths:
      - {pathType: ImplementationSpecific, path: "/ok(/|$)(.*)", backend: {service: {name: web, port: {number: 80}}}}
      - {pathType: ImplementationSpecific, path: "/bad(", backend: {service: {name: web, port: {number: 80}}}}
"#;
    assert_eq!(
        validation_fields(doc),
        vec!["spec.rules[0].http.paths[1].path".to_string()]
    );
}

#[test]
fn percent_escaped_rule_paths_match_decoded_requests() {
    let s = snap(&ingress(
        "t",
        Some("x.com"),
        &[("Prefix", "/a%20b"), ("Exact", "/caf%C3%A9")],
        "",
    ));
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(pick(&s, "x.com", "/a b/c").unwrap().0, "/a%20b");
    assert_eq!(pick(&s, "x.com", "/café").unwrap().0, "/caf%C3%A9");
    for bad in ["/a%2fb", "/a/%2e%2e/b", "/a%zz"] {
        let s = snap(&ingress("t", Some("x.com"), &[("Prefix", bad)], ""));
        assert_eq!(s.ingress.ingress_count(), 0, "{bad}");
    }
}

#[test]
fn invalid_ingress_is_not_served_and_reported() {
    let s = snap(&ingress("t", Some("x.com"), &[("Exact", "/a/./b")], ""));
    assert_eq!(s.ingress.ingress_count(), 0);
    assert!(
        s.errors
            .iter()
            .any(|e| e.field.as_deref() == Some("spec.rules[0].http.paths[0].path"))
    );
}

#[test]
fn regex_and_rewrite_with_captures() {
    let meta = "  annotations:\n    nginx.ingress.kubernetes.io/rewrite-target: /$2\n";
    let docs = ingress(
        "rw",
        Some("x.com"),
        &[("ImplementationSpecific", "/something(/|$)(.*)")],
        meta,
    ) + &ingress("plain", Some("x.com"), &[("Exact", "/exact")], "");
    let s = snap(&docs);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let r = s.ingress.find("x.com", "/something/new/x").unwrap();
    assert_eq!(r.kind, PathKind::Regex);
    assert_eq!(r.rewrite("/something/new/x").unwrap().path, "/new/x");
    assert_eq!(r.rewrite("/something").unwrap().path, "/");
    // Case-insensitive, as ingress-nginx's `~*` locations.
    assert!(s.ingress.find("x.com", "/SOMETHING/a").is_some());
    // Other Ingresses on the host keep spec semantics (Exact stays exact and case-sensitive).
    assert_eq!(
        s.ingress.find("x.com", "/exact").unwrap().kind,
        PathKind::Exact
    );
    assert!(s.ingress.find("x.com", "/EXACT").is_none());
    assert!(s.ingress.find("x.com", "/exact/x").is_none());
}

#[test]
fn canary_attaches_to_main_route() {
    let canary = "  annotations:\n    nginx.ingress.kubernetes.io/canary: \"true\"\n    nginx.ingress.kubernetes.io/canary-by-header: x-canary\n    nginx.ingress.kubernetes.io/canary-weight: \"30\"\n";
    let docs = ingress("main", Some("x.com"), &[("Prefix", "/")], "")
        + &ingress("can", Some("x.com"), &[("Prefix", "/")], canary)
            .replace("name: web", "name: other")
        + &ingress("orphan", Some("y.com"), &[("Prefix", "/")], canary);
    let s = snap(&docs);
    let r = s.ingress.find("x.com", "/a").unwrap();
    assert_eq!(&*r.ingress, "default/main");
    let c = r.canary.as_ref().unwrap();
    assert_eq!(c.backend.as_ref().unwrap().service.1, "other");
    let cfg = c.annotations.canary.as_ref().unwrap();
    assert_eq!(
        (cfg.by_header.as_deref(), cfg.weight),
        (Some("x-canary"), 30)
    );
    assert!(s.ingress.find("y.com", "/").is_none());
    assert!(
        s.warnings
            .iter()
            .any(|w| w.message.contains("canary has no main Ingress"))
    );
}

#[test]
fn tls_certificates_and_ssl_redirect() {
    let cert = rcgen_free_pem();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: tls}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n---\n",
        indent(&cert.0),
        indent(&cert.1)
    );
    let ing = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure}
spec:
  tls:
  - hosts: [a.com, "*.w.com"]
    secretName: tls
  - hosts: [b.com]
    secretName: missing
  rules:
  - host: a.com
    http: {paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: c.com
    http: {paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {number: 80}}}}]}
"#;
    let s = snap(&(secret + ing));
    assert_eq!(&*s.ingress.cert_for("a.com").unwrap().secret, "default/tls");
    assert_eq!(
        &*s.ingress.cert_for("x.w.com").unwrap().secret,
        "default/tls"
    );
    assert!(s.ingress.cert_for("w.com").is_none());
    assert!(s.ingress.cert_for("b.com").is_none());
    // A warning: cert-manager creates the Secret after the Ingress.
    assert!(
        s.warnings.iter().any(|w| w
            .message
            .starts_with("spec.tls[1].secretName: Secret default/missing")),
        "{:?}",
        s.warnings
    );
    assert!(s.ingress.find("a.com", "/").unwrap().ssl_redirect);
    assert!(!s.ingress.find("c.com", "/").unwrap().ssl_redirect);
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fixed self-signed EC certificate and key (test data only).
fn rcgen_free_pem() -> (String, String) {
    (
        include_str!("testdata/cert.pem").into(),
        include_str!("testdata/key.pem").into(),
    )
}

#[test]
fn normalization() {
    let ok = |raw: &str, want: &str| assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    ok("/", "/");
    ok("/a/b", "/a/b");
    ok("/a//b", "/a/b");
    ok("/a/./b", "/a/b");
    ok("/public/../private", "/private");
    ok("/public/%2e%2e/private", "/private");
    ok("/public/..%2fprivate", "/private");
    ok("/public/%2E%2E%2Fprivate", "/private");
    ok("/a/b/", "/a/b/");
    ok("/a/b/..", "/a/");
    ok("/a%20b", "/a b");
    assert_eq!(normalize_path("/.."), Err(PathError::AboveRoot));
    assert_eq!(normalize_path("/a/../../b"), Err(PathError::AboveRoot));
    assert_eq!(normalize_path("/%2e%2e/x"), Err(PathError::AboveRoot));
    assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(normalize_path("/a%00"), Err(PathError::BadByte));
    assert_eq!(normalize_path("a"), Err(PathError::NotAbsolute));
    // Java servers read `..;x` as `..`: never route it as a plain name.
    for p in [
        "/public/..;/private",
        "/public/.;x/a",
        "/public/%2e%2e;/private",
    ] {
        assert_eq!(normalize_path(p), Err(PathError::DotWithParameters), "{p}");
    }
    assert_eq!(
        normalize_path("/a/..b;c/./d").as_deref(),
        Ok("/a/..b;c/d"),
        "only a whole `.`/`..` before the `;` counts"
    );
    assert_eq!(encode_path("/a b/%?#"), "/a%20b/%25%3F%23");
    let c: Vec<_> = prefix_candidates("/a/b/").collect();
    assert_eq!(c, vec!["/a/b", "/a", ""]);
}

#[test]
fn annotations_parse() {
    use annotations::{parse_size, parse_timeout};
    assert_eq!(parse_size("8k"), Some(Some(8192)));
    assert_eq!(parse_size("1m"), Some(Some(1 << 20)));
    assert_eq!(parse_size("0"), Some(None));
    assert_eq!(parse_size("x"), None);
    assert_eq!(
        parse_timeout("60"),
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(
        parse_timeout("2m"),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(parse_timeout("-1"), None);
    let n = IpNet::parse("10.1.0.0/16").unwrap();
    assert!(n.contains("10.1.2.3".parse().unwrap()));
    assert!(!n.contains("10.2.0.1".parse().unwrap()));
    assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
    assert!(
        IpNet::parse("::1")
            .unwrap()
            .contains("::1".parse().unwrap())
    );
    assert!(
        IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
    let m: std::collections::BTreeMap<String, String> = [
        (
            "nginx.ingress.kubernetes.io/permanent-redirect",
            "https://e.com/x",
        ),
        ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
        ("nginx.ingress.kubernetes.io/backend-protocol", "grpc"),
        ("nginx.ingress.kubernetes.io/affinity", "cookie"),
        ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (a, errs) = annotations::parse(Some(&m));
    assert!(errs.is_empty(), "{errs:?}");
    let (to, code) = a.redirect.unwrap();
    assert_eq!(
        (to.prefix(), to.has_vars(), code),
        ("https://e.com/x", false, 308)
    );
    assert_eq!(a.backend_protocol, BackendProtocol::Grpc);
    assert_eq!(a.affinity.unwrap().name, "route");
}

/// Parses `nginx.ingress.kubernetes.io/` annotations given without the prefix.
fn parse_nginx_annotations(
    pairs: &[(&str, &str)],
) -> (annotations::Annotations, Vec<crate::FieldError>) {
    let m: std::collections::BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
        .collect();
    annotations::parse(Some(&m))
}

#[test]
fn canary_cookie_and_weight_total_parse_and_weight_is_checked_against_total() {
    let parse = parse_nginx_annotations;
    let (a, errs) = parse(&[
        ("canary", "true"),
        ("canary-by-cookie", "beta"),
        ("canary-weight", "250"),
        ("canary-weight-total", "1000"),
    ]);
    assert!(errs.is_empty(), "{errs:?}");
    let c = a.canary.unwrap();
    assert_eq!(
        (c.by_cookie.as_deref(), c.weight, c.weight_total),
        (Some("beta"), 250, 1000)
    );
    let (_, errs) = parse(&[("canary", "true"), ("canary-weight", "101")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].field.ends_with("canary-weight]"), "{:?}", errs[0]);
    assert!(errs[0].reason.contains("above the total weight 100"));
    let (_, errs) = parse(&[("canary-weight-total", "0")]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let (a, errs) = parse(&[
        ("canary", "true"),
        ("canary-by-header-pattern", "^b(eta)?$"),
    ]);
    assert!(errs.is_empty(), "{errs:?}");
    let p = a.canary.unwrap().by_header_pattern.unwrap();
    assert!(p.0.is_match("beta") && !p.0.is_match("gamma"));
    let (_, errs) = parse(&[("canary-by-header-pattern", "(")]);
    assert!(
        errs[0].reason.contains("not a regular expression"),
        "{errs:?}"
    );
}

#[test]
fn hosts_that_could_redirect_elsewhere_are_invalid() {
    use super::path::is_valid_host;
    for ok in [
        "",
        "a.test",
        "A.Test:8080",
        "127.0.0.1",
        "[::1]:443",
        "my_host.local.",
    ] {
        assert!(is_valid_host(ok), "{ok}");
    }
    for bad in [
        "a#b.x.test",
        "evil@a.x.test",
        "a/b.x.test",
        "a%2fb.test",
        "a b.test",
    ] {
        assert!(!is_valid_host(bad), "{bad}");
    }
}

#[test]
fn a_path_is_required_for_exact_and_prefix_as_the_api_server_says() {
    let doc = |ty: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: p}}\nspec:\n  rules:\n  - http:\n      paths:\n      - pathType: {ty}\n        backend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
        )
    };
    assert_eq!(
        validation_fields(&doc("Prefix")),
        ["spec.rules[0].http.paths[0].path"]
    );
    assert_eq!(
        validation_fields(&doc("Exact")),
        ["spec.rules[0].http.paths[0].path"]
    );
    assert!(validation_fields(&doc("ImplementationSpecific")).is_empty());
}

#[test]
fn hash_by_gives_way_to_affinity_with_a_warning_as_in_ingress_nginx() {
    let parse = |pairs: &[(&str, &str)]| parse_nginx_annotations(pairs).0;
    let alone = parse(&[("upstream-hash-by", "$request_uri")]);
    assert!(alone.hash_by.is_some() && alone.ignored.is_empty());
    let both = parse(&[("upstream-hash-by", "$request_uri"), ("affinity", "cookie")]);
    assert!(both.hash_by.is_none() && both.affinity.is_some());
    assert_eq!(
        both.ignored,
        [annotations::Ignored {
            annotation: "nginx.ingress.kubernetes.io/upstream-hash-by".into(),
            why: "with affinity: cookie (ingress-nginx ignores it too)",
        }]
    );
}
