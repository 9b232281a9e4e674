//! Gateway API end to end: `nodeway run` on configs/gateway with echo
//! backends, and a table of requests with the backend, status and headers
//! each must get (modelled on the upstream conformance suite's HTTPRoute
//! tests; the manifests say which feature each host exercises).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::{Echo, Nodeway, Reply, http_request, wait_for};

const HTTP: &str = "127.0.77.1:8080";
const TENANTS: &str = "127.0.77.1:8081";

fn echo_json(r: &Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null)
}

/// What one request must get: status, and for a 200 the echo backend.
struct Case {
    at: &'static str,
    method: &'static str,
    host: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    backend: &'static str,
}

const fn get(host: &'static str, target: &'static str, status: u16, backend: &'static str) -> Case {
    Case {
        at: HTTP,
        method: "GET",
        host,
        target,
        headers: &[],
        status,
        backend,
    }
}

const CASES: &[Case] = &[
    // Matches ORed in a rule; a header match beats a bare `/` prefix.
    get("match.example", "/", 200, "v1"),
    get("match.example", "/example", 200, "v1"),
    get("match.example", "/v2", 200, "v2"),
    get("match.example", "/v2/example", 200, "v2"),
    get("match.example", "/v2example", 200, "v1"),
    Case {
        headers: &[("version", "two")],
        ..get("match.example", "/", 200, "v2")
    },
    // Exact beats prefix; the longest prefix wins.
    get("order.example", "/match", 200, "v1"),
    get("order.example", "/match/exact", 200, "v2"),
    get("order.example", "/match/any", 200, "v3"),
    get("order.example", "/match/prefix/any", 200, "v1"),
    get("order.example", "/other", 404, ""),
    // Query parameters, methods, regular expressions.
    get("misc.example", "/?animal=whale", 200, "v1"),
    get("misc.example", "/?animal=dolphin", 404, ""),
    Case {
        method: "POST",
        ..get("misc.example", "/post", 200, "v2")
    },
    get("misc.example", "/post", 404, ""),
    get("misc.example", "/re/42", 200, "v3"),
    get("misc.example", "/re/x42", 404, ""),
    // Rules that answer 500; a host no route names gets 404.
    get("broken.example", "/missing", 500, ""),
    get("broken.example", "/none", 500, ""),
    get("broken.example", "/ext", 500, ""),
    get("cross.example", "/ledger", 200, "v3"),
    get("cross.example", "/payments", 500, ""),
    get("nothing.example", "/", 404, ""),
    // The `*.tenant.example` listener: its routes only, for its hosts.
    Case {
        at: TENANTS,
        ..get("a.tenant.example", "/", 200, "v2")
    },
    Case {
        at: TENANTS,
        ..get("a.b.tenant.example", "/", 200, "v2")
    },
    Case {
        at: TENANTS,
        ..get("tenant.example", "/", 404, "")
    },
    Case {
        at: TENANTS,
        ..get("other.example", "/", 404, "")
    },
];

fn send(c: &Case) -> Reply {
    let at: SocketAddr = c.at.parse().unwrap();
    http_request(at, c.method, c.host, c.target, c.headers).unwrap()
}

