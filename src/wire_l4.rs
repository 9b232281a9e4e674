//! Wiring of the l4 plane into `nodeway run`: its flags and its start.

use crate::wire::{Ctx, PlaneHandle};

/// Flags of the l4 plane.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct L4Args {}

/// Starts the plane (binds its listeners) and returns its handle.
pub async fn start(_args: &L4Args, _ctx: &mut Ctx) -> anyhow::Result<Option<Box<dyn PlaneHandle>>> {
    Ok(None)
}
