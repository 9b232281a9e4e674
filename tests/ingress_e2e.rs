//! End-to-end tests of the L7 plane: the real `nodeway run` binary, echo
//! backends, manifests in a folder, plain clients.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::{Echo, Nodeway, free_port, http_get, http_request, wait_for, write_manifests};

fn echo(last_octet: u8, name: &str) -> Echo {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 45, last_octet));
    Echo::start(SocketAddr::new(ip, free_port(ip)), name)
}

/// A Service with one EndpointSlice listing the echo backends (all on one port
/// number per slice, so one slice per backend).
fn service(name: &str, cluster_ip: &str, backends: &[&Echo]) -> String {
    let mut s = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {cluster_ip}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
    );
    for (i, e) in backends.iter().enumerate() {
        s.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-{i}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{}\"]}}]\nports: [{{name: http, port: {}}}]\n",
            e.addr.ip(),
            e.addr.port()
        ));
    }
    s
}

fn ingress(name: &str, class_meta: &str, host: &str, path: &str, svc: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{class_meta}spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{pathType: Prefix, path: {path}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}\n"
    )
}

fn name_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["name"].as_str().map(String::from))
        .unwrap_or_default()
}

#[test]
fn routes_balances_and_skips_foreign_classes() {
    let (a, b, c) = (echo(1, "pod-a"), echo(2, "pod-b"), echo(3, "pod-c"));
    let dir = tempdir("route");
    let yaml = service("web", "127.97.0.1", &[&a, &b, &c])
        + &ingress(
            "legacy",
            "  annotations: {kubernetes.io/ingress.class: nginx}\n",
            "shop.test",
            "/",
            "web",
        )
        + &ingress("foreign", "", "other.test", "/", "web")
            .replace("spec:\n", "spec:\n  ingressClassName: traefik\n");
    write_manifests(&dir, "all.yaml", &yaml);
    let n = Nodeway::start(&dir, &[]);

    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let (status, body) = http_get(n.http, "shop.test", "/cart?id=7").unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["path"], "/cart?id=7");
        assert_eq!(v["host"], "shop.test");
        assert_eq!(v["headers"]["x-forwarded-for"][0], "127.0.0.1");
        seen.insert(name_of(&body));
    }
    assert_eq!(
        seen.len(),
        3,
        "per-request balancing reaches every endpoint: {seen:?}"
    );
    assert_eq!(
        http_get(n.http, "other.test", "/").unwrap().0,
        404,
        "a foreign class is not served"
    );
    assert!(n.metrics().contains("nodeway_ingress_requests_total{ingress=\"default/legacy\",host=\"shop.test\",status=\"2xx\"} 30"));

    let out = Command::new(support::bin())
        .args(["check", "--config", &dir.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Ingress default/foreign") && text.contains("\"traefik\""),
        "{text}"
    );
    assert!(text.contains("shop.test"), "{text}");
}