#[test]
fn gateway_api_routes_end_to_end() {
    let _backends: Vec<Echo> = [("v1", 21), ("v2", 22), ("v3", 23)]
        .iter()
        .map(|(name, octet)| Echo::start(format!("127.0.77.{octet}:8080").parse().unwrap(), name))
        .collect();
    // Accepts (the kernel completes the handshake) and never answers.
    let _silent = std::net::TcpListener::bind("127.0.77.24:8080").unwrap();
    let mirrored = mirror_sink("127.0.77.25:8080");
    let n = Nodeway::start(Path::new("configs/gateway"), &[]);
    // Gateway listeners are bound once the routes are in: wait for both.
    wait_for(Duration::from_secs(10), "the Gateway listeners", || {
        [HTTP, TENANTS]
            .iter()
            .all(|a| http_request(a.parse().unwrap(), "GET", "match.example", "/", &[]).is_ok())
    });

    for c in CASES {
        let r = send(c);
        let want = (c.status, c.backend);
        let name = echo_json(&r)["name"].as_str().unwrap_or("").to_string();
        assert_eq!(
            (r.status, name.as_str()),
            want,
            "{} {} {} {:?}: {}",
            c.at,
            c.method,
            c.host,
            c.target,
            r.body
        );
    }
    redirects();
    rewrites_and_header_filters();
    weights();
    // RequestMirror: the answer is v1's; the copy reaches the sink.
    let answer = post(HTTP.parse().unwrap(), "mirror.example", "/m?x=1", "hello");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"name\":\"v1\""), "{answer}");
    let copy = mirrored
        .recv_timeout(Duration::from_secs(10))
        .expect("a mirrored request");
    assert!(copy.starts_with("POST /m?x=1 HTTP/1.1\r\n"), "{copy}");
    assert!(
        copy.to_ascii_lowercase().contains("x-mirror-tag: tagged"),
        "{copy}"
    );
    assert!(
        copy.to_ascii_lowercase().contains("host: mirror.example"),
        "{copy}"
    );
    assert!(copy.ends_with("\r\n\r\nhello"), "{copy}");
    // Metrics per route: the Ingress request counter, labelled with the HTTPRoute.
    let metrics = n.metrics();
    assert!(
        metrics.contains(
            "nodeway_ingress_requests_total{ingress=\"shop/weights\",host=\"\",status=\"2xx\"} 200"
        ),
        "{metrics}"
    );
    // timeouts.request and .backendRequest: 504 once they pass, not the
    // 60 s read timeout.
    for host in ["slow.example", "slow-backend.example"] {
        let started = std::time::Instant::now();
        let r = http_request(HTTP.parse().unwrap(), "GET", host, "/", &[]).unwrap();
        assert_eq!(r.status, 504, "{host}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{host}: {:?}",
            started.elapsed()
        );
    }
    // nothing.example is an Ingress's host: served on the Ingress listener,
    // a 404 on the Gateway's own (the table above).
    let r = http_request(n.http, "GET", "nothing.example", "/", &[]).unwrap();
    assert_eq!(echo_json(&r)["name"], "v1", "{}", r.body);
}

fn redirects() {
    let location = |target: &str| {
        let r = http_request(
            HTTP.parse().unwrap(),
            "GET",
            "redirect.example",
            target,
            &[],
        )
        .unwrap();
        (r.status, r.header("location").unwrap_or("").to_string())
    };
    // Without a port or scheme in the filter, the listener's port stays.
    assert_eq!(
        location("/host/a?x=1"),
        (302, "http://example.org:8080/host/a?x=1".into())
    );
    assert_eq!(
        location("/moved/a"),
        (301, "http://redirect.example:8080/new".into())
    );
    assert_eq!(
        location("/prefix/lemon"),
        (302, "http://redirect.example:8080/replacement/lemon".into())
    );
    assert_eq!(
        location("/port"),
        (302, "http://redirect.example:8083/port".into())
    );
    // A new scheme takes its well-known port, left out of the Location.
    assert_eq!(
        location("/scheme"),
        (308, "https://redirect.example/scheme".into())
    );
}

