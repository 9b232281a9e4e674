//! `nodeway_network_programming_duration_seconds`, with kube-proxy's
//! meaning: from the moment an endpoint change was triggered (the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation the
//! endpoints controllers set on EndpointSlices and Endpoints) until every
//! plane serves the Snapshot that carries it. Changes triggered before
//! this process started are not counted (as kube-proxy skips them), nor
//! are clocks that disagree (a trigger time in the future).

use control::Snapshots;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::SystemTime;
use tokio::sync::watch;

/// kube-proxy's buckets: 0.25 s steps to 0.5 s, 1 s steps to a minute,
/// then 5 s to two minutes and 30 s to five.
fn buckets() -> Vec<f64> {
    let mut b = vec![0.25, 0.5];
    b.extend((1..60).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

/// Registers the histogram.
pub fn register(registry: &mut Registry) -> Histogram {
    let h = Histogram::new(buckets());
    registry.register(
        "nodeway_network_programming_duration_seconds",
        "From an endpoint change's trigger time to the moment every plane serves it",
        h.clone(),
    );
    h
}

/// Observes every endpoint change of every Snapshot once all `planes`
/// (their applied generations) serve it. Runs until the Store closes.
pub async fn follow(
    mut snapshots: Snapshots,
    mut planes: Vec<watch::Receiver<u64>>,
    histogram: Histogram,
    started: SystemTime,
) {
    // Changes of generations already served when we start are not ours
    // to time.
    let mut done = snapshots.generation();
    while snapshots.changed().await.is_ok() {
        let snap = snapshots.load();
        let fresh: Vec<SystemTime> = snap
            .trigger_times
            .iter()
            .filter(|t| t.generation > done && t.generation <= snap.generation)
            .map(|t| t.at)
            .collect();
        done = snap.generation;
        if fresh.is_empty() {
            continue;
        }
        for p in &mut planes {
            if p.wait_for(|g| *g >= snap.generation).await.is_err() {
                return; // a plane stopped: shutting down
            }
        }
        let now = SystemTime::now();
        for at in fresh.into_iter().filter(|at| *at >= started) {
            if let Ok(d) = now.duration_since(at) {
                histogram.observe(d.as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_kube_proxys() {
        let b = buckets();
        assert_eq!(&b[..4], [0.25, 0.5, 1.0, 2.0]);
        assert_eq!(b[b.len() - 20..b.len() - 18], [59.0, 60.0]);
        assert_eq!(b[b.len() - 1], 300.0);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }
}
