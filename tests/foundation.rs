//! End-to-end tests of the foundation: the real binary, real files, real clients.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{Echo, Nodeway, free_port, http_get, wait_for, write_manifests};

fn svc(name: &str, ip: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: {port}}}]\n"
    )
}

#[test]
fn echo_answers_http_json_hostname_and_udp() {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 31, 1));
    let addr = SocketAddr::new(ip, free_port(ip));
    let _echo = Echo::start(addr, "pod-a");

    let (status, body) = http_get(addr, "example.test", "/hostname").unwrap();
    assert_eq!((status, body.as_str()), (200, "pod-a"));

    let (status, body) = http_get(addr, "example.test", "/a/b?x=1").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "pod-a");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/a/b?x=1");
    assert_eq!(v["host"], "example.test");
    assert_eq!(v["proto"], "HTTP/1.1");
    assert_eq!(v["headers"]["connection"][0], "close");

    let u = UdpSocket::bind((ip, 0)).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1500];
    for (send, want) in [
        (&b"hostname"[..], &b"pod-a"[..]),
        (b"echo hi there", b"hi there"),
        (b"\x01raw", b"\x01raw"),
    ] {
        u.send_to(send, addr).unwrap();
        let (n, from) = u.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (want, addr));
    }
}

#[test]
fn echo_speaks_h2c() {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 31, 2));
    let addr = SocketAddr::new(ip, free_port(ip));
    let _echo = Echo::start(addr, "pod-h2");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://h2.test:{}/x", addr.port()))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        resp.into_body().collect().await.unwrap().to_bytes()
    });
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["name"], "pod-h2");
    assert_eq!(v["proto"], "HTTP/2.0");
    assert_eq!(v["path"], "/x");
}

#[test]
fn run_loads_reloads_isolates_bad_input_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), "a.yaml", &svc("a", "127.0.32.1", 8001));
    write_manifests(dir.path(), "b.yaml", &svc("b", "127.0.32.2", 8001));
    let mut n = Nodeway::start(dir.path(), &[]);
    let g1 = n.generation();
    assert!(g1 >= 1, "ready implies the first Snapshot is served");
    assert_eq!(n.metric("nodeway_config_errors"), Some(0.0));

    // A broken file and an invalid object next to a good change.
    write_manifests(dir.path(), "a.yaml", "kind: [unclosed\n");
    write_manifests(
        dir.path(),
        "b.yaml",
        &(svc("b", "127.0.32.3", 8001)
            + "---\n"
            + &svc("c", "127.0.32.4", 8001).replace("8001", "0")),
    );
    wait_for(Duration::from_secs(10), "errors counted", || {
        n.metric("nodeway_config_errors") == Some(2.0)
    });
    assert!(n.generation() > g1);
    assert!(
        n.metric("nodeway_config_reloads_total{result=\"error\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        n.metric("nodeway_config_last_reload_timestamp_seconds")
            .unwrap()
            > 1.7e9
    );

    // Fixing the files clears the errors.
    write_manifests(dir.path(), "a.yaml", &svc("a", "127.0.32.1", 8001));
    write_manifests(dir.path(), "b.yaml", &svc("b", "127.0.32.3", 8001));
    wait_for(Duration::from_secs(10), "errors cleared", || {
        n.metric("nodeway_config_errors") == Some(0.0)
    });

    let status = n.terminate();
    assert!(status.success(), "exit status {status}");
}

fn check(paths: &[&Path]) -> (bool, String) {
    check_with(paths, &[])
}

