//! The real binary serving TLS: SNI picks the Secret's certificate (the client
//! verifies it), HTTP/2 over TLS, and a changed Secret file is served without
//! a restart.

mod support;

use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use support::{Echo, Nodeway, free_port, write_manifests};

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> (String, String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Service `web` (headless, port 80) whose one endpoint is `echo`.
fn web_service(echo: SocketAddr) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{clusterIP: None, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-0, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
endpoints: [{{addresses: ["{ip}"]}}]
ports: [{{name: http, port: {port}}}]
"#,
        ip = echo.ip(),
        port = echo.port(),
    )
}

/// A `kubernetes.io/tls` Secret in `default`, as a document of its own.
fn tls_secret(name: &str, crt: &str, key: &str) -> String {
    let ind = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        ind(crt),
        ind(key)
    )
}

fn manifests(echo: SocketAddr, crt: &str, key: &str) -> String {
    web_service(echo)
        + &tls_secret("site-tls", crt, key)
        + r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: default}
spec:
  ingressClassName: nodeway
  tls: [{hosts: [site.test], secretName: site-tls}]
  rules:
  - host: site.test
    http: {paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {number: 80}}}}]}
"#
}

/// (leaf certificate DER, HTTP version, body) of `GET https://site.test/x` over TLS with ALPN h2.
async fn fetch(
    addr: SocketAddr,
    ca_der: &[u8],
) -> std::io::Result<(Vec<u8>, http::Version, String)> {
    fetch_host(addr, ca_der, "site.test").await
}

/// [`fetch`] of `https://{host}/x`, with `host` as the SNI name.
async fn fetch_host(
    addr: SocketAddr,
    ca_der: &[u8],
    host: &str,
) -> std::io::Result<(Vec<u8>, http::Version, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(host.to_string()).unwrap(), tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://{host}/x"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let version = resp.version();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((leaf, version, String::from_utf8_lossy(&body).into()))
}

#[test]
fn tls_sni_h2_and_secret_rotation() {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let ca_der = ca.der().to_vec();
    let (crt, key, der1) = leaf(&ca, "site.test");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 46, 1));
    let echo = Echo::start(SocketAddr::new(ip, free_port(ip)), "site-pod");
    let dir = std::env::temp_dir().join(format!(
        "nodeway-ingress-tls-{}-{}",
        std::process::id(),
        free_port(ip)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    write_manifests(&dir, "site.yaml", &manifests(echo.addr, &crt, &key));
    let n = Nodeway::start(&dir, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let (got, version, body) = rt.block_on(fetch(n.https, &ca_der)).unwrap();
    assert_eq!(got, der1);
    assert_eq!(version, http::Version::HTTP_2);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["name"].as_str(), v["host"].as_str()),
        (Some("site-pod"), Some("site.test"))
    );
    assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");

    // Rotate the certificate: the listener stays, the new one is served.
    let (crt2, key2, der2) = leaf(&ca, "site.test");
    let generation = n.generation();
    write_manifests(&dir, "site.yaml", &manifests(echo.addr, &crt2, &key2));
    n.wait_generation(generation + 1);
    support::wait_for(Duration::from_secs(10), "the rotated certificate", || {
        rt.block_on(fetch(n.https, &ca_der))
            .map(|(d, _, _)| d == der2)
            .unwrap_or(false)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS Gateway listener: its own address, TLS terminated with the
/// certificate of the listener the SNI name selects (the client verifies
/// it), then the listener's HTTPRoutes.
#[test]
fn gateway_https_listeners_pick_certificates_by_sni() {
    gateway_https(false);
}

/// The DaemonSet's layout for HTTPS: `--https-listen=0.0.0.0:PORT` and a
/// Gateway without addresses on that port. The Ingress listener's socket
/// serves it, with the Gateway listeners' certificates.
#[test]
fn gateway_https_on_a_wildcard_ingress_listener() {
    gateway_https(true);
}

/// Two HTTPS listeners (a.gw.test, b.gw.test), each with its certificate:
/// on the Gateway's own address, or (`wildcard`) with no address, on the
/// port of `--https-listen=0.0.0.0:PORT`, reached at the node address.
fn gateway_https(wildcard: bool) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let ca_der = ca.der().to_vec();
    let (crt_a, key_a, der_a) = leaf(&ca, "a.gw.test");
    let (crt_b, key_b, der_b) = leaf(&ca, "b.gw.test");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 46, 2));
    let echo = Echo::start(SocketAddr::new(ip, free_port(ip)), "gw-pod");
    let gw_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 46, if wildcard { 4 } else { 3 }));
    let port = free_port(if wildcard {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        gw_ip
    });
    let gw = SocketAddr::new(gw_ip, port);
    let addresses = if wildcard {
        String::new()
    } else {
        format!("  addresses: [{{value: \"{gw_ip}\"}}]\n")
    };
    let yaml = web_service(echo.addr)
        + &tls_secret("cert-a", &crt_a, &key_a)
        + &tls_secret("cert-b", &crt_b, &key_b)
        + &format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: nodeway}}
spec: {{controllerName: nodeway.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: default}}
spec:
  gatewayClassName: nodeway
{addresses}  listeners:
  - {{name: a, protocol: HTTPS, port: {gw_port}, hostname: a.gw.test, tls: {{certificateRefs: [{{name: cert-a}}]}}}}
  - {{name: b, protocol: HTTPS, port: {gw_port}, hostname: b.gw.test, tls: {{certificateRefs: [{{name: cert-b}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: tls}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
"#,
            gw_port = gw.port(),
        );
    let dir = std::env::temp_dir().join(format!(
        "nodeway-gateway-tls-{}-{}",
        std::process::id(),
        gw.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    write_manifests(&dir, "all.yaml", &yaml);
    let (https, node) = (format!("0.0.0.0:{port}"), gw_ip.to_string());
    let extra: &[&str] = if wildcard {
        &["--https-listen", &https, "--node-ip", &node]
    } else {
        &[]
    };
    let _n = Nodeway::start(&dir, extra);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    support::wait_for(
        Duration::from_secs(10),
        "the HTTPS Gateway listener",
        || rt.block_on(fetch_host(gw, &ca_der, "a.gw.test")).is_ok(),
    );
    for (host, der) in [("a.gw.test", &der_a), ("b.gw.test", &der_b)] {
        let (got, _, body) = rt.block_on(fetch_host(gw, &ca_der, host)).unwrap();
        assert_eq!(&got, der, "{host}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["name"].as_str(), v["host"].as_str()),
            (Some("gw-pod"), Some(host))
        );
        assert_eq!(v["headers"]["x-forwarded-proto"][0], "https");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