fn rewrites_and_header_filters() {
    let r = http_request(
        HTTP.parse().unwrap(),
        "GET",
        "rewrite.example",
        "/prefix/one/two?q=1",
        &[],
    )
    .unwrap();
    let e = echo_json(&r);
    assert_eq!(
        (e["name"].as_str(), e["path"].as_str(), e["host"].as_str()),
        (Some("v1"), Some("/one/two?q=1"), Some("one.example.org")),
        "{}",
        r.body
    );
    let r = http_request(
        HTTP.parse().unwrap(),
        "GET",
        "rewrite.example",
        "/full/any",
        &[],
    )
    .unwrap();
    assert_eq!(
        echo_json(&r)["path"].as_str(),
        Some("/replaced"),
        "{}",
        r.body
    );

    let sent = [
        ("X-Header-Set", "old"),
        ("X-Header-Add", "first"),
        ("X-Header-Remove", "gone"),
    ];
    let r = http_request(HTTP.parse().unwrap(), "GET", "headers.example", "/", &sent).unwrap();
    let h = &echo_json(&r)["headers"];
    assert_eq!(h["x-header-set"], serde_json::json!(["set"]), "{}", r.body);
    assert_eq!(
        h["x-header-add"],
        serde_json::json!(["first", "added"]),
        "{}",
        r.body
    );
    assert!(h.get("x-header-remove").is_none(), "{}", r.body);
    assert_eq!(r.header("x-response"), Some("yes"));
}

/// 70/30/0: over 200 requests the shares are exact (a weighted cursor),
/// and the weight-0 backend gets none.
fn weights() {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let r = http_request(HTTP.parse().unwrap(), "GET", "weight.example", "/", &[]).unwrap();
        *counts
            .entry(echo_json(&r)["name"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    let got: Vec<(String, i32)> = counts.into_iter().collect();
    assert_eq!(got, [("v1".to_string(), 140), ("v2".to_string(), 60)]);
}

/// A Gateway on the Ingress listener's own address and port: both kinds of
/// route are served there; where both claim a request the HTTPRoute wins.
/// A route change is live without a restart.
#[test]
fn beside_ingress_on_one_listener_and_hot_swapped() {
    let ip: std::net::IpAddr = "127.0.78.1".parse().unwrap();
    let (a, b) = (
        Echo::start(SocketAddr::new(ip, support::free_port(ip)), "from-ingress"),
        Echo::start(
            SocketAddr::new(
                "127.0.78.2".parse().unwrap(),
                support::free_port("127.0.78.2".parse().unwrap()),
            ),
            "from-route",
        ),
    );
    let listen = SocketAddr::new(
        "127.0.78.10".parse().unwrap(),
        support::free_port("127.0.78.10".parse().unwrap()),
    );
    let dir = std::env::temp_dir().join(format!("nodeway-gateway-beside-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = |name: &str, e: &Echo| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{}\"]}}]\nports: [{{name: http, port: {}}}]\n",
            e.addr.ip(),
            e.addr.port()
        )
    };
    let ingress = |host: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: ing-{host}, namespace: default}}\nspec:\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]}}\n"
        )
    };
    let gateway = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: nodeway}}\nspec: {{controllerName: nodeway.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: nodeway\n  addresses: [{{value: \"{}\"}}]\n  listeners: [{{name: http, protocol: HTTP, port: {}}}]\n",
        listen.ip(),
        listen.port()
    );
    let route = |path: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [both.example]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: b, port: 80}}]\n"
        )
    };
    let base = service("a", &a)
        + &service("b", &b)
        + &ingress("both.example")
        + &ingress("ingress.example")
        + &gateway;
    support::write_manifests(&dir, "all.yaml", &(base.clone() + &route("/")));
    let listen_flag = listen.to_string();
    let _n = Nodeway::start(&dir, &["--http-listen", &listen_flag]);
    let name = |host: &str, path: &str| {
        let r = http_request(listen, "GET", host, path, &[]).unwrap();
        echo_json(&r)["name"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(name("both.example", "/x"), "from-route");
    assert_eq!(name("ingress.example", "/x"), "from-ingress");

    // The route now claims only /api: the rest of both.example is the Ingress's again.
    support::write_manifests(&dir, "all.yaml", &(base + &route("/api")));
    wait_for(Duration::from_secs(10), "the changed route", || {
        name("both.example", "/x") == "from-ingress"
    });
    assert_eq!(name("both.example", "/api/v1"), "from-route");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A POST with a body over a fresh connection; the raw answer.
fn post(at: SocketAddr, host: &str, target: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&at, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// An HTTP/1.1 server on `at` that answers 200 and hands over each request
/// it gets (head and body, as text).
fn mirror_sink(at: &str) -> std::sync::mpsc::Receiver<String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(at).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Until the head is in, then as much body as it announces.
            loop {
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if tx.send(String::from_utf8_lossy(&got).into_owned()).is_err() {
                return;
            }
        }
    });
    rx
}

