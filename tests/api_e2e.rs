//! The Kubernetes API source against a stand-in API server on loopback that
//! speaks the real wire shapes: list envelopes with
//! `metadata.resourceVersion` and items without kind/apiVersion, chunked
//! watch streams of `{"type","object"}` lines (ADDED, MODIFIED, DELETED,
//! BOOKMARK), a 410 Expired delivered as an ERROR event.

mod support;

use bytes::Bytes;
use hickory_proto::op::ResponseCode;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::sync::mpsc;

/// The collections nodeway lists and watches: (path, kind, apiVersion).
const COLLECTIONS: [(&str, &str, &str); 10] = [
    ("/api/v1/namespaces", "Namespace", "v1"),
    ("/api/v1/services", "Service", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "discovery.k8s.io/v1",
    ),
    (
        "/apis/networking.k8s.io/v1/ingressclasses",
        "IngressClass",
        "networking.k8s.io/v1",
    ),
    (
        "/apis/networking.k8s.io/v1/ingresses",
        "Ingress",
        "networking.k8s.io/v1",
    ),
    ("/api/v1/secrets", "Secret", "v1"),
    // Only where the Gateway API CRDs are installed (`State::gateway_crds`).
    (
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
        "GatewayClass",
        GATEWAY_V1,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1/gateways",
        "Gateway",
        GATEWAY_V1,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1/httproutes",
        "HTTPRoute",
        GATEWAY_V1,
    ),
    (
        "/apis/gateway.networking.k8s.io/v1beta1/referencegrants",
        "ReferenceGrant",
        "gateway.networking.k8s.io/v1beta1",
    ),
];

const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";

/// A watch stream's next chunk, or `Err`: cut the connection there (no
/// terminating chunk).
type Watcher = mpsc::UnboundedSender<Result<Bytes, ()>>;

#[derive(Default)]
struct State {
    rv: u64,
    /// Objects by collection path, then namespace/name.
    items: HashMap<&'static str, BTreeMap<String, Value>>,
    watchers: HashMap<&'static str, Vec<Watcher>>,
    lists: usize,
    /// Lists of these collections wait until taken out (a slow list).
    held: Vec<&'static str>,
    /// This many status writes fail with 409 Conflict first (someone else
    /// wrote in between).
    conflicts: usize,
    status_writes: usize,
    /// The Gateway API CRDs are installed: discovery lists them and their
    /// collections answer (else both are 404, as on a bare cluster).
    gateway_crds: bool,
    /// Collections that answer 403 (a ClusterRole without them).
    forbidden: Vec<&'static str>,
}

/// A stand-in API server on loopback, in a thread of its own.
struct FakeApi {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn collection(path: &str) -> Option<(&'static str, &'static str, &'static str)> {
    COLLECTIONS.iter().copied().find(|(p, _, _)| *p == path)
}

fn key(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap()
    )
}

