//! The L4 plane's view of a Snapshot, through the one follow contract:
//! [`L4Compiler`] turns each Snapshot into routes (usable endpoints
//! precomputed per bound address), health-check answers and the listeners
//! wanted. Connections look their route up in the current [`L4View`]; the
//! listener reconciler binds and closes what the view asks for.

use crate::Config;
use crate::balance::BalanceState;
use crate::health::{self, HealthMap};
use crate::metrics::Metrics;
use crate::routes::{self, RouteMap, Wanted};
use control::{Change, Compiled, ViewCompiler};
use model::{ConfigError, Snapshot};
use std::sync::Arc;

/// Routes and listeners of one generation.
#[derive(Default)]
pub struct L4View {
    pub(crate) generation: u64,
    pub(crate) routes: RouteMap,
    /// What each health-check address reports.
    pub(crate) health: HealthMap,
    pub(crate) wanted: Vec<Wanted>,
    /// Frontends that cannot be served (SCTP, a NodePort on an address a
    /// ClusterIP uses...): shown in `/readyz`.
    pub(crate) problems: Vec<String>,
}

/// Builds [`L4View`]s. Balancing state (round-robin cursors, ClientIP
/// affinity) lives here, keyed by Service and port, so it outlives swaps.
pub struct L4Compiler {
    cfg: Config,
    state: BalanceState,
    metrics: Arc<Metrics>,
}

impl L4Compiler {
    pub(crate) fn new(cfg: Config, metrics: Arc<Metrics>) -> Self {
        L4Compiler {
            cfg,
            state: BalanceState::default(),
            metrics,
        }
    }
}

impl ViewCompiler for L4Compiler {
    type View = L4View;

    fn compile(&mut self, _prev: Option<&L4View>, change: Change<'_>) -> Compiled<L4View> {
        let snap = change.new;
        let built = routes::build(snap, &self.cfg, &mut self.state, &self.metrics);
        let health = health::build(snap, &self.cfg.node_ips, self.cfg.node_name.as_deref());
        Compiled {
            view: L4View {
                generation: snap.generation,
                routes: built.routes,
                health,
                wanted: built.wanted,
                problems: built.problems,
            },
            errors: built.errors,
        }
    }
}

/// The L4 plane's config errors for a Snapshot, as `nodeway check` shows
/// them: the same compile the running plane does.
pub fn check(snap: &Snapshot, cfg: &Config) -> Vec<ConfigError> {
    let metrics = Arc::new(Metrics::new(
        &mut prometheus_client::registry::Registry::default(),
    ));
    let mut c = L4Compiler::new(cfg.clone(), metrics);
    c.compile(
        None,
        Change {
            old: None,
            new: snap,
        },
    )
    .errors
}
