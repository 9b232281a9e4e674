//! `--publish-status`: puts this node's addresses into
//! `status.loadBalancer.ingress` of every Ingress nodeway serves (and
//! writes the Gateway API objects' status, [`crate::gateway_status`]), as
//! ingress controllers do, so `kubectl get ingress` shows where it is
//! served and tools waiting for an address (cert-manager's HTTP-01
//! checks, external-dns) find one.
//!
//! nodeway runs on every node, so each instance adds its own addresses and
//! leaves the others' alone: a read-modify-write of the status subresource
//! (`get` and `update` on `ingresses/status`, nothing more), retried on a
//! conflict. The Snapshot carries each served Ingress's status as the
//! watch last saw it, so an Ingress that already shows our addresses
//! costs nothing. An Ingress that stops being served while we run, and
//! every one at shutdown, loses our addresses again. (One that stopped
//! being served while we were down keeps them: like ingress-nginx, we
//! only know the Ingresses we serve.)

use crate::follow::Snapshots;
use futures_util::StreamExt;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use kube::api::PostParams;
use kube::{Api, Client};
use model::Snapshot;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// A failed write is tried again after this (or at the next Snapshot),
/// doubling up to [`RETRY_MAX`] while writes keep failing.
const RETRY: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Conflicts in a row before a write is left for the next round.
const CONFLICT_TRIES: usize = 5;
/// Status writes in flight at once when taking our addresses back.
const PARALLEL: usize = 16;

/// Keeps the status of the Ingresses served in line with the Snapshots.
pub struct StatusWriter {
    client: Client,
    /// This node's addresses, as the status shows them.
    addresses: Vec<String>,
    /// Ingresses (namespace, name) whose status we may have added our
    /// addresses to (noted before the write, so a cut-short round still
    /// takes them back).
    written: BTreeSet<(String, String)>,
    /// The Gateway API objects' status, written on the same rounds.
    gateway: crate::gateway_status::GatewayStatusWriter,
}

/// What to do with our addresses in one Ingress's status.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    Add,
    Remove,
}

impl StatusWriter {
    pub fn new(client: Client, addresses: &[IpAddr]) -> StatusWriter {
        StatusWriter {
            gateway: crate::gateway_status::GatewayStatusWriter::new(client.clone(), addresses),
            client,
            addresses: addresses.iter().map(IpAddr::to_string).collect(),
            written: BTreeSet::new(),
        }
    }

    /// Follows the Snapshots until the store closes or `stop` resolves
    /// (which cuts a round short); then takes our addresses back from every
    /// Ingress, `PARALLEL` at a time.
    pub async fn run(mut self, mut snapshots: Snapshots, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut retry = RETRY;
        loop {
            let snap = snapshots.load();
            let complete = tokio::select! {
                biased;
                () = &mut stop => break,
                complete = self.sync(&snap) => complete,
            };
            retry = if complete {
                RETRY
            } else {
                (retry * 2).min(RETRY_MAX)
            };
            let again = async {
                if complete {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(retry).await;
            };
            tokio::select! {
                biased;
                () = &mut stop => break,
                changed = snapshots.changed() => if changed.is_err() { break },
                () = again => {}
            }
        }
        self.withdraw_all().await;
    }

    /// Adds our addresses to every served Ingress that lacks them and takes
    /// them back from those no longer served; whether every write worked.
    pub async fn sync(&mut self, snap: &Snapshot) -> bool {
        let mut complete = true;
        let mut served = BTreeSet::new();
        for ing in snap.ingress.served() {
            let key = (ing.namespace.clone(), ing.name.clone());
            let shown = self
                .addresses
                .iter()
                .all(|a| ing.status_addresses.contains(a));
            if !shown {
                self.written.insert(key.clone());
                complete &= self.edit(&key, Edit::Add).await;
            }
            served.insert(key);
        }
        complete &= self.gateway.sync(snap).await;
        let stale: Vec<_> = self.written.difference(&served).cloned().collect();
        for key in stale {
            if self.edit(&key, Edit::Remove).await {
                self.written.remove(&key);
            } else {
                complete = false;
            }
        }
        complete
    }

    /// Takes our addresses back from every Ingress we may have written
    /// them to.
    pub async fn withdraw_all(&mut self) {
        let written = std::mem::take(&mut self.written);
        let this = &*self;
        futures_util::stream::iter(written)
            .map(|key| async move { this.edit(&key, Edit::Remove).await })
            .buffer_unordered(PARALLEL)
            .for_each(|_| std::future::ready(()))
            .await;
    }

    /// One read-modify-write of an Ingress's status; whether it is done
    /// (a deleted Ingress is done).
    async fn edit(&self, (namespace, name): &(String, String), edit: Edit) -> bool {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..CONFLICT_TRIES {
            let mut ing = match api.get_status(name).await {
                Ok(ing) => ing,
                Err(kube::Error::Api(s)) if s.is_not_found() => return true,
                Err(e) => {
                    tracing::warn!(ingress = %format!("{namespace}/{name}"), error = %e, "cannot read the Ingress status");
                    return false;
                }
            };
            if !self.apply(&mut ing, edit) {
                return true;
            }
            match api.replace_status(name, &PostParams::default(), &ing).await {
                Ok(_) => {
                    tracing::info!(ingress = %format!("{namespace}/{name}"), addresses = ?self.addresses, added = edit == Edit::Add, "Ingress status updated");
                    return true;
                }
                // Someone else wrote it since we read it: read it again.
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(kube::Error::Api(s)) if s.is_not_found() => return true,
                Err(e) => {
                    tracing::warn!(ingress = %format!("{namespace}/{name}"), error = %e, "cannot update the Ingress status");
                    return false;
                }
            }
        }
        false
    }

    /// Adds or removes our addresses in `ing`'s status; whether it changed.
    fn apply(&self, ing: &mut Ingress, edit: Edit) -> bool {
        let list = ing
            .status
            .get_or_insert_with(IngressStatus::default)
            .load_balancer
            .get_or_insert_with(IngressLoadBalancerStatus::default)
            .ingress
            .get_or_insert_with(Vec::new);
        match edit {
            Edit::Add => {
                let missing: Vec<&String> = self
                    .addresses
                    .iter()
                    .filter(|a| !list.iter().any(|i| i.ip.as_ref() == Some(*a)))
                    .collect();
                if missing.is_empty() {
                    return false;
                }
                list.extend(missing.into_iter().map(|a| IngressLoadBalancerIngress {
                    ip: Some(a.clone()),
                    ..Default::default()
                }));
                // One order on every node, so the lists they write agree.
                list.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
                true
            }
            Edit::Remove => {
                let before = list.len();
                list.retain(|i| !i.ip.as_ref().is_some_and(|ip| self.addresses.contains(ip)));
                list.len() != before
            }
        }
    }
}
