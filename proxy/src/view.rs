//! The L4 plane's view of a Snapshot, through the one follow contract:
//! [`L4Compiler`] turns each Snapshot into routes (usable endpoints
//! precomputed per bound address), health-check answers and the listeners
//! wanted. Connections look their route up in the current [`L4View`]; the
//! listener reconciler binds and closes what the view asks for.

use crate::Config;
use crate::health::{self, HealthMap};
use crate::metrics::Metrics;
use crate::routes::{self, Live, Tables};
use control::{Change, Compiled, ViewCompiler};
use model::{ConfigError, Snapshot};
use std::sync::Arc;

/// Routes and listeners of one generation.
#[derive(Default)]
pub struct L4View {
    pub(crate) generation: u64,
    /// Routes, wanted listeners, problems: updated per changed frontend.
    pub(crate) t: Tables,
    /// What each health-check address reports.
    pub(crate) health: HealthMap,
}

impl L4View {
    /// Frontends that cannot be served (SCTP, a NodePort on an address a
    /// ClusterIP uses...), sorted: shown in `/readyz`.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .t
            .problems
            .values()
            .flat_map(|p| p.iter().cloned())
            .collect();
        v.sort();
        v
    }
}

/// Builds [`L4View`]s. Balancing state (round-robin cursors, ClientIP
/// affinity) lives here, keyed by Service and port, so it outlives swaps.
pub struct L4Compiler {
    cfg: Config,
    live: Live,
    metrics: Arc<Metrics>,
}

impl L4Compiler {
    pub(crate) fn new(cfg: Config, metrics: Arc<Metrics>) -> Self {
        L4Compiler {
            cfg,
            live: Live::default(),
            metrics,
        }
    }
}

impl ViewCompiler for L4Compiler {
    type View = L4View;

