//! Wiring of the ingress plane into `nodeway run`: its flags and its start.

use crate::wire::{Ctx, PlaneHandle};

/// Flags of the ingress plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IngressArgs {}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(_args: &IngressArgs, _ctx: &mut Ctx) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    Ok(None)
}

/// Where plain HTTP listens (for the demo's guide).
pub fn http_addr(_args: &IngressArgs) -> std::net::SocketAddr {
    ([127, 0, 0, 1], 8080).into()
}

/// Where HTTPS listens (for the demo's guide).
pub fn https_addr(_args: &IngressArgs) -> std::net::SocketAddr {
    ([127, 0, 0, 1], 8443).into()
}

/// Which Ingresses are ours.
pub fn ingress_options(_args: &IngressArgs) -> model::ingress::IngressOptions {
    model::ingress::IngressOptions::default()
}
