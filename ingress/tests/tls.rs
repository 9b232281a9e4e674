//! TLS: SNI picks the certificate (the client verifies it), HTTP/2 over TLS,
//! ssl-redirect, and certificates swapped with the Snapshot.

mod common;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }
    /// (cert PEM, key PEM, cert DER) for the names.
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.issuer.der().to_vec()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        TlsConnector::from(Arc::new(cfg))
    }
}

fn secret(name: &str, cert: &str, key: &str) -> String {
    let ind = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        ind(cert),
        ind(key)
    )
}

fn tls_ingress() -> String {
    r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure, namespace: default}
spec:
  tls:
  - {hosts: [a.test], secretName: cert-a}
  - {hosts: ["*.w.test"], secretName: cert-w}
  rules:
  - host: a.test
    http: {paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {name: http}}}}]}
  - host: "*.w.test"
    http: {paths: [{pathType: Prefix, path: /, backend: {service: {name: web, port: {name: http}}}}]}
"#
    .to_string()
}

/// Handshakes with SNI `name`; the presented leaf certificate and ALPN result.
async fn handshake(
    c: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    c.connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

fn leaf_of(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn sni_picks_certificate_h2_over_tls_and_swaps_on_reload() {
    let ca = Ca::new();
    let (ca_pem, ka_pem, a_der) = ca.leaf(&["a.test"]);
    let (cw_pem, kw_pem, w_der) = ca.leaf(&["*.w.test"]);
    let web = backend("web").await;
    let yaml = service("web", &[web])
        + &secret("cert-a", &ca_pem, &ka_pem)
        + &secret("cert-w", &cw_pem, &kw_pem)
        + &tls_ingress();
    let mut p = Plane::start(&yaml).await;

    let h1 = ca.connector(&[b"http/1.1"]);
    assert_eq!(
        leaf_of(&handshake(&h1, p.https, "a.test").await.unwrap()),
        a_der
    );
    assert_eq!(
        leaf_of(&handshake(&h1, p.https, "x.w.test").await.unwrap()),
        w_der
    );
    // Unknown names get the self-signed default, which our CA did not sign.
    assert!(handshake(&h1, p.https, "unknown.test").await.is_err());

    // HTTP/2 over TLS, routed by :authority.
    let h2 = ca.connector(&[b"h2"]);
    let tls = handshake(&h2, p.https, "x.w.test").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://x.w.test/h2?x=1")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        body.contains("uri=/h2?x=1")
            && body.contains("x-forwarded-proto: https")
            && body.contains("host: x.w.test"),
        "{body}"
    );

    // Plain HTTP to a TLS host is redirected (ssl-redirect defaults on).
    let r = get(p.http, "a.test", "/p?q=1").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.headers["location"].to_str().unwrap(),
        format!("https://a.test:{}/p?q=1", p.https.port())
    );

    // A new certificate in the Secret is served without restarting the listener.
    let (ca2_pem, ka2_pem, a2_der) = ca.leaf(&["a.test"]);
    p.apply(
        "test.yaml",
        &(service("web", &[web])
            + &secret("cert-a", &ca2_pem, &ka2_pem)
            + &secret("cert-w", &cw_pem, &kw_pem)
            + &tls_ingress()),
    )
    .await;
    let (h1c, addr) = (h1.clone(), p.https);
    wait_for(
        std::time::Duration::from_secs(10),
        "the new certificate",
        || {
            let (h1c, a2) = (h1c.clone(), a2_der.clone());
            async move {
                handshake(&h1c, addr, "a.test")
                    .await
                    .map(|s| leaf_of(&s) == a2)
                    .unwrap_or(false)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn ssl_redirect_off_and_force_on() {
    let web = backend("web").await;
    let yaml = service("web", &[web])
        + &ingress(
            "plain",
            "plain.test",
            &[("Prefix", "/", "web")],
            &[("force-ssl-redirect", "true")],
        )
        + &ingress(
            "keep",
            "keep.test",
            &[("Prefix", "/", "web")],
            &[
                ("force-ssl-redirect", "true"),
                ("preserve-trailing-slash", "true"),
            ],
        )
        + &ingress(
            "nossl",
            "nossl.test",
            &[("Prefix", "/", "web")],
            &[("ssl-redirect", "false")],
        )
        + &ingress(
            "solver",
            "plain.test",
            &[("Exact", "/.well-known/acme-challenge/token", "web")],
            &[("force-ssl-redirect", "true")],
        );
    let p = Plane::start(&yaml).await;
    let r = get(p.http, "plain.test", "/dir/").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    // ingress-nginx drops one trailing slash unless preserve-trailing-slash.
    let port = p.https.port();
    assert_eq!(
        r.headers["location"],
        format!("https://plain.test:{port}/dir").as_str()
    );
    let r = get(p.http, "keep.test", "/dir/").await;
    assert_eq!(
        r.headers["location"],
        format!("https://keep.test:{port}/dir/").as_str()
    );
    assert_eq!(get(p.http, "nossl.test", "/").await.status, StatusCode::OK);
    // An ACME solver's rule (cert-manager adds one per token) is never
    // redirected; the same path under the app's own `/` rule is.
    assert_eq!(
        get(p.http, "plain.test", "/.well-known/acme-challenge/token")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(p.http, "plain.test", "/.well-known/acme-challenge/other")
            .await
            .status,
        StatusCode::PERMANENT_REDIRECT
    );
}

#[tokio::test]
async fn ssl_redirect_needs_a_certificate_for_the_host() {
    let web = backend("web").await;
    // No spec.tls: ssl-redirect (even set explicitly) does nothing, as in
    // ingress-nginx; only force-ssl-redirect redirects hosts without TLS.
    let yaml = service("web", &[web])
        + &ingress(
            "notls",
            "notls.test",
            &[("Prefix", "/", "web")],
            &[("ssl-redirect", "true")],
        );
    let p = Plane::start(&yaml).await;
    assert_eq!(get(p.http, "notls.test", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn default_certificate_from_a_secret() {
    let ca = Ca::new();
    let (ca_pem, ka_pem, _) = ca.leaf(&["a.test"]);
    let (cd_pem, kd_pem, d_der) = ca.leaf(&["*.other.test"]);
    let web = backend("web").await;
    let yaml = service("web", &[web])
        + &secret("cert-a", &ca_pem, &ka_pem)
        + &secret("cert-w", &ca_pem, &ka_pem)
        + &secret("fallback", &cd_pem, &kd_pem)
        + &tls_ingress();
    let cfg = ingress::Config {
        default_certificate: Some(("default".into(), "fallback".into())),
        ..Default::default()
    };
    let p = Plane::start_with(&yaml, cfg).await;
    let c = ca.connector(&[b"http/1.1"]);
    // An SNI name no Ingress names gets the --default-certificate Secret.
    assert_eq!(
        leaf_of(&handshake(&c, p.https, "unknown.other.test").await.unwrap()),
        d_der
    );
}