impl FakeApi {
    fn start() -> FakeApi {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        continue;
                    };
                    let st = st.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let st = st.clone();
                                async move {
                                    let path = req.uri().path().to_string();
                                    while st.lock().unwrap().held.iter().any(|h| *h == path) {
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                    let (parts, body) = req.into_parts();
                                    let body = body
                                        .collect()
                                        .await
                                        .map(|b| b.to_bytes())
                                        .unwrap_or_default();
                                    let req = hyper::Request::from_parts(parts, ());
                                    Ok::<_, Infallible>(serve(&st, req, &body))
                                }
                            },
                        );
                        let io = hyper_util::rt::TokioIo::new(conn);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
            });
        });
        FakeApi { addr, state }
    }

    /// Adds or replaces an object without telling any watcher.
    fn put_silently(&self, path: &'static str, mut obj: Value) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        st.items.entry(path).or_default().insert(key(&obj), obj);
    }

    /// Changes the collection and sends the event to its watchers.
    fn event(&self, path: &'static str, kind: &str, mut obj: Value) {
        let (_, k, v) = collection(path).unwrap();
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let items = st.items.entry(path).or_default();
        if kind == "DELETED" {
            items.remove(&key(&obj));
        } else {
            items.insert(key(&obj), obj.clone());
        }
        obj["kind"] = json!(k);
        obj["apiVersion"] = json!(v);
        Self::send(&mut st, path, json!({"type": kind, "object": obj}));
    }

    fn bookmark(&self, path: &'static str) {
        let (_, k, v) = collection(path).unwrap();
        let mut st = self.state.lock().unwrap();
        let rv = st.rv.to_string();
        let obj = json!({"kind": k, "apiVersion": v, "metadata": {"resourceVersion": rv}});
        Self::send(&mut st, path, json!({"type": "BOOKMARK", "object": obj}));
    }

    /// The watch is too old: the client must list again.
    fn expire(&self, path: &'static str) {
        let mut st = self.state.lock().unwrap();
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
        Self::send(&mut st, path, json!({"type": "ERROR", "object": status}));
        // The server ends the stream after an ERROR.
        st.watchers.remove(path);
    }

    fn send(st: &mut State, path: &'static str, event: Value) {
        let mut line = serde_json::to_vec(&event).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        if let Some(ws) = st.watchers.get_mut(path) {
            ws.retain(|w| w.send(Ok(line.clone())).is_ok());
        }
    }

    /// Cuts every watch of `path` mid-stream, as a dropped connection does.
    fn cut(&self, path: &'static str) {
        let mut st = self.state.lock().unwrap();
        for w in st.watchers.remove(path).unwrap_or_default() {
            let _ = w.send(Err(()));
        }
    }

    fn watching(&self, path: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.watchers.get(path).map_or(0, Vec::len)
    }

    fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }
}

/// A watch stream cut on purpose.
#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("watch cut")
    }
}

impl std::error::Error for Cut {}

type Body = http_body_util::combinators::BoxBody<Bytes, Cut>;

fn json_response(code: u16, body: &Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(body).unwrap()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn status_error(code: u16, reason: &str) -> hyper::Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": reason, "reason": reason, "code": code}),
    )
}

const INGRESSES: &str = "/apis/networking.k8s.io/v1/ingresses";

/// GET and PUT of an object's status subresource, in any collection
/// (`.../namespaces/NS/PLURAL/NAME/status`, or `.../PLURAL/NAME/status` for
/// a cluster-scoped kind), with the API server's optimistic concurrency on
/// resourceVersion.
fn status_subresource(
    st: &Mutex<State>,
    method: &hyper::Method,
    path: &str,
    body: &[u8],
) -> Option<hyper::Response<Body>> {
    let rest = path.strip_suffix("/status")?;
    let (collection, kind, version, key) = COLLECTIONS.iter().find_map(|(p, kind, version)| {
        let (base, plural) = p.rsplit_once('/').unwrap();
        let rest = rest.strip_prefix(base)?.strip_prefix('/')?;
        let (ns, rest) = match rest.strip_prefix("namespaces/") {
            Some(r) => r.split_once('/')?,
            None => ("", rest),
        };
        let name = rest.strip_prefix(plural)?.strip_prefix('/')?;
        (!name.contains('/')).then(|| (*p, *kind, *version, format!("{ns}/{name}")))
    })?;
    let mut st = st.lock().unwrap();
    let Some(mut obj) = st.items.get(collection).and_then(|m| m.get(&key)).cloned() else {
        return Some(status_error(404, "NotFound"));
    };
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(version);
    if method == hyper::Method::GET {
        return Some(json_response(200, &obj));
    }
    let sent: Value = serde_json::from_slice(body).unwrap();
    if st.conflicts > 0 || sent["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]
    {
        st.conflicts = st.conflicts.saturating_sub(1);
        // What a concurrent writer would have done: a newer version.
        st.rv += 1;
        let rv = st.rv.to_string();
        st.items.get_mut(collection).unwrap().get_mut(&key).unwrap()["metadata"]["resourceVersion"] =
            json!(rv);
        return Some(status_error(409, "Conflict"));
    }
    st.status_writes += 1;
    st.rv += 1;
    obj["status"] = sent["status"].clone();
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.items
        .get_mut(collection)
        .unwrap()
        .insert(key, obj.clone());
    FakeApi::send(
        &mut st,
        collection,
        json!({"type": "MODIFIED", "object": obj}),
    );
    Some(json_response(200, &obj))
}

/// API discovery of the Gateway API group versions (`/apis/GROUP/VERSION`).
fn gateway_discovery(st: &Mutex<State>, path: &str) -> Option<hyper::Response<Body>> {
    let version = path
        .strip_prefix("/apis/gateway.networking.k8s.io/")
        .filter(|v| !v.contains('/'))?;
    if !st.lock().unwrap().gateway_crds {
        return Some(status_error(404, "NotFound"));
    }
    let group_version = format!("gateway.networking.k8s.io/{version}");
    let resources: Vec<Value> = COLLECTIONS
        .iter()
        .filter(|(_, _, v)| *v == group_version)
        .map(|(p, kind, _)| {
            let plural = p.rsplit('/').next().unwrap();
            json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": *kind != "GatewayClass",
                   "kind": kind, "verbs": ["get", "list", "watch"]})
        })
        .collect();
    Some(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    ))
}

