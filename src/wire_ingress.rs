//! Wiring of the ingress plane into `nodeway run`: its flags and its start.

use crate::wire::{Ctx, PlaneHandle};

/// Flags of the ingress plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IngressArgs {}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(_args: &IngressArgs, _ctx: &mut Ctx) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    Ok(None)
}