fn check_with(paths: &[&Path], flags: &[&str]) -> (bool, String) {
    let mut c = Command::new(support::bin());
    c.arg("check");
    for p in paths {
        c.arg("--config").arg(p);
    }
    c.args(flags);
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write_manifests(
        dir.path(),
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: x\n",
    );
    write_manifests(
        dir.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: team}\nspec:\n  clusterIP: nope\n  ports: [{port: 80, protocol: ICMP}]\n",
    );
    let (ok, out) = check(&[dir.path()]);
    assert!(!ok);
    assert!(out.contains("Errors (3):"), "{out}");
    assert!(out.contains("broken.yaml: invalid YAML"), "{out}");
    assert!(
        out.contains("bad.yaml: Service team/bad: spec.clusterIP: \"nope\" is not an IP address"),
        "{out}"
    );
    assert!(
        out.contains(
            "bad.yaml: Service team/bad: spec.ports[0].protocol: \"ICMP\" is not TCP, UDP or SCTP"
        ),
        "{out}"
    );
}

/// A plane's own config errors show offline too: `check` runs the same
/// view compiles as the running planes.
#[test]
fn check_shows_plane_errors_with_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write_manifests(
        dir.path(),
        "dns.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dns\n  namespace: kube-system\n  annotations: {nodeway.io/udp-idle-timeout: soon}\nspec:\n  clusterIP: 127.0.0.21\n  ports: [{port: 53, protocol: UDP}]\n",
    );
    let (ok, out) = check(&[dir.path()]);
    assert!(!ok, "{out}");
    assert!(out.contains("Errors (1):"), "{out}");
    assert!(
        out.contains(
            "dns.yaml: Service kube-system/dns: metadata.annotations[nodeway.io/udp-idle-timeout]: invalid duration \"soon\""
        ),
        "{out}"
    );
}

#[test]
fn check_shows_health_check_ports() {
    let dir = tempfile::tempdir().unwrap();
    write_manifests(
        dir.path(),
        "lb.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: shop}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 31500\n  clusterIP: 127.0.0.20\n  ports: [{port: 80, nodePort: 30500}]\n",
    );
    let (ok, out) = check(&[dir.path()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("<node-ip>:31500/TCP -> shop/lb (load-balancer health check)"),
        "{out}"
    );
}

#[test]
fn check_passes_on_seed_examples_and_shows_tables() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = check(&[&root.join("configs/seed-examples")]);
    assert!(ok, "{out}");
    for want in [
        "default/nginx-svc          NodePort",
        "30080",
        "2/2",
        "-> www.bilibili.com",
        "web-0.nginx.default.svc.cluster.local",
        "example.com /api/v1",
        "default/nginx-b:80",
        "Errors (0):",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

/// Every file in configs/ parses and validates without errors (each folder is
/// checked as one picture: Ingresses need their Services beside them).
#[test]
fn every_config_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                // Fixtures of what must fail (checked on their own below).
                if !p.ends_with("real-manifests-broken") {
                    stack.push(p);
                }
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 10, "{files:?}");
    let dirs: std::collections::BTreeSet<_> = files
        .iter()
        .map(|f| f.parent().unwrap().to_path_buf())
        .collect();
    for d in dirs {
        let (ok, out) = check(&[&d]);
        assert!(ok, "{}:\n{out}", d.display());
        for f in files.iter().filter(|f| f.parent() == Some(d.as_path())) {
            let name = f.file_name().unwrap().to_str().unwrap();
            let bytes = std::fs::read(f).unwrap();
            let parsed = model::parse::parse_file(f, &bytes, &Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                parsed.objects.iter().all(Result::is_ok),
                "{name}: {:?}",
                parsed.objects
            );
        }
    }
}

