//! Load-balancer health checks, kube-proxy's `healthCheckNodePort`: for a
//! LoadBalancer Service with `externalTrafficPolicy: Local`, every node
//! address answers HTTP on that port with 200 while this node has ready
//! endpoints of the Service and 503 otherwise, so the cloud load balancer
//! sends external traffic only to nodes that keep it local. The body is
//! kube-proxy's JSON; terminating endpoints do not count, so a node whose
//! pods are shutting down is drained.

use crate::Shared;
use model::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head must arrive within this (load balancers send one line
/// and a few headers).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 4096;

/// What one health-check address reports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Health {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints on this node.
    pub local_ready: usize,
}

pub(crate) type HealthMap = Arc<HashMap<SocketAddr, Arc<Health>>>;

/// The health of each Service with a health-check port, by node address.
pub(crate) fn build(
    snap: &Snapshot,
    node_ips: &[std::net::IpAddr],
    node_name: Option<&str>,
) -> HealthMap {
    let mut map = HashMap::new();
    for hc in snap.health_checks.iter() {
        let svc = &hc.service;
        let local_ready = svc
            .endpoints
            .iter()
            .filter(|e| e.ready && node_name.is_some() && e.node_name() == node_name)
            .count();
        let health = Arc::new(Health {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            local_ready,
        });
        for ip in node_ips {
            map.insert(SocketAddr::new(*ip, hc.port), health.clone());
        }
    }
    Arc::new(map)
}

/// Answers health checks on `local` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(answer(conn, local, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(listen = %local, error = %e, "health check accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut conn: TcpStream, local: SocketAddr, shared: Arc<Shared>) {
    // Any method and path is answered, as kube-proxy does; only the end of
    // the head is waited for.
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if !matches!(tokio::time::timeout(READ_TIMEOUT, read).await, Ok(true)) {
        return;
    }
    let health = shared.view.load().health.get(&local).cloned();
    let _ = conn.write_all(render(health.as_deref()).as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// The whole HTTP response: 200 with local endpoints, else 503.
fn render(health: Option<&Health>) -> String {
    let (namespace, name, n) = match health {
        Some(h) => (h.namespace.as_str(), h.name.as_str(), h.local_ready),
        None => ("", "", 0),
    };
    // Namespaces and names are DNS labels: nothing in them needs escaping.
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": \"{namespace}\",\n\t\t\"name\": \"{name}\"\n\t}},\n\t\"localEndpoints\": {n},\n\t\"serviceProxyHealthy\": true\n}}"
    );
    let status = if n > 0 {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {n}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_with_local_ready_endpoints() {
        let h = Health {
            namespace: "shop".into(),
            name: "web".into(),
            local_ready: 2,
        };
        let ok = render(Some(&h));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("X-Load-Balancing-Endpoint-Weight: 2\r\n"));
        assert!(ok.contains("\"localEndpoints\": 2"));
        assert!(ok.contains("\"namespace\": \"shop\""));
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        let none = Health {
            local_ready: 0,
            ..h
        };
        assert!(render(Some(&none)).starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(render(None).starts_with("HTTP/1.1 503"));
    }
}
