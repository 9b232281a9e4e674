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
            // The API server writes stringData over data.
            if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(k)) {
                return Ok(v.as_bytes().to_vec());
            }
            if let Some(v) = s.data.as_ref().and_then(|d| d.get(k)) {
                return Ok(v.0.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn string_data_is_written_over_data() {
        let pem = |f: &str| f.to_string();
        let mut s = Secret {
            data: Some(
                [
                    ("tls.crt".to_string(), ByteString(b"stale".to_vec())),
                    ("tls.key".to_string(), ByteString(b"stale".to_vec())),
                ]
                .into(),
            ),
            string_data: Some(
                [
                    (
                        "tls.crt".to_string(),
                        pem(include_str!("ingress/testdata/cert.pem")),
                    ),
                    (
                        "tls.key".to_string(),
                        pem(include_str!("ingress/testdata/key.pem")),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        };
        assert!(TlsSecret::from_secret(&s).is_ok(), "stringData wins");
        s.string_data = None;
        assert!(
            TlsSecret::from_secret(&s).is_err(),
            "data alone is read too"
        );
    }
}
