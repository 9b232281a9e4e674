//! In-process harness: a Proxy over Snapshots built from YAML, plus tiny
//! TCP/UDP backends on distinct 127.x addresses.
#![allow(dead_code)]

use control::MemorySource;
use model::CompileOptions;
use prometheus_client::registry::Registry;
use proxy::{Config, Proxy};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Bounds every wait in these tests so a bug fails instead of hanging.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct Harness {
    pub proxy: Proxy,
    pub registry: Registry,
    source: MemorySource,
}

impl Harness {
    pub async fn start(yaml: &str, cfg: Config) -> Harness {
        let mut source = MemorySource::new(CompileOptions::default());
        let snap = source.apply("test.yaml", yaml);
        assert!(snap.errors.is_empty(), "manifest errors: {:?}", snap.errors);
        let mut registry = Registry::default();
        let proxy = Proxy::start(cfg, source.store().snapshots(), &mut registry).await;
        assert_eq!(proxy.applied(), snap.generation);
        Harness {
            proxy,
            registry,
            source,
        }
    }

    /// Publishes a new Snapshot and waits until the proxy applied it.
    pub async fn update(&mut self, yaml: &str) {
        let snap = self.source.apply("test.yaml", yaml);
        assert!(snap.errors.is_empty(), "manifest errors: {:?}", snap.errors);
        tokio::time::timeout(DEADLINE, self.proxy.wait_applied(snap.generation))
            .await
            .expect("snapshot applied");
    }

    pub fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    /// The value of one sample, e.g. `nodeway_l4_connections_total{service="default/web"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
    }
}

/// One endpoint of a test EndpointSlice.
pub struct Ep<'a> {
    pub ip: &'a str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: &'a str,
}

pub fn ready(ip: &str) -> Ep<'_> {
    Ep {
        ip,
        ready: true,
        serving: true,
        terminating: false,
        node: "node-a",
    }
}

/// A Service `default/<name>` with one port named `p` and an EndpointSlice.
/// `spec_extra` is indented YAML added under `spec:`; `meta_extra` under `metadata:`.
#[allow(clippy::too_many_arguments)] // reads like the manifest it writes
pub fn service(
    name: &str,
    cluster_ip: &str,
    port: u16,
    proto: &str,
    target: u16,
    eps: &[Ep<'_>],
    spec_extra: &str,
    meta_extra: &str,
) -> String {
    let mut endpoints = String::from("\n");
    for e in eps {
        endpoints.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n  nodeName: {}\n",
            e.ip, e.ready, e.serving, e.terminating, e.node
        ));
    }
    if eps.is_empty() {
        endpoints = " []\n".to_string();
    }
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
{meta_extra}spec:
  clusterIP: {cluster_ip}
{spec_extra}  ports:
  - {{name: p, port: {port}, protocol: {proto}, targetPort: {target}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: p, port: {target}, protocol: {proto}}}]
endpoints:{endpoints}---
"
    )
}

/// A TCP Service `default/<name>` at `cluster_ip:8080` with one ready
/// endpoint `endpoint` on `backend`'s port.
pub fn tcp_service(name: &str, cluster_ip: &str, backend: &Backend, endpoint: &str) -> String {
    let eps = [ready(endpoint)];
    service(
        name,
        cluster_ip,
        8080,
        "TCP",
        backend.addr.port(),
        &eps,
        "",
        "",
    )
}

/// A TCP backend: greets each connection with `name\n`, then echoes.
pub struct Backend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(addr: SocketAddr, name: &str) -> Backend {
        let l = TcpListener::bind(addr).await.expect("bind backend");
        let addr = l.local_addr().unwrap();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Backend { addr, task }
    }

    /// A backend on `ip` using the same port as `like` (distinct IPs per
    /// test, so the port is free).
    pub async fn same_port(ip: &str, like: &Backend, name: &str) -> Backend {
        Backend::start(SocketAddr::new(ip.parse().unwrap(), like.addr.port()), name).await
    }
}

/// Connects from `from` (a 127.x source address) to `to`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(to).await
}

/// Connects and returns the greeting (the backend's name) and the stream.
pub async fn hello(to: SocketAddr) -> (String, BufReader<TcpStream>) {
    hello_from("127.0.0.1".parse().unwrap(), to).await
}

pub async fn hello_from(from: IpAddr, to: SocketAddr) -> (String, BufReader<TcpStream>) {
    let f = async {
        let s = connect_from(from, to).await.expect("connect");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.expect("greeting");
        (line.trim().to_string(), r)
    };
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("greeting in time")
}

/// Connects and expects the proxy to reset the connection (never a hang,
/// never data).
pub async fn expect_reset(to: SocketAddr) {
    let f = async {
        let mut s = match TcpStream::connect(to).await {
            Ok(s) => s,
            Err(e) => return e.kind(),
        };
        let mut buf = [0u8; 64];
        match s.read(&mut buf).await {
            Ok(0) => std::io::ErrorKind::UnexpectedEof,
            Ok(n) => panic!("got data: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => e.kind(),
        }
    };
    let kind = tokio::time::timeout(DEADLINE, f)
        .await
        .expect("reset, not a hang");
    assert_eq!(kind, std::io::ErrorKind::ConnectionReset);
}

/// A UDP backend answering `name|payload`.
pub async fn udp_backend(addr: SocketAddr, name: &str) -> (SocketAddr, JoinHandle<()>) {
    let s = UdpSocket::bind(addr).await.expect("bind udp backend");
    let addr = s.local_addr().unwrap();
    let name = name.to_string();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let mut reply = format!("{name}|").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    (addr, task)
}

/// Sends `msg` and returns (backend name, payload, reply source).
pub async fn udp_ask(
    sock: &UdpSocket,
    to: SocketAddr,
    msg: &[u8],
) -> (String, Vec<u8>, SocketAddr) {
    let f = async {
        sock.send_to(msg, to).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, from) = sock.recv_from(&mut buf).await.unwrap();
        let at = buf[..n]
            .iter()
            .position(|b| *b == b'|')
            .expect("name|payload");
        (
            String::from_utf8_lossy(&buf[..at]).into_owned(),
            buf[at + 1..n].to_vec(),
            from,
        )
    };
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("UDP reply in time")
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
