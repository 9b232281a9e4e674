//! TLS: certificates chosen by SNI from the current Snapshot (wildcards too),
//! swapped with the Snapshot without touching the listener; a default
//! certificate (a Secret, or self-signed at start) for unknown names.

use crate::Error;
use control::{Change, Compiled, View};
use model::ingress::IngressTable;
use model::snapshot::Listen;
use model::{ServiceMap, Snapshot};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::sync::Arc;

/// The L7 plane's view of one Snapshot: its route table and the TLS keys
/// of the certificates the table refers to, swapped together so a request
/// never sees the routes of one generation with the certificates of another.
pub struct L7View {
    pub table: Arc<IngressTable>,
    /// Gateway API listeners and rules.
    pub gateway: Arc<model::gateway::GatewayTable>,
    /// The Snapshot's Services: routes name their backend Service, and a
    /// request reads its current endpoints here.
    pub services: ServiceMap,
    /// Secret `namespace/name` to its loaded key.
    keys: HashMap<Arc<str>, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// Compiles Snapshots into [`L7View`]s: keys already loaded for an
/// unchanged certificate are reused from the previous view.
pub struct ViewCompiler {
    self_signed: Arc<CertifiedKey>,
    default_ref: Option<(String, String)>,
    provider: Arc<CryptoProvider>,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ViewCompiler {
    /// `default_ref`: the Secret for unknown SNI names (else a self-signed
    /// certificate made now).
    pub fn new(default_ref: Option<(String, String)>) -> Result<ViewCompiler, Error> {
        let provider = provider();
        let made = rcgen::generate_simple_self_signed(vec!["nodeway.invalid".to_string()])
            .map_err(|e| Error::Tls(format!("self-signed certificate: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let self_signed = Arc::new(
            CertifiedKey::from_der(vec![made.cert.der().clone()], key, &provider)
                .map_err(|e| Error::Tls(format!("self-signed certificate: {e}")))?,
        );
        Ok(ViewCompiler {
            self_signed,
            default_ref,
            provider,
        })
    }

    fn load(
        &self,
        prev: Option<&L7View>,
        id: &Arc<str>,
        t: &model::TlsSecret,
    ) -> Option<Arc<CertifiedKey>> {
        if let Some(k) = prev
            .and_then(|p| p.keys.get(id))
            .filter(|k| k.cert == t.chain)
        {
            return Some(k.clone());
        }
        match CertifiedKey::from_der(t.chain.clone(), t.key.clone_key(), &self.provider) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                tracing::warn!(secret = &**id, error = %e, "TLS Secret unusable; default certificate used instead");
                None
            }
        }
    }
}

impl control::ViewCompiler for ViewCompiler {
    type View = L7View;