fn serve(st: &Mutex<State>, req: hyper::Request<()>, body: &[u8]) -> hyper::Response<Body> {
    if let Some(r) = status_subresource(st, req.method(), req.uri().path(), body) {
        return r;
    }
    if let Some(r) = gateway_discovery(st, req.uri().path()) {
        return r;
    }
    let Some((path, kind, version)) = collection(req.uri().path()) else {
        return status_error(404, "NotFound");
    };
    if version.starts_with("gateway.networking.k8s.io") && !st.lock().unwrap().gateway_crds {
        return status_error(404, "NotFound");
    }
    if st.lock().unwrap().forbidden.contains(&path) {
        return status_error(403, "Forbidden");
    }
    let query = req.uri().query().unwrap_or("");
    let mut st = st.lock().unwrap();
    if query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1")
    {
        let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, ()>>();
        st.watchers.entry(path).or_default().push(tx);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?.map(Frame::data).map_err(|()| Cut);
            Some((chunk, rx))
        });
        return hyper::Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap();
    }
    st.lists += 1;
    let items: Vec<Value> = st
        .items
        .get(path)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let list = json!({
        "kind": format!("{kind}List"),
        "apiVersion": version,
        "metadata": {"resourceVersion": st.rv.to_string()},
        "items": items,
    });
    hyper::Response::builder()
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(&list).unwrap()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

