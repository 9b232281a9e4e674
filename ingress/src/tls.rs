//! TLS: certificates chosen by SNI from the current Snapshot (wildcards too),
//! swapped with the Snapshot without touching the listener; a default
//! certificate (a Secret, or self-signed at start) for unknown names.

use crate::Error;
use arc_swap::ArcSwap;
use model::Snapshot;
use model::ingress::IngressTable;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::sync::Arc;

struct CertState {
    table: Arc<IngressTable>,
    /// Secret `namespace/name` to its loaded key.
    keys: HashMap<Arc<str>, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

pub struct CertStore {
    state: ArcSwap<CertState>,
    self_signed: Arc<CertifiedKey>,
    default_ref: Option<(String, String)>,
    provider: Arc<CryptoProvider>,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertStore {
    pub fn new(default_ref: Option<(String, String)>) -> Result<CertStore, Error> {
        let provider = provider();
        let made = rcgen::generate_simple_self_signed(vec!["nodeway.invalid".to_string()])
            .map_err(|e| Error::Tls(format!("self-signed certificate: {e}")))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let self_signed = Arc::new(
            CertifiedKey::from_der(vec![made.cert.der().clone()], key, &provider)
                .map_err(|e| Error::Tls(format!("self-signed certificate: {e}")))?,
        );
        Ok(CertStore {
            state: ArcSwap::from_pointee(CertState {
                table: Arc::default(),
                keys: HashMap::new(),
                default: self_signed.clone(),
            }),
            self_signed,
            default_ref,
            provider,
        })
    }

    /// Rebuilds the SNI table from a Snapshot; keys already loaded for an
    /// unchanged certificate are reused.
    pub fn update(&self, snap: &Snapshot) {
        let prev = self.state.load();
        let mut keys: HashMap<Arc<str>, Arc<CertifiedKey>> = HashMap::new();
        let load = |id: &Arc<str>, t: &model::TlsSecret| -> Option<Arc<CertifiedKey>> {
            if let Some(k) = prev.keys.get(id).filter(|k| k.cert == t.chain) {
                return Some(k.clone());
            }
            match CertifiedKey::from_der(t.chain.clone(), t.key.clone_key(), &self.provider) {
                Ok(k) => Some(Arc::new(k)),
                Err(e) => {
                    tracing::warn!(secret = &**id, error = %e, "TLS Secret unusable; default certificate used instead");
                    None
                }
            }
        };
        for e in snap.ingress.certificates() {
            if keys.contains_key(&e.secret) {
                continue;
            }
            if let Some(k) = load(&e.secret, &e.cert) {
                keys.insert(e.secret.clone(), k);
            }
        }
        let default = self
            .default_ref
            .as_ref()
            .and_then(|(ns, name)| {
                let t = snap.tls_secrets.get(&(ns.clone(), name.clone()))?;
                load(&Arc::from(format!("{ns}/{name}")), t)
            })
            .unwrap_or_else(|| self.self_signed.clone());
        self.state.store(Arc::new(CertState {
            table: snap.ingress.clone(),
            keys,
            default,
        }));
    }
}

pub struct Resolver(pub Arc<CertStore>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let st = self.0.state.load();
        let by_sni = hello
            .server_name()
            .and_then(|sni| st.table.cert_for(sni))
            .and_then(|e| st.keys.get(&e.secret));
        Some(by_sni.unwrap_or(&st.default).clone())
    }
}

/// The TLS server config: TLS 1.2/1.3, ALPN h2 then http/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, Error> {
    let mut cfg = ServerConfig::builder_with_provider(store.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