/// `nodeway demo` starts its echo backends and every plane, prints its guide,
/// and the guide's first command works.
#[test]
fn demo_serves_and_prints_its_guide() {
    let lo = support::own_loopback();
    let at = |ip: IpAddr| SocketAddr::new(ip, free_port(ip));
    let admin = at(lo);
    let out = std::env::temp_dir().join(format!("nodeway-demo-test-{}.out", std::process::id()));
    let mut child = Command::new(support::bin())
        // One thread: every plane and the echo backends share it (tokio's
        // current-thread scheduler).
        .args(["demo", "--node-ip", "127.0.33.1", "--threads", "1"])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--dns-listen", &at(lo).to_string()])
        .args(["--dns-upstream", &at(lo).to_string()])
        .args(["--http-listen", &at(lo).to_string()])
        .args(["--https-listen", &at(lo).to_string()])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let demo_dir = std::env::temp_dir().join(format!("nodeway-demo-{}", child.id()));
    let pid = child.id().to_string();
    let guard = scopeguard(&mut child);
    wait_for(Duration::from_secs(30), "demo ready", || {
        matches!(http_get(admin, "admin", "/readyz"), Ok((200, _)))
    });
    wait_for(Duration::from_secs(5), "guide printed", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("nodeway demo is ready"))
    });
    let guide = std::fs::read_to_string(&out).unwrap();
    assert!(
        guide.contains("curl -s http://127.0.100.10:8000/hostname"),
        "{guide}"
    );
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (status, body) =
            http_get("127.0.100.10:8000".parse().unwrap(), "web", "/hostname").unwrap();
        assert_eq!(status, 200);
        names.insert(body);
    }
    let want: std::collections::BTreeSet<String> =
        ["web-a".to_string(), "web-b".to_string()].into();
    assert_eq!(
        names, want,
        "round-robin over the two ready Pods, never web-c"
    );
    // The guide's Gateway API line: the HTTPRoute on the Gateway's listener.
    assert!(guide.contains("http://127.0.33.1:8090/shop"), "{guide}");
    let gateway: SocketAddr = "127.0.33.1:8090".parse().unwrap();
    wait_for(Duration::from_secs(10), "the demo Gateway listener", || {
        http_get(gateway, "gw.demo.test", "/shop").is_ok()
    });
    let reply = support::http_request(gateway, "GET", "gw.demo.test", "/shop", &[]).unwrap();
    let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        echo["headers"]["x-via"],
        serde_json::json!(["gateway-api"]),
        "{}",
        reply.body
    );
    // Stopped as a user stops it, the demo removes the manifests it wrote.
    assert!(demo_dir.is_dir(), "{}", demo_dir.display());
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    wait_for(Duration::from_secs(30), "demo folder removed", || {
        !demo_dir.exists()
    });
    drop(guard);
    let _ = std::fs::remove_file(&out);
}

/// Kills the child when the test ends, pass or fail.
fn scopeguard(child: &mut std::process::Child) -> impl Drop + '_ {
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    Kill(child)
}

/// nodeway_network_programming_duration_seconds times endpoint changes
/// from their trigger time to the moment every plane serves them; changes
/// triggered before the process started are not counted.
#[test]
fn network_programming_duration_is_observed_for_new_changes() {
    let dir = tempfile::tempdir().unwrap();
    let slice = |ip: &str, at: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: 127.0.33.10, ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels: {{kubernetes.io/service-name: web}}\n  annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"{at}\"}}\naddressType: IPv4\nports: [{{port: 80}}]\nendpoints:\n- addresses: [{ip}]\n"
        )
    };
    let old = "2020-01-01T00:00:00Z";
    write_manifests(dir.path(), "web.yaml", &slice("127.0.33.1", old));
    let n = Nodeway::start(dir.path(), &[]);
    let count = || n.metric("nodeway_network_programming_duration_seconds_count");
    assert_eq!(count(), Some(0.0));
    // A change triggered before nodeway started is not nodeway's to time;
    // one triggered now is, once every plane serves it.
    let g = n.generation();
    write_manifests(
        dir.path(),
        "web.yaml",
        &slice("127.0.33.2", "2020-01-01T00:00:01Z"),
    );
    wait_for(Duration::from_secs(10), "the old change loaded", || {
        n.generation() > g
    });
    let now = jiff::Timestamp::now().to_string();
    write_manifests(dir.path(), "web.yaml", &slice("127.0.33.3", &now));
    wait_for(Duration::from_secs(10), "a change timed", || {
        count().is_some_and(|c| c >= 1.0)
    });
    // Had the 2020 change been counted, the sum would be years.
    let sum = n.metric("nodeway_network_programming_duration_seconds_sum");
    assert!(sum.is_some_and(|s| (0.0..3600.0).contains(&s)), "{sum:?}");
    assert_eq!(count(), Some(1.0));
}

