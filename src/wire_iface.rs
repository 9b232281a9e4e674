//! Wiring of `--manage-interface` into `nodeway run`: the Service addresses
//! kept on an interface (crate `hostaddr`). Not a plane: it serves nothing,
//! it makes the kernel deliver Service traffic to the planes. It starts
//! before L4 and stops after every plane has drained, so connections to a
//! Service address never lose the address while they finish.

use crate::wire::{BoxFuture, PlaneHandle};
use control::Snapshots;
use std::time::Duration;

/// Flags of the managed interface.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InterfaceArgs {
    /// Keep the ClusterIPs and externalIPs as /32 (/128) addresses on this
    /// interface (created as a dummy if missing; an existing one such as
    /// `lo` where the kernel has no dummy driver), as kube-proxy's IPVS
    /// mode does with kube-ipvs0. Addresses it did not add are never touched.
    #[arg(long, value_name = "NAME")]
    pub manage_interface: Option<String>,
    /// Leave the addresses on the interface at shutdown.
    #[arg(long, requires = "manage_interface")]
    pub keep_interface: bool,
}

/// Starts the keeper if asked to.
pub async fn start(
    args: &InterfaceArgs,
    snapshots: Snapshots,
) -> anyhow::Result<Option<hostaddr::Keeper>> {
    let Some(interface) = args.manage_interface.clone() else {
        return Ok(None);
    };
    let cfg = hostaddr::Config {
        interface,
        keep: args.keep_interface,
    };
    Ok(Some(hostaddr::Keeper::start(cfg, snapshots).await?))
}

/// Shows the keeper's problems in `/readyz`; stopping it is left to `run`
/// (after the planes drained).
pub struct Handle(pub hostaddr::Problems);

impl PlaneHandle for Handle {
    fn name(&self) -> &'static str {
        "interface"
    }

    fn problems(&self) -> Vec<String> {
        self.0.get()
    }

    fn applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    fn shutdown(self: Box<Self>, _grace: Duration) -> BoxFuture {
        Box::pin(async {})
    }
}