impl FakeApi {
    /// Writes a kubeconfig for this server into `dir`; its path.
    fn kubeconfig(&self, dir: &std::path::Path) -> String {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{}\"}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
                self.addr
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

fn service(name: &str, ip: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "default", "uid": name},
           "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
}

#[test]
fn the_api_source_lists_watches_and_relists() {
    let api = FakeApi::start();
    api.put_silently(
        "/api/v1/namespaces",
        json!({"metadata": {"name": "default"}}),
    );
    api.put_silently("/api/v1/services", service("web", "127.0.34.10"));
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    // A slow initial list: not ready, and DNS says SERVFAIL (never
    // NXDOMAIN) for the cluster's names until every list is complete.
    let slices = "/apis/discovery.k8s.io/v1/endpointslices";
    api.state.lock().unwrap().held.push(slices);
    let mut n = Nodeway::spawn_from(&["--kubeconfig", &kc], &["--l4-disable"]);
    let web = "web.default.svc.cluster.local.";
    wait_for(Duration::from_secs(20), "DNS answering SERVFAIL", || {
        a_record(n.dns, web).0 == ResponseCode::ServFail
    });
    // /readyz names what it waits for.
    wait_for(
        Duration::from_secs(10),
        "/readyz naming the slow list",
        || {
            http_get(n.admin, "admin", "/readyz").is_ok_and(|(code, body)| {
                code == 503
                    && body.contains(
                        "config: not loaded yet: waiting for the first list of EndpointSlice\n",
                    )
            })
        },
    );
    api.state.lock().unwrap().held.clear();
    n.wait_ready();
    assert_eq!(a_record(n.dns, web).1, ["127.0.34.10"]);

    // Watch events: ADDED, MODIFIED, a BOOKMARK, DELETED.
    let svcs = "/api/v1/services";
    wait_for(Duration::from_secs(10), "a Service watch", || {
        api.watching(svcs) > 0
    });
    api.event(svcs, "ADDED", service("api", "127.0.34.11"));
    let api_name = "api.default.svc.cluster.local.";
    wait_for(Duration::from_secs(10), "api added", || {
        a_record(n.dns, api_name).1 == ["127.0.34.11"]
    });
    api.bookmark(svcs);
    api.event(svcs, "MODIFIED", service("api", "127.0.34.12"));
    wait_for(Duration::from_secs(10), "api modified", || {
        a_record(n.dns, api_name).1 == ["127.0.34.12"]
    });
    api.event(svcs, "DELETED", service("web", "127.0.34.10"));
    wait_for(Duration::from_secs(10), "web deleted", || {
        a_record(n.dns, web).0 == ResponseCode::NXDomain
    });

    // A watch cut without its terminating chunk: the source watches again
    // and misses nothing sent after.
    api.cut(svcs);
    wait_for(Duration::from_secs(20), "a new Service watch", || {
        api.watching(svcs) > 0
    });
    api.event(svcs, "ADDED", service("after-cut", "127.0.34.14"));
    wait_for(Duration::from_secs(10), "the event after the cut", || {
        a_record(n.dns, "after-cut.default.svc.cluster.local.").1 == ["127.0.34.14"]
    });

    // 410 Expired: the source lists again and applies the difference
    // (a Service that came and one that went while it was not watching).
    let lists = api.lists();
    api.put_silently(svcs, service("late", "127.0.34.13"));
    api.state
        .lock()
        .unwrap()
        .items
        .get_mut(svcs)
        .unwrap()
        .remove("default/api");
    api.expire(svcs);
    wait_for(Duration::from_secs(20), "a re-list after 410", || {
        api.lists() > lists
    });
    wait_for(Duration::from_secs(10), "the re-list applied", || {
        a_record(n.dns, "late.default.svc.cluster.local.").1 == ["127.0.34.13"]
            && a_record(n.dns, api_name).0 == ResponseCode::NXDomain
    });

    // Per resource: objects held, watch failures, when the last event came.
    let svc = "{resource=\"Service\"}";
    assert_eq!(n.metric(&format!("nodeway_api_objects{svc}")), Some(2.0));
    let restarts = n.metric(&format!("nodeway_api_watch_restarts_total{svc}"));
    assert!(restarts.is_some_and(|r| r >= 1.0), "{restarts:?}");
    let last = n.metric(&format!("nodeway_api_last_event_timestamp_seconds{svc}"));
    assert!(last.is_some_and(|t| t > 1.7e9), "{last:?}");
}

/// `--config` with the API: the files are merged in and watched, and where
/// both define an object the API's copy is served; when the API deletes
/// it, the file's copy takes over.
#[test]
fn files_merge_with_the_api_and_the_api_wins() {
    let api = FakeApi::start();
    api.put_silently(
        "/api/v1/namespaces",
        json!({"metadata": {"name": "default"}}),
    );
    let svcs = "/api/v1/services";
    api.put_silently(svcs, service("web", "127.0.34.20"));
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let files = dir.path().join("manifests");
    std::fs::create_dir(&files).unwrap();
    let file_svc = |name: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    };
    let write = |text: String| {
        let tmp = files.join(".local.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, files.join("local.yaml")).unwrap();
    };
    write(file_svc("web", "127.0.34.21") + &file_svc("local", "127.0.34.22"));
    let config = files.display().to_string();
    let n = Nodeway::start_from(
        &["--kubeconfig", &kc, "--config", &config],
        &["--l4-disable"],
    );
    let web = "web.default.svc.cluster.local.";
    let local = "local.default.svc.cluster.local.";
    assert_eq!(a_record(n.dns, web).1, ["127.0.34.20"], "the API's copy");
    assert_eq!(a_record(n.dns, local).1, ["127.0.34.22"]);

    wait_for(Duration::from_secs(10), "a Service watch", || {
        api.watching(svcs) > 0
    });
    api.event(svcs, "DELETED", service("web", "127.0.34.20"));
    wait_for(
        Duration::from_secs(10),
        "the file's copy taking over",
        || a_record(n.dns, web).1 == ["127.0.34.21"],
    );
    // The files are watched as well.
    write(file_svc("web", "127.0.34.21") + &file_svc("local", "127.0.34.23"));
    wait_for(Duration::from_secs(10), "the file change", || {
        a_record(n.dns, local).1 == ["127.0.34.23"]
    });
    api.event(svcs, "ADDED", service("web", "127.0.34.24"));
    wait_for(Duration::from_secs(10), "the API's copy back", || {
        a_record(n.dns, web).1 == ["127.0.34.24"]
    });
}

fn ingress(name: &str, class: &str, status_ips: &[&str]) -> Value {
    let lb: Vec<Value> = status_ips.iter().map(|ip| json!({"ip": ip})).collect();
    json!({"metadata": {"name": name, "namespace": "default", "uid": name},
           "spec": {"ingressClassName": class, "rules": [{"host": format!("{name}.example"), "http": {"paths": [
               {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
           "status": {"loadBalancer": {"ingress": lb}}})
}

impl FakeApi {
    /// The addresses an Ingress's status shows now.
    fn status_ips(&self, name: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.items[INGRESSES][&format!("default/{name}")]["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["ip"].as_str().map(String::from))
            .collect()
    }
}

/// `--publish-status`: this node's address goes into the status of the
/// Ingresses served (next to another node's, through a conflict), leaves
/// one that stops being served, and leaves all at shutdown.
#[test]
fn publish_status_adds_and_takes_back_this_nodes_address() {
    let api = FakeApi::start();
    api.put_silently(
        "/api/v1/namespaces",
        json!({"metadata": {"name": "default"}}),
    );
    api.put_silently("/api/v1/services", service("web", "127.0.34.30"));
    // Another node already published its address, and a load balancer its
    // hostname.
    let mut web = ingress("web", "nginx", &["127.0.0.99"]);
    web["status"]["loadBalancer"]["ingress"]
        .as_array_mut()
        .unwrap()
        .push(json!({"hostname": "lb.example"}));
    api.put_silently(INGRESSES, web);
    api.put_silently(INGRESSES, ingress("theirs", "traefik", &[]));
    api.state.lock().unwrap().conflicts = 1;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let mut n = Nodeway::start_from(
        &[
            "--kubeconfig",
            &kc,
            "--publish-status",
            "--node-ip",
            "127.0.34.1",
        ],
        &["--l4-disable"],
    );
    wait_for(Duration::from_secs(10), "our address in the status", || {
        api.status_ips("web") == ["127.0.0.99", "127.0.34.1"]
    });
    assert!(api.status_ips("theirs").is_empty(), "not ours: untouched");
    assert_eq!(
        api.state.lock().unwrap().conflicts,
        0,
        "the conflict was retried"
    );
    // The status change comes back through the watch; nothing more is written.
    let writes = api.state.lock().unwrap().status_writes;
    wait_for(Duration::from_secs(10), "an Ingress watch", || {
        api.watching(INGRESSES) > 0
    });
    api.event(INGRESSES, "ADDED", ingress("late", "nginx", &[]));
    wait_for(Duration::from_secs(10), "the new Ingress's status", || {
        api.status_ips("late") == ["127.0.34.1"]
    });
    assert_eq!(api.state.lock().unwrap().status_writes, writes + 1);

    // No longer ours: our address leaves, the other node's stays.
    let now = api.state.lock().unwrap().items[INGRESSES]["default/web"].clone();
    let mut moved = now.clone();
    moved["spec"]["ingressClassName"] = json!("traefik");
    api.event(INGRESSES, "MODIFIED", moved);
    wait_for(Duration::from_secs(10), "our address taken back", || {
        api.status_ips("web") == ["127.0.0.99"]
    });

    // Shutdown takes it back from the rest, and leaves the others' alone.
    assert!(n.terminate().success());
    assert!(api.status_ips("late").is_empty());
    assert_eq!(api.status_ips("web"), ["127.0.0.99"]);
    let st = api.state.lock().unwrap();
    let lb = &st.items[INGRESSES]["default/web"]["status"]["loadBalancer"]["ingress"];
    assert!(
        lb.as_array()
            .unwrap()
            .iter()
            .any(|i| i["hostname"] == "lb.example"),
        "{lb}"
    );
}

/// Where the Gateway API CRDs are installed, their objects are listed and
/// watched with the rest, and an HTTPRoute is served on its Gateway's
/// listener; a route added by a watch event is served too.
#[test]
fn gateway_api_objects_from_the_api_are_served() {
    let api = FakeApi::start();
    api.state.lock().unwrap().gateway_crds = true;
    let ip: std::net::IpAddr = "127.0.34.40".parse().unwrap();
    let echo = Echo::start(SocketAddr::new(ip, free_port(ip)), "gw-pod");
    let gw_ip: std::net::IpAddr = "127.0.34.41".parse().unwrap();
    let gw = SocketAddr::new(gw_ip, free_port(gw_ip));
    api.put_silently(
        "/api/v1/namespaces",
        json!({"metadata": {"name": "default"}}),
    );
    api.put_silently(
        "/api/v1/services",
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "web"},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    );
    api.put_silently(
        "/apis/discovery.k8s.io/v1/endpointslices",
        json!({"metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4", "endpoints": [{"addresses": [echo.addr.ip().to_string()]}],
               "ports": [{"name": "http", "port": echo.addr.port(), "protocol": "TCP"}]}),
    );
    api.put_silently(
        "/apis/gateway.networking.k8s.io/v1/gatewayclasses",
        json!({"metadata": {"name": "nodeway", "generation": 1}, "spec": {"controllerName": "nodeway.io/gateway-controller"}}),
    );
    api.put_silently(
        "/apis/gateway.networking.k8s.io/v1/gateways",
        json!({"metadata": {"name": "gw", "namespace": "default", "generation": 1},
               "spec": {"gatewayClassName": "nodeway", "addresses": [{"type": "IPAddress", "value": gw_ip.to_string()}],
                        "listeners": [{"name": "http", "protocol": "HTTP", "port": gw.port()}]}}),
    );
    let route = |name: &str, path: &str| {
        json!({"metadata": {"name": name, "namespace": "default", "generation": 1},
               "spec": {"parentRefs": [{"name": "gw"}],
                        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                                   "backendRefs": [{"name": "web", "port": 80}]}]}})
    };
    let routes = "/apis/gateway.networking.k8s.io/v1/httproutes";
    api.put_silently(routes, route("first", "/first"));
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let n = Nodeway::start_from(
        &["--kubeconfig", &kc, "--publish-status"],
        &["--l4-disable"],
    );
    let name = |path: &str| {
        http_request(gw, "GET", "any.example", path, &[])
            .ok()
            .map(|r| {
                let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                (r.status, v["name"].as_str().unwrap_or("").to_string())
            })
    };
    wait_for(Duration::from_secs(10), "the Gateway listener", || {
        name("/first").is_some()
    });
    assert_eq!(name("/first"), Some((200, "gw-pod".into())));
    assert_eq!(name("/second"), Some((404, String::new())));
    wait_for(Duration::from_secs(10), "an HTTPRoute watch", || {
        api.watching(routes) > 0
    });
    api.event(routes, "ADDED", route("second", "/second"));
    wait_for(
        Duration::from_secs(10),
        "the route added by the watch",
        || name("/second") == Some((200, "gw-pod".into())),
    );
    let objects = n.metric("nodeway_api_objects{resource=\"HTTPRoute\"}");
    assert_eq!(objects, Some(2.0));

    // --publish-status: the conditions, at the objects' generation.
    let status = |collection: &str, key: &str| {
        api.state.lock().unwrap().items[collection][key]["status"].clone()
    };
    let gateways = "/apis/gateway.networking.k8s.io/v1/gateways";
    wait_for(
        Duration::from_secs(10),
        "the Gateway status with both routes",
        || status(gateways, "default/gw")["listeners"][0]["attachedRoutes"] == 2,
    );
    let g = status(gateways, "default/gw");
    let kinds: Vec<(&str, &str)> = g["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("Accepted", "True"), ("Programmed", "True")], "{g}");
    assert_eq!(g["conditions"][0]["observedGeneration"], 1, "{g}");
    assert_eq!(g["addresses"][0]["value"], gw_ip.to_string(), "{g}");
    wait_for(Duration::from_secs(10), "the HTTPRoute status", || {
        status(routes, "default/first")["parents"][0]["conditions"][0]["reason"] == "Accepted"
    });
    let r = status(routes, "default/first");
    let parent = &r["parents"][0];
    assert_eq!(
        parent["controllerName"], "nodeway.io/gateway-controller",
        "{r}"
    );
    assert_eq!(parent["parentRef"]["name"], "gw", "{r}");
    assert_eq!(parent["conditions"][1]["type"], "ResolvedRefs", "{r}");
    assert!(
        parent["conditions"][0]["lastTransitionTime"].is_string(),
        "{r}"
    );
    let classes = "/apis/gateway.networking.k8s.io/v1/gatewayclasses";
    wait_for(Duration::from_secs(10), "the GatewayClass status", || {
        status(classes, "/nodeway")["conditions"][0]["status"] == "True"
    });

    // A route that no longer names our Gateway loses our parent entry.
    let mut moved = api.state.lock().unwrap().items[routes]["default/first"].clone();
    moved["spec"]["parentRefs"] = json!([{"name": "someone-elses"}]);
    moved["metadata"]["generation"] = json!(2);
    api.event(routes, "MODIFIED", moved);
    wait_for(
        Duration::from_secs(10),
        "our parent entry taken off",
        || status(routes, "default/first")["parents"] == json!([]),
    );
}

/// A Gateway API kind the ClusterRole does not grant (its list is
/// refused): the rest of the cluster is still served.
#[test]
fn a_gateway_kind_that_cannot_be_listed_holds_nothing_back() {
    let api = FakeApi::start();
    {
        let mut st = api.state.lock().unwrap();
        st.gateway_crds = true;
        st.forbidden
            .push("/apis/gateway.networking.k8s.io/v1/httproutes");
    }
    api.put_silently(
        "/api/v1/namespaces",
        json!({"metadata": {"name": "default"}}),
    );
    api.put_silently("/api/v1/services", service("web", "127.0.34.50"));
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let n = Nodeway::start_from(&["--kubeconfig", &kc], &["--l4-disable"]);
    assert_eq!(
        a_record(n.dns, "web.default.svc.cluster.local.").1,
        ["127.0.34.50"]
    );
    assert!(
        n.log_text().contains("cannot be listed"),
        "{}",
        n.log_text()
    );
}
