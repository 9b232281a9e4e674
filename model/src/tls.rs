//! kubernetes.io/tls Secrets: PEM certificate chain and private key, checked
//! at load time so the TLS plane only ever sees usable material.

use crate::error::FieldError;
use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug)]
pub struct TlsSecret {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl TlsSecret {
    pub fn from_secret(s: &Secret) -> Result<TlsSecret, FieldError> {
        let get = |k: &str| -> Result<Vec<u8>, FieldError> {
            if let Some(v) = s.data.as_ref().and_then(|d| d.get(k)) {
                return Ok(v.0.clone());
            }
            if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(k)) {
                return Ok(v.as_bytes().to_vec());
            }
            Err(FieldError::new(format!("data[{k}]"), "is missing"))
        };
        let crt = get("tls.crt")?;
        let key = get("tls.key")?;
        Self::from_pem(&crt, &key)
    }

    pub fn from_pem(crt: &[u8], key: &[u8]) -> Result<TlsSecret, FieldError> {
        let chain = CertificateDer::pem_slice_iter(crt)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FieldError::new("data[tls.crt]", format!("invalid PEM: {e}")))?;
        if chain.is_empty() {
            return Err(FieldError::new(
                "data[tls.crt]",
                "holds no PEM CERTIFICATE block",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| FieldError::new("data[tls.key]", format!("no usable private key: {e}")))?;
        Ok(TlsSecret { chain, key })
    }
}

impl Clone for TlsSecret {
    fn clone(&self) -> Self {
        TlsSecret {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}