/// The DaemonSet's layout: `--http-listen=0.0.0.0:PORT` and a Gateway
/// without addresses whose listener has that port. The Ingress listener
/// takes the Gateway's connections (no second socket), and requests that
/// reach it on the node address get the HTTPRoute.
#[test]
fn gateway_on_a_wildcard_ingress_listener() {
    let ip: std::net::IpAddr = "127.0.78.21".parse().unwrap();
    let echo = Echo::start(SocketAddr::new(ip, support::free_port(ip)), "via-wildcard");
    let port = support::free_port(std::net::Ipv4Addr::UNSPECIFIED.into());
    let node = "127.0.78.20";
    let dir = std::env::temp_dir().join(format!("nodeway-gateway-wildcard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{}\"]}}]\nports: [{{name: http, port: {}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: nginx}}\nspec: {{controllerName: nodeway.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: nginx, namespace: default}}\nspec:\n  gatewayClassName: nginx\n  listeners: [{{name: http, protocol: HTTP, port: {port}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: default}}\nspec:\n  parentRefs: [{{name: nginx}}]\n  hostnames: [web.example]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n",
        echo.addr.ip(),
        echo.addr.port()
    );
    support::write_manifests(&dir, "all.yaml", &yaml);
    let listen = format!("0.0.0.0:{port}");
    let n = Nodeway::start(&dir, &["--http-listen", &listen, "--node-ip", node]);
    let at: SocketAddr = format!("{node}:{port}").parse().unwrap();
    let r = http_request(at, "GET", "web.example", "/", &[]).unwrap();
    assert_eq!(echo_json(&r)["name"], "via-wildcard", "{}", r.body);
    assert!(
        !n.log_text().contains("gateway listener not bound"),
        "{}",
        n.log_text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Gateway's own listener is bound when the Gateway appears and closed
/// when it goes (its port refuses connections again).
#[test]
fn gateway_listener_follows_its_gateway() {
    let ip: std::net::IpAddr = "127.0.78.41".parse().unwrap();
    let echo = Echo::start(SocketAddr::new(ip, support::free_port(ip)), "followed");
    let gw_ip: std::net::IpAddr = "127.0.78.40".parse().unwrap();
    let gw = SocketAddr::new(gw_ip, support::free_port(gw_ip));
    let dir = std::env::temp_dir().join(format!("nodeway-gateway-follow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{{addresses: [\"{}\"]}}]\nports: [{{name: http, port: {}}}]\n",
        echo.addr.ip(),
        echo.addr.port()
    );
    let gateway = format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: nodeway}}\nspec: {{controllerName: nodeway.io/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: nodeway\n  addresses: [{{value: \"{gw_ip}\"}}]\n  listeners: [{{name: http, protocol: HTTP, port: {}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n",
        gw.port()
    );
    support::write_manifests(&dir, "all.yaml", &(service.clone() + &gateway));
    let _n = Nodeway::start(&dir, &[]);
    let name = || {
        http_request(gw, "GET", "any.example", "/", &[])
            .ok()
            .map(|r| echo_json(&r)["name"].as_str().unwrap_or("").to_string())
    };
    wait_for(Duration::from_secs(10), "the Gateway listener", || {
        name().as_deref() == Some("followed")
    });
    support::write_manifests(&dir, "all.yaml", &service);
    wait_for(Duration::from_secs(10), "the listener closed", || {
        std::net::TcpStream::connect_timeout(&gw, Duration::from_millis(200)).is_err()
    });
    let _ = std::fs::remove_dir_all(&dir);
}
