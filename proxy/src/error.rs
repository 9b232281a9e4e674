//! Errors of the L4 plane.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be created or bound. Reported per address; the
    /// other listeners keep serving.
    #[error("bind {addr}/{protocol} for Service {service}: {source}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        service: String,
        #[source]
        source: std::io::Error,
    },
    /// A duration flag or annotation that does not parse (e.g. `2s`, `500ms`).
    #[error("invalid duration {0:?}: expected a number with ms, s, m or h")]
    Duration(String),
    #[error("invalid timeout {0:?}: must be above zero")]
    ZeroTimeout(String),
}
