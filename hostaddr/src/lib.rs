//! `--manage-interface`: keeps exactly the current ClusterIPs and
//! externalIPs as host addresses (/32, /128) on one interface, as
//! kube-proxy's IPVS mode keeps them on `kube-ipvs0`. Then the kernel
//! delivers Service traffic from the node and from pods to the L4 plane
//! (steered or bound there).
//!
//! - The interface is created as a dummy if it does not exist; kernels
//!   without the dummy driver need an existing one named (`lo` works).
//! - Addresses it adds are marked (`ifa_proto`), so a run after a crash
//!   knows them; addresses it did not add are never touched, even when a
//!   Service wants one (it is then simply there already).
//! - It follows the Snapshot like a plane: the wanted set is a pure
//!   function of the Snapshot ([`ServiceAddrs`]), applied as a diff.
//! - On shutdown its addresses are removed unless asked to keep them.

mod netlink;

use control::{Change, Compiled, Snapshots, View, ViewCompiler};
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use netlink::PROTO;

/// The addresses a Snapshot wants on the interface: every ClusterIP and
/// externalIP of the Services this node proxies (headless and ExternalName
/// Services have none; Services of another proxy are left to it).
pub fn wanted(snap: &model::Snapshot) -> BTreeSet<IpAddr> {
    snap.services
        .iter()
        .filter(|(_, s)| !s.proxied_elsewhere)
        .flat_map(|(_, s)| s.cluster_ips.iter().chain(&s.external_ips).copied())
        .collect()
}

/// [`wanted`] as a view, so the keeper follows Snapshots through the one
/// follow contract.
pub struct ServiceAddrs;

impl ViewCompiler for ServiceAddrs {
    type View = BTreeSet<IpAddr>;

    fn compile(&mut self, _prev: Option<&Self::View>, change: Change<'_>) -> Compiled<Self::View> {
        Compiled {
            view: wanted(change.new),
            errors: Vec::new(),
        }
    }
}

/// Settings of the keeper.
#[derive(Clone, Debug)]
pub struct Config {
    pub interface: String,
    /// Leave the addresses on the interface at shutdown.
    pub keep: bool,
}

/// How often the interface is checked against what it should hold, besides
/// every new Snapshot: someone may remove an address, a link going down
/// flushes IPv6 ones, a failed add is retried.
const REPAIR: std::time::Duration = std::time::Duration::from_secs(30);

/// What the keeper has done to the interface.
struct State {
    rtnl: netlink::Rtnl,
    interface: String,
    index: u32,
    /// Addresses on the interface now (ours and others').
    present: BTreeSet<IpAddr>,
    /// The ones we added (this run, or marked by an earlier one).
    ours: BTreeSet<IpAddr>,
    problems: Vec<String>,
    /// Said once: the kernel dropped our mark (before Linux 6.1).
    unmarked_warned: bool,
}

