//! Wiring of the dns plane into `nodeway run`: its flags and its start.

use crate::wire::{Ctx, PlaneHandle};

/// Flags of the dns plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DnsArgs {}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(_args: &DnsArgs, _ctx: &mut Ctx) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    Ok(None)
}

/// Where DNS listens (for the demo's guide).
pub fn listen_addr(_args: &DnsArgs) -> std::net::SocketAddr {
    ([127, 0, 0, 1], 1053).into()
}
