//! Wiring of the dns plane into `nodeway run`: its flags and its start.

use crate::wire::{Ctx, PlaneHandle};

/// Flags of the dns plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DnsArgs {}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(_args: &DnsArgs, _ctx: &mut Ctx) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    Ok(None)
}