    fn compile(&mut self, prev: Option<&L4View>, change: Change<'_>) -> Compiled<L4View> {
        let snap = change.new;
        // Without a previous view, start empty and treat every frontend as new.
        let (mut t, old) = match prev {
            Some(p) => (p.t.clone(), change.old),
            None => (Tables::default(), None),
        };
        routes::update(&mut t, old, snap, &self.cfg, &mut self.live, &self.metrics);
        let health = match (prev, old) {
            (Some(p), Some(o)) if Arc::ptr_eq(&o.health_checks, &snap.health_checks) => {
                p.health.clone()
            }
            _ => health::build(snap, &self.cfg.node_ips, self.cfg.node_name.as_deref()),
        };
        let mut errors: Vec<ConfigError> = Vec::new();
        for e in t.errors.values() {
            // One per Service, not one per frontend of it.
            if !errors.contains(e) {
                errors.push(e.clone());
            }
        }
        errors.sort_by_key(|e| e.to_string());
        Compiled {
            view: L4View {
                generation: snap.generation,
                t,
                health,
            },
            errors,
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

#[cfg(test)]
mod tests {
    use super::*;
    use model::testing::Rng;
    use model::{Builder, CompileOptions};
    use std::fmt::Write;
    use std::path::Path;

    /// Services that collide on purpose: shared ClusterIPs, a ClusterIP on
    /// the node address with a port some NodePort uses, SCTP, affinity,
    /// bad annotations, health-check ports.
    fn service(r: &mut Rng, name: &str) -> String {
        let ip = format!("127.0.9.{}", 1 + r.below(3));
        let port = [80, 30000][r.below(2) as usize];
        let proto = ["TCP", "TCP", "UDP", "SCTP"][r.below(4) as usize];
        let (ty, np) = match r.below(3) {
            0 => ("ClusterIP", String::new()),
            1 => ("NodePort", format!(", nodePort: {}", 30000 + r.below(2))),
            _ => (
                "LoadBalancer",
                format!(", nodePort: {}", 30000 + r.below(2)),
            ),
        };
        let extra = match r.below(4) {
            0 => ", sessionAffinity: ClientIP".to_string(),
            1 if ty == "LoadBalancer" => format!(
                ", externalTrafficPolicy: Local, healthCheckNodePort: {}",
                30000 + r.below(3)
            ),
            _ => String::new(),
        };
        let ann = ["\"5s\"", "soon", "\"0\""][r.below(3) as usize];
        let eps: String = (0..r.below(3))
            .map(|_| format!("- {{addresses: [127.0.8.{}]}}\n", 1 + r.below(3)))
            .collect();
        let eps = if eps.is_empty() {
            "[]\n".to_string()
        } else {
            format!("\n{eps}")
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, annotations: {{nodeway.io/udp-idle-timeout: {ann}}}}}\n\
             spec: {{type: {ty}, clusterIP: {ip}{extra}, ports: [{{name: p, port: {port}, protocol: {proto}{np}}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: p, port: 8080, protocol: {proto}}}]\nendpoints: {eps}"
        )
    }

    fn describe(v: &L4View, errors: &[ConfigError]) -> String {
        let mut out = String::new();
        let mut routes: Vec<_> = v.t.routes.iter().collect();
        routes.sort_by_key(|(k, _)| **k);
        for (k, r) in routes {
            let _ = writeln!(
                out,
                "route {k:?} {} {:?} {:?}",
                r.service.id, r.endpoints, r.udp_idle
            );
        }
        let mut wanted: Vec<_> =
            v.t.wanted
                .values()
                .chain(v.t.health_wanted.iter())
                .collect();
        wanted.sort_by_key(|w| (w.addr, w.protocol, w.health));
        let _ = writeln!(out, "wanted {wanted:?}");
        let _ = writeln!(out, "problems {:?}", v.problems());
        let mut health: Vec<_> = v.health.iter().collect();
        health.sort_by_key(|(a, _)| **a);
        let _ = writeln!(out, "health {health:?}");
        let _ = writeln!(out, "errors {errors:?}");
        out
    }

    fn compiler() -> L4Compiler {
        let cfg = Config {
            node_ips: vec!["127.0.9.1".parse().unwrap()],
            ..Config::default()
        };
        let metrics = Arc::new(Metrics::new(
            &mut prometheus_client::registry::Registry::default(),
        ));
        L4Compiler::new(cfg, metrics)
    }

    #[test]
    fn updates_equal_fresh_compiles_after_every_change() {
        for seed in 1..=25u64 {
            let mut r = Rng::new(seed);
            let mut b = Builder::new(CompileOptions::default());
            let mut inc = compiler();
            let mut view: Option<L4View> = None;
            let mut last: Option<Arc<Snapshot>> = None;
            for step in 0..30 {
                for _ in 0..1 + r.below(2) {
                    let name = r.pick(&["a", "b", "c", "d"]);
                    let file = format!("{name}.yaml");
                    let text = (r.below(4) != 0).then(|| service(&mut r, name));
                    b.update_file(Path::new(&file), text.as_deref().map(str::as_bytes));
                }
                let snap = b.build();
                let change = Change {
                    old: last.as_deref(),
                    new: &snap,
                };
                let got = inc.compile(view.as_ref(), change);
                let fresh = compiler().compile(
                    None,
                    Change {
                        old: None,
                        new: &snap,
                    },
                );
                assert_eq!(
                    describe(&got.view, &got.errors),
                    describe(&fresh.view, &fresh.errors),
                    "seed {seed} step {step}"
                );
                // Cursors of a Service port survive its changes.
                for (k, route) in got.view.t.routes.iter() {
                    if let Some(old) = view.as_ref().and_then(|v| v.t.routes.get(k))
                        && old.port_key == route.port_key
                    {
                        assert!(
                            Arc::ptr_eq(&old.cursor, &route.cursor),
                            "seed {seed} step {step}"
                        );
                    }
                }
                view = Some(got.view);
                last = Some(snap);
            }
        }
    }
}