impl State {
    fn open(interface: &str) -> io::Result<State> {
        let mut rtnl = netlink::Rtnl::open()?;
        let index = match netlink::link_index(interface) {
            Some(i) => i,
            None => {
                rtnl.create_dummy(interface).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "interface {interface} does not exist and could not be created as a dummy ({e}); name an existing interface (e.g. lo)"
                        ),
                    )
                })?;
                info!(interface, "created dummy interface");
                netlink::link_index(interface)
                    .ok_or_else(|| io::Error::other("dummy interface vanished"))?
            }
        };
        rtnl.set_up(index)?;
        let addrs = rtnl.addresses(index)?;
        let ours = addrs
            .iter()
            .filter(|a| a.proto == Some(netlink::PROTO))
            .map(|a| a.ip)
            .collect();
        Ok(State {
            rtnl,
            interface: interface.to_string(),
            index,
            present: addrs.iter().map(|a| a.ip).collect(),
            ours,
            problems: Vec::new(),
            unmarked_warned: false,
        })
    }

    /// Reads the interface again: what is on it now, and which of ours
    /// are still there. An interface that was re-created is found again.
    fn refresh(&mut self) -> io::Result<()> {
        let addrs = match self.rtnl.addresses(self.index) {
            Ok(a) if netlink::link_index(&self.interface) == Some(self.index) => a,
            Ok(_) | Err(_) => {
                let index = netlink::link_index(&self.interface).ok_or_else(|| {
                    io::Error::other(format!("interface {} is gone", self.interface))
                })?;
                self.rtnl.set_up(index)?;
                self.index = index;
                self.ours.clear();
                self.rtnl.addresses(index)?
            }
        };
        self.present = addrs.iter().map(|a| a.ip).collect();
        self.ours.retain(|ip| self.present.contains(ip));
        if !self.unmarked_warned
            && addrs
                .iter()
                .any(|a| self.ours.contains(&a.ip) && a.proto != Some(netlink::PROTO))
        {
            self.unmarked_warned = true;
            warn!(interface = %self.interface, "this kernel does not keep an address's origin (ifa_proto, Linux 6.1+): addresses left by a crash are not recognized as ours on restart");
        }
        Ok(())
    }

    /// Makes the interface hold `wanted` (as far as it is ours to change).
    fn apply(&mut self, wanted: &BTreeSet<IpAddr>) {
        let mut problems = Vec::new();
        if let Err(e) = self.refresh() {
            problems.push(format!("interface {}: {e}", self.interface));
            self.problems = problems;
            return;
        }
        let stale: Vec<IpAddr> = self.ours.difference(wanted).copied().collect();
        for ip in stale {
            match self.rtnl.delete(self.index, ip) {
                Ok(()) => {
                    self.ours.remove(&ip);
                    self.present.remove(&ip);
                }
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                    // Someone took it away already.
                    self.ours.remove(&ip);
                    self.present.remove(&ip);
                }
                Err(e) => problems.push(format!("address {ip} not removed: {e}")),
            }
        }
        let missing: Vec<IpAddr> = wanted.difference(&self.present).copied().collect();
        for ip in missing {
            match self.rtnl.add(self.index, ip) {
                Ok(()) => {
                    self.ours.insert(ip);
                    self.present.insert(ip);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.present.insert(ip);
                }
                Err(e) => problems.push(format!("address {ip} not added: {e}")),
            }
        }
        for p in problems.iter().filter(|p| !self.problems.contains(p)) {
            warn!(problem = %p, "managed interface");
        }
        self.problems = problems;
    }
}

/// The keeper's current problems (see [`Keeper::problems`]).
#[derive(Clone)]
pub struct Problems(Arc<Mutex<Vec<String>>>);

impl Problems {
    pub fn get(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The running keeper.
pub struct Keeper {
    problems: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    follower: JoinHandle<()>,
}

impl Keeper {
    /// Opens the interface (creating it if need be), puts the current
    /// Snapshot's addresses on it, and follows `snapshots` from then on.
    pub async fn start(cfg: Config, snapshots: Snapshots) -> io::Result<Keeper> {
        let name = cfg.interface.clone();
        let mut state = tokio::task::spawn_blocking(move || State::open(&name))
            .await
            .map_err(io::Error::other)??;
        let (view, follower) = control::follow(snapshots, ServiceAddrs, "interface").await;
        let wanted = view.load_full();
        state = blocking(state, wanted).await?;
        info!(interface = %cfg.interface, addresses = state.ours.len(), "managing Service addresses");
        let problems = Arc::new(Mutex::new(state.problems.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(state, view, cfg, problems.clone(), stop_rx));
        Ok(Keeper {
            problems,
            stop,
            task,
            follower,
        })
    }

    /// Addresses that could not be added or removed, one line each: a
    /// handle that stays valid after [`Keeper::shutdown`] took the keeper.
    pub fn problems(&self) -> Problems {
        Problems(self.problems.clone())
    }

    /// Stops following; removes our addresses unless `keep` was set.
    pub async fn shutdown(self) {
        self.follower.abort();
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Applies `wanted` on the blocking pool (netlink calls block briefly).
async fn blocking(mut state: State, wanted: Arc<BTreeSet<IpAddr>>) -> io::Result<State> {
    tokio::task::spawn_blocking(move || {
        state.apply(&wanted);
        state
    })
    .await
    .map_err(io::Error::other)
}

async fn run(
    mut state: State,
    view: View<BTreeSet<IpAddr>>,
    cfg: Config,
    problems: Arc<Mutex<Vec<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut updates = view.subscribe();
    let mut repair = tokio::time::interval(REPAIR);
    repair.tick().await;
    loop {
        // A new Snapshot, or the periodic check.
        tokio::select! {
            r = updates.changed() => if r.is_err() {
                break;
            },
            _ = repair.tick() => {}
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
        }
        match blocking(state, view.load_full()).await {
            Ok(s) => state = s,
            Err(e) => {
                warn!(error = %e, "managed interface: update lost");
                return;
            }
        }
        *problems.lock().unwrap_or_else(|e| e.into_inner()) = state.problems.clone();
    }
    if !cfg.keep {
        let _ = blocking(state, Arc::new(BTreeSet::new())).await;
        info!(interface = %cfg.interface, "Service addresses removed");
    }
}

#[cfg(test)]
mod tests;