/// Manifests in the shapes of real ones (configs/real-manifests): no
/// clusterIPs or nodePorts, an Ingress whose Secret and one Service come
/// later, the same Service twice. They pass with what the API server would
/// have filled in, and warnings; `--strict` fails on the warnings.
#[test]
fn check_passes_real_manifests_with_warnings_and_strict_fails() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/real-manifests");
    let (ok, out) = check(&[&dir]);
    assert!(ok, "{out}");
    assert!(out.contains("Errors (0):"), "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("default/{name} ")))
            .unwrap_or_else(|| panic!("{name}: {out}"))
            .to_string()
    };
    // ClusterIPs from 10.96.0.0/12, nodePorts from 30000-32767.
    assert!(
        row("guestbook").contains("10.") && row("guestbook").contains(" (allocated)"),
        "{out}"
    );
    assert_eq!(
        row("guestbook-lb").matches(" (allocated)").count(),
        3,
        "{out}"
    );
    assert!(
        out.contains("-> default/guestbook-lb (load-balancer health check, allocated)"),
        "{out}"
    );
    for w in [
        "app.yaml: Service default/guestbook: also defined in",
        "ingress.yaml: Ingress default/guestbook: spec.tls[0].secretName: Secret default/guestbook-tls does not exist",
        "ingress.yaml: Ingress default/guestbook: spec.rules[0].http.paths[1].backend.service.name: Service default/guestbook-api does not exist",
        "ingress.yaml: Ingress default/guestbook: metadata.annotations[nginx.ingress.kubernetes.io/proxy-buffer-size]: has no effect in nodeway",
    ] {
        assert!(out.contains(w), "{w}: {out}");
    }
    // CORS, cookie attributes, retries and hashing are acted on: no warning.
    for acted_on in ["guestbook-edge", "guestbook-cache"] {
        assert!(
            !out.lines()
                .any(|l| l.contains(&format!("Ingress default/{acted_on}:"))),
            "{acted_on}: {out}"
        );
    }
    let (strict_ok, _) = check_with(&[&dir], &["--strict"]);
    assert!(!strict_ok, "--strict fails on warnings");
}

/// What real manifests get wrong that the API server would refuse, or that
/// nodeway cannot serve: each an error that says what to do
/// (configs/real-manifests-broken).
#[test]
fn check_names_retired_apis_templates_and_unsupported_values() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/real-manifests-broken");
    let (ok, out) = check(&[&dir]);
    assert!(!ok, "{out}");
    for e in [
        "legacy-ingress.yaml: Ingress default/legacy: apiVersion: extensions/v1beta1 Ingress was removed in Kubernetes 1.22",
        "half-migrated.yaml: Ingress default/half-migrated: spec.rules[0].http.paths[0].backend.serviceName: a networking.k8s.io/v1beta1 field; in v1 it is spec.rules[0].http.paths[0].backend.service.name",
        "half-migrated.yaml: Ingress default/half-migrated: spec.rules[0].http.paths[0].backend.servicePort: a networking.k8s.io/v1beta1 field",
        "chart-service.yaml: a template (Helm?), not a manifest",
        "php.yaml: Ingress default/php: metadata.annotations[nginx.ingress.kubernetes.io/backend-protocol]: \"FCGI\" is not supported by nodeway",
    ] {
        assert!(out.contains(e), "{e}: {out}");
    }
    assert!(out.contains("Errors (5):"), "{out}");
}

/// A warning is logged once, when it appears, not at every reload.
#[test]
fn warnings_are_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/real-manifests");
    for f in ["app.yaml", "ingress.yaml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let n = Nodeway::start(dir.path(), &["--l4-disable"]);
    let g = n.generation();
    write_manifests(dir.path(), "more.yaml", &svc("more", "127.0.33.1", 8001));
    n.wait_generation(g + 1);
    let log = n.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("proxy-buffer-size"))
        .count();
    assert_eq!(lines, 1, "{log}");
}