    fn compile(&mut self, prev: Option<&L7View>, change: Change<'_>) -> Compiled<L7View> {
        let snap = change.new;
        // The table and its certificates only change with the model's
        // Ingress table or the default certificate's Secret.
        let default_secret = |s: &Snapshot| {
            self.default_ref
                .as_ref()
                .and_then(|(ns, name)| s.tls_secrets.get(&(ns.clone(), name.clone())).cloned())
        };
        if let (Some(p), Some(old)) = (prev, change.old)
            && Arc::ptr_eq(&p.table, &snap.ingress)
            && Arc::ptr_eq(&p.gateway, &snap.gateway)
            && opt_ptr_eq(&default_secret(old), &default_secret(snap))
        {
            return Compiled {
                view: L7View {
                    table: p.table.clone(),
                    gateway: snap.gateway.clone(),
                    services: snap.services.clone(),
                    keys: p.keys.clone(),
                    default: p.default.clone(),
                },
                errors: Vec::new(),
            };
        }
        let mut keys: HashMap<Arc<str>, Arc<CertifiedKey>> = HashMap::new();
        let gateway_certs = snap
            .gateway
            .ports()
            .flat_map(|(_, port)| port.listeners())
            .filter_map(|l| l.cert.as_ref());
        for e in snap.ingress.certificates().chain(gateway_certs) {
            if keys.contains_key(&e.secret) {
                continue;
            }
            if let Some(k) = self.load(prev, &e.secret, &e.cert) {
                keys.insert(e.secret.clone(), k);
            }
        }
        let default = self
            .default_ref
            .as_ref()
            .and_then(|(ns, name)| {
                let t = snap.tls_secrets.get(&(ns.clone(), name.clone()))?;
                self.load(prev, &Arc::from(format!("{ns}/{name}")), t)
            })
            .unwrap_or_else(|| self.self_signed.clone());
        Compiled {
            view: L7View {
                table: snap.ingress.clone(),
                gateway: snap.gateway.clone(),
                services: snap.services.clone(),
                keys,
                default,
            },
            errors: Vec::new(),
        }
    }
}

fn opt_ptr_eq<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

pub struct Resolver {
    view: View<L7View>,
    /// The Gateway listeners this socket serves, asked first (an address
    /// may carry both an Ingress and a Gateway HTTPS listener).
    gateway: GatewayScope,
}

/// Which Gateway HTTPS listeners a TLS socket serves.
#[derive(Clone, Debug)]
pub enum GatewayScope {
    /// A Gateway listener's own socket.
    Bind(Listen),
    /// An Ingress listener's socket: the Gateway listeners on its address
    /// and port (on any address, when it is `0.0.0.0` or `::`).
    Shared {
        addr: std::net::SocketAddr,
        node_ips: Vec<std::net::IpAddr>,
    },
}

impl GatewayScope {
    pub fn covers(&self, at: &Listen) -> bool {
        match (self, at) {
            (GatewayScope::Bind(b), _) => b == at,
            (GatewayScope::Shared { addr, .. }, Listen::Addr(a)) => covers(*addr, *a),
            (GatewayScope::Shared { addr, node_ips }, Listen::NodePort(p)) => {
                *p == addr.port() && (addr.ip().is_unspecified() || node_ips.contains(&addr.ip()))
            }
        }
    }
}

/// Whether a listening socket at `listen` takes connections to `to`: the
/// same port, and the same address or every address.
pub fn covers(listen: std::net::SocketAddr, to: std::net::SocketAddr) -> bool {
    listen.port() == to.port() && (listen.ip() == to.ip() || listen.ip().is_unspecified())
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let st = self.view.load();
        let sni = hello.server_name();
        let by_listener = st
            .gateway
            .ports()
            .filter(|(at, p)| p.tls && self.gateway.covers(at))
            .find_map(|(_, p)| p.cert_for(sni))
            .and_then(|e| st.keys.get(&e.secret));
        if let Some(k) = by_listener {
            return Some(k.clone());
        }
        let by_sni = hello
            .server_name()
            .and_then(|sni| st.table.cert_for(sni))
            .and_then(|e| st.keys.get(&e.secret));
        Some(by_sni.unwrap_or(&st.default).clone())
    }
}

/// The TLS server config: TLS 1.2/1.3, ALPN h2 then http/1.1. `gateway`:
/// the Gateway listeners the socket serves, whose certificates come first.
pub fn server_config(
    view: View<L7View>,
    gateway: GatewayScope,
) -> Result<Arc<ServerConfig>, Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { view, gateway }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    /// An Ingress listener on `0.0.0.0:443` serves every Gateway HTTPS
    /// listener on port 443; one on a node address, those on it and the
    /// address-less ones; a Gateway's own socket, only itself.
    #[test]
    fn which_gateway_listeners_a_socket_serves() {
        let at = |s: &str| Listen::Addr(s.parse().unwrap());
        let node: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let shared = |addr: &str| GatewayScope::Shared {
            addr: addr.parse().unwrap(),
            node_ips: vec![node],
        };
        let any = shared("0.0.0.0:443");
        assert!(any.covers(&at("192.0.2.7:443")) && any.covers(&Listen::NodePort(443)));
        assert!(!any.covers(&at("192.0.2.7:8443")) && !any.covers(&Listen::NodePort(8443)));
        let on_node = shared("10.0.0.5:443");
        assert!(on_node.covers(&at("10.0.0.5:443")) && on_node.covers(&Listen::NodePort(443)));
        assert!(!on_node.covers(&at("192.0.2.7:443")));
        let elsewhere = shared("127.0.0.1:443");
        assert!(!elsewhere.covers(&Listen::NodePort(443)));
        let own = GatewayScope::Bind(at("192.0.2.7:443"));
        assert!(own.covers(&at("192.0.2.7:443")) && !own.covers(&Listen::NodePort(443)));
    }
}