#[test]
fn reload_swaps_routes_under_traffic_without_errors() {
    let (a, b) = (echo(11, "blue"), echo(12, "green"));
    let dir = tempdir("reload");
    let svcs = service("blue", "127.97.1.1", &[&a]) + &service("green", "127.97.1.2", &[&b]);
    write_manifests(
        &dir,
        "all.yaml",
        &(svcs.clone() + &ingress("app", "", "app.test", "/", "blue")),
    );
    let n = Nodeway::start(&dir, &[]);
    let http = n.http;
    let stop = Arc::new(AtomicBool::new(false));
    let (done, green) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let worker = {
        let (stop, done, green) = (stop.clone(), done.clone(), green.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http_get(http, "app.test", "/") {
                    Ok((200, body)) => {
                        if name_of(&body) == "green" {
                            green.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => failures.push(format!("{other:?}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };
    for i in 0..6 {
        let generation = n.generation();
        let target = if i % 2 == 0 { "green" } else { "blue" };
        write_manifests(
            &dir,
            "all.yaml",
            &(svcs.clone() + &ingress("app", "", "app.test", "/", target)),
        );
        n.wait_generation(generation + 1);
        let before = done.load(Ordering::Relaxed);
        wait_for(Duration::from_secs(10), "traffic after reload", || {
            done.load(Ordering::Relaxed) > before + 10
        });
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(worker.join().unwrap(), Vec::<String>::new());
    assert!(green.load(Ordering::Relaxed) > 0, "the route switched");
}

/// A manifest folder of one test, removed when the test is over.
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "nodeway-ingress-{tag}-{}-{}",
        std::process::id(),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
    ));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

/// An Ingress for `host` with the given ingress-nginx annotations.
fn annotated(name: &str, host: &str, svc: &str, ann: &[(&str, &str)]) -> String {
    let mut meta = String::from("  annotations:\n");
    for (k, v) in ann {
        meta.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
    }
    ingress(name, &meta, host, "/", svc)
}

#[test]
fn cors_preflight_is_answered_and_other_requests_get_the_headers() {
    let a = echo(21, "api");
    let dir = tempdir("cors");
    let yaml = service("api", "127.97.2.1", &[&a])
        + &annotated(
            "listed",
            "api.test",
            "api",
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test, https://*.shop.test"),
                ("cors-allow-methods", "GET, POST"),
                ("cors-expose-headers", "X-Total"),
                ("cors-max-age", "600"),
            ],
        )
        + &annotated("open", "open.test", "api", &[("enable-cors", "true")]);
    write_manifests(&dir, "all.yaml", &yaml);
    let n = Nodeway::start(&dir, &[]);
    let req = |method: &str, host: &str, origin: Option<&str>| {
        let mut h = vec![("Access-Control-Request-Method", "POST")];
        h.extend(origin.map(|o| ("Origin", o)));
        http_request(n.http, method, host, "/things", &h).unwrap()
    };

    // A preflight from an allowed origin never reaches the backend.
    let r = req("OPTIONS", "api.test", Some("https://eu.shop.test"));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    for (k, v) in [
        ("access-control-allow-origin", "https://eu.shop.test"),
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-methods", "GET, POST"),
        ("access-control-expose-headers", "X-Total"),
        ("access-control-max-age", "600"),
        ("vary", "Origin"),
    ] {
        assert_eq!(r.header(k), Some(v), "{k}: {:?}", r.headers);
    }
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );

    // Other requests reach the backend and get the same headers back.
    let r = req("GET", "api.test", Some("https://app.test"));
    assert_eq!((r.status, name_of(&r.body).as_str()), (200, "api"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));

    // A disallowed origin gets no CORS headers, and its OPTIONS goes to the backend.
    for method in ["GET", "OPTIONS"] {
        let r = req(method, "api.test", Some("https://evil.test"));
        assert_eq!(
            (r.status, name_of(&r.body).as_str()),
            (200, "api"),
            "{method}"
        );
        assert!(
            !r.headers
                .iter()
                .any(|(k, _)| k.starts_with("access-control-")),
            "{method}: {:?}",
            r.headers
        );
    }

    // The default origin `*`: every request, as ingress-nginx.
    let r = req("OPTIONS", "open.test", None);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(r.header("vary"), None);
}

#[test]
fn upstream_hash_by_keeps_each_key_on_one_endpoint_and_spreads_keys() {
    let pods = [
        echo(31, "h1"),
        echo(32, "h2"),
        echo(33, "h3"),
        echo(34, "h4"),
    ];
    let dir = tempdir("hash");
    let hashed = |pods: &[&Echo]| {
        service("hashed", "127.97.3.1", pods)
            + &annotated(
                "h",
                "hash.test",
                "hashed",
                &[("upstream-hash-by", "$arg_user")],
            )
    };
    write_manifests(&dir, "all.yaml", &hashed(&pods.iter().collect::<Vec<_>>()));
    let n = Nodeway::start(&dir, &[]);
    let backend_of = |user: usize| {
        let (status, body) = http_get(n.http, "hash.test", &format!("/cart?user={user}")).unwrap();
        assert_eq!(status, 200, "{body}");
        name_of(&body)
    };
    let users: Vec<String> = (0..40).map(backend_of).collect();
    for (user, first) in users.iter().enumerate() {
        for _ in 0..3 {
            assert_eq!(
                &backend_of(user),
                first,
                "user {user} stays on one endpoint"
            );
        }
    }
    let spread: std::collections::HashSet<_> = users.iter().collect();
    assert_eq!(spread.len(), 4, "40 keys reach every endpoint: {users:?}");

    // Removing one endpoint moves only the keys it had.
    let generation = n.generation();
    write_manifests(&dir, "all.yaml", &hashed(&[&pods[0], &pods[1], &pods[3]]));
    n.wait_generation(generation + 1);
    // The keys h3 had are answered by the others (backend_of checks the 200).
    for (user, was) in users.iter().enumerate() {
        let now = backend_of(user);
        if was != "h3" {
            assert_eq!(&now, was, "user {user} moved although its endpoint stayed");
        }
    }
}

#[test]
fn affinity_cookie_carries_the_attributes_asked_for() {
    let (a, b) = (echo(41, "c1"), echo(42, "c2"));
    let dir = tempdir("cookie");
    let yaml = service("sticky", "127.97.4.1", &[&a, &b])
        + &annotated(
            "s",
            "sticky.test",
            "sticky",
            &[
                ("affinity", "cookie"),
                ("session-cookie-name", "SERVERID"),
                ("session-cookie-samesite", "None"),
                ("session-cookie-conditional-samesite-none", "true"),
                ("session-cookie-secure", "true"),
                ("session-cookie-expires", "172800"),
                ("session-cookie-max-age", "172800"),
            ],
        );
    write_manifests(&dir, "all.yaml", &yaml);
    let n = Nodeway::start(&dir, &[]);
    let modern = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let r = http_request(n.http, "GET", "sticky.test", "/", &[("User-Agent", modern)]).unwrap();
    let set = r
        .header("set-cookie")
        .expect("a cookie for a new client")
        .to_string();
    let attrs: Vec<&str> = set.split("; ").collect();
    assert!(attrs[0].starts_with("SERVERID="), "{set}");
    assert!(
        attrs[1].starts_with("Expires=") && attrs[1].ends_with(" GMT"),
        "{set}"
    );
    assert_eq!(
        attrs[2..],
        [
            "Max-Age=172800",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=None"
        ],
        "secure over plain HTTP because session-cookie-secure asks: {set}"
    );
    let pinned = name_of(&r.body);
    let cookie = attrs[0];
    for _ in 0..10 {
        let r = http_request(n.http, "GET", "sticky.test", "/", &[("Cookie", cookie)]).unwrap();
        assert_eq!(name_of(&r.body), pinned);
        assert_eq!(r.header("set-cookie"), None);
    }
    // Browsers that take SameSite=None for Strict do not get it.
    let ios12 = "Mozilla/5.0 (iPhone; CPU iPhone OS 12_4 like Mac OS X) AppleWebKit/605.1.15";
    let r = http_request(n.http, "GET", "sticky.test", "/", &[("User-Agent", ios12)]).unwrap();
    let set = r.header("set-cookie").unwrap();
    assert!(set.ends_with("; Secure; HttpOnly"), "{set}");
}

/// A plane serving `<name>.test` from one echo backend (slot `n`, ClusterIP
/// 127.97.5.`n`), started with `extra` flags and `NODEWAY_LOG=level`; the
/// backend and the folder live as long as the plane is used.
fn logged_plane(n: u8, name: &str, extra: &[&str], level: &str) -> (Nodeway, Echo, TempDir) {
    let a = echo(50 + n, name);
    let dir = tempdir(&format!("accesslog-{name}"));
    let ip = format!("127.97.5.{n}");
    let host = format!("{name}.test");
    write_manifests(
        &dir,
        "all.yaml",
        &(service(name, &ip, &[&a]) + &ingress(name, "", &host, "/", name)),
    );
    (Nodeway::start_logging(&dir, extra, level), a, dir)
}

/// The access log is buffered (written every second, or at 64 KiB): each
/// line still comes out, by the clock, and the last ones at exit.
#[test]
fn access_log_lines_come_out_by_the_clock_and_at_exit() {
    let (mut n, _a, _dir) = logged_plane(1, "log", &[], "info");
    let access_line = |n: &Nodeway, path: &str| {
        n.log_text()
            .lines()
            .any(|l| l.contains("nodeway::access") && l.contains(&format!("path=\"{path}\"")))
    };
    assert_eq!(
        http_get(n.http, "log.test", "/by-the-clock").unwrap().0,
        200
    );
    wait_for(Duration::from_secs(10), "the line, by the clock", || {
        access_line(&n, "/by-the-clock")
    });
    assert_eq!(n.metric("nodeway_access_log_dropped_total"), Some(0.0));

    assert_eq!(http_get(n.http, "log.test", "/at-exit").unwrap().0, 200);
    assert!(n.terminate().success());
    assert!(access_line(&n, "/at-exit"), "{}", n.log_text());
}

/// With `--log-format json` the access log is JSON too, a line per request
/// with the fields of the text format.
#[test]
fn access_log_lines_follow_the_log_format() {
    let (mut n, _a, _dir) = logged_plane(2, "json", &["--log-format", "json"], "info");
    assert_eq!(http_get(n.http, "json.test", "/in-json").unwrap().0, 200);
    assert!(n.terminate().success());
    let line = n
        .log_text()
        .lines()
        .find(|l| l.contains("/in-json"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no access line: {}", n.log_text()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(v["target"], "nodeway::access");
    assert_eq!(v["level"], "INFO");
    let f = &v["fields"];
    assert_eq!(f["message"], "request");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/in-json");
    assert_eq!(f["ingress"], "default/json");
    assert_eq!(f["status"], 200);
    assert!(
        f["upstream"].as_str().unwrap().starts_with("Some(127."),
        "{line}"
    );
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
}

/// The log level turns the access log off as it would the tracing event
/// it was: `nodeway::access=off` (or `warn`) and no line is written.
#[test]
fn the_log_level_turns_the_access_log_off() {
    let (mut n, _a, _dir) = logged_plane(3, "quiet", &[], "info,nodeway::access=off");
    assert_eq!(
        http_get(n.http, "quiet.test", "/not-logged").unwrap().0,
        200
    );
    assert!(n.terminate().success());
    let log = n.log_text();
    assert!(log.contains("ready"), "other info lines still come: {log}");
    assert!(!log.contains("/not-logged"), "{log}");
}

/// ...and a level that names only the access log turns it on alone.
#[test]
fn a_level_naming_only_the_access_log_turns_it_on() {
    let (mut n, _a, _dir) = logged_plane(4, "alone", &[], "warn,nodeway::access=info");
    assert_eq!(
        http_get(n.http, "alone.test", "/logged-alone").unwrap().0,
        200
    );
    assert!(n.terminate().success());
    let log = n.log_text();
    assert!(log.contains("path=\"/logged-alone\""), "{log}");
    assert!(
        !log.contains(" INFO control::"),
        "only the access log at info: {log}"
    );
}
