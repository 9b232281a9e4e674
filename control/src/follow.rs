//! How planes follow the Snapshot: one contract for all of them.
//!
//! - A plane gets a read-only [`Snapshots`] handle: load, changed,
//!   wait-until-ready. Only the [`Store`](crate::Store) publishes.
//! - Its view of the cluster (L4 routes, the DNS table, the TLS resolver)
//!   is compiled by a [`ViewCompiler`]: from (previous view, what changed)
//!   to (new view, errors). `nodeway check` runs the same compilers.
//! - [`follow`] runs the compiler off the request path (a blocking-pool
//!   thread) for each new Snapshot. If several generations piled up while it
//!   compiled, it builds only the latest. Requests read the result through
//!   a [`View`]: one atomic load, no lock.

use arc_swap::{ArcSwap, Guard};
use model::{ConfigError, Snapshot};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Store is gone: no Snapshot will come any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the snapshot store is closed")]
pub struct Closed;

/// A read-only handle on the published Snapshots.
#[derive(Clone)]
pub struct Snapshots {
    pub(crate) current: Arc<ArcSwap<Snapshot>>,
    pub(crate) generation: watch::Receiver<u64>,
}

impl Snapshots {
    /// The current Snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The generation of the current Snapshot (0: nothing loaded yet).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Waits until a Snapshot this handle has not seen is published.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        self.generation.changed().await.map_err(|_| Closed)
    }

    /// Waits until the first Snapshot is loaded.
    pub async fn wait_ready(&mut self) -> Result<(), Closed> {
        self.generation
            .wait_for(|g| *g > 0)
            .await
            .map(|_| ())
            .map_err(|_| Closed)
    }
}

/// What a view is compiled from: the Snapshot it was last built from (none
/// for the first build) and the one to build now. Planes find what changed
/// by comparing them; their maps share unchanged entries by pointer
/// ([`model::SharedMap::diff`]).
#[derive(Clone, Copy)]
pub struct Change<'a> {
    pub old: Option<&'a Snapshot>,
    pub new: &'a Snapshot,
}

/// A plane's view and the problems found building it (a bad annotation
/// the model does not know, for instance), each naming file, object and field.
pub struct Compiled<V> {
    pub view: V,
    pub errors: Vec<ConfigError>,
}

/// Turns Snapshots into one plane's view. `compile` must be a function of
/// its arguments and of state that outlives a swap (round-robin cursors),
/// never of the clock or the sockets: `nodeway check` runs it offline.
pub trait ViewCompiler: Send + 'static {
    type View: Send + Sync + 'static;

    fn compile(&mut self, prev: Option<&Self::View>, change: Change<'_>) -> Compiled<Self::View>;
}

/// A plane's current view, as its request path reads it.
pub struct View<V> {
    current: Arc<ArcSwap<V>>,
    applied: watch::Receiver<u64>,
    errors: Arc<ArcSwap<Vec<ConfigError>>>,
}

impl<V> Clone for View<V> {
    fn clone(&self) -> Self {
        View {
            current: self.current.clone(),
            applied: self.applied.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl<V> View<V> {
    /// A view that never changes: for unit tests of a plane's request path.
    pub fn fixed(view: V) -> View<V> {
        let (_, applied) = watch::channel(0);
        View {
            current: Arc::new(ArcSwap::from_pointee(view)),
            applied,
            errors: Arc::default(),
        }
    }

    /// The current view: hold the guard briefly, never across an `.await`.
    pub fn load(&self) -> Guard<Arc<V>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<V> {
        self.current.load_full()
    }

    /// The generation of the Snapshot the current view was built from.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the view was built from at least `generation`.
    pub async fn wait_applied(&self, generation: u64) -> Result<(), Closed> {
        let mut rx = self.applied.clone();
        rx.wait_for(|g| *g >= generation)
            .await
            .map(|_| ())
            .map_err(|_| Closed)
    }

    /// Tells each time a new view is in place (its generation).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// The problems of the current view.
    pub fn errors(&self) -> Arc<Vec<ConfigError>> {
        self.errors.load_full()
    }
}

/// Builds the view of the current Snapshot (returns once it is in place),
/// then keeps it following the Snapshots until they close or the task is
/// aborted.
pub async fn follow<C: ViewCompiler>(
    mut snapshots: Snapshots,
    compiler: C,
    plane: &'static str,
) -> (View<C::View>, JoinHandle<()>) {
    // Mark the generation we start from as seen: `changed` then waits for
    // the next one.
    let _ = snapshots.generation.borrow_and_update();
    let first = snapshots.load();
    let (compiler, compiled) = compile_off_thread(compiler, None, None, first.clone()).await;
    let (applied_tx, applied) = watch::channel(first.generation);
    let view = View {
        current: Arc::new(ArcSwap::from_pointee(compiled.view)),
        applied,
        errors: Arc::new(ArcSwap::from_pointee(Vec::new())),
    };
    report(plane, first.generation, &view, compiled.errors);
    let task = {
        let view = view.clone();
        tokio::spawn(async move {
            let (mut compiler, mut built_from) = (compiler, first);
            while snapshots.changed().await.is_ok() {
                // The latest only: generations that piled up are skipped.
                let _ = snapshots.generation.borrow_and_update();
                let snap = snapshots.load();
                if snap.generation == built_from.generation {
                    continue;
                }
                let prev = view.current.load_full();
                let (c, compiled) =
                    compile_off_thread(compiler, Some(prev), Some(built_from), snap.clone()).await;
                compiler = c;
                view.current.store(Arc::new(compiled.view));
                report(plane, snap.generation, &view, compiled.errors);
                let _ = applied_tx.send(snap.generation);
                built_from = snap;
            }
        })
    };
    (view, task)
}

/// Compiling is CPU work: it runs on the blocking pool, never on a worker
/// that serves requests.
async fn compile_off_thread<C: ViewCompiler>(
    mut compiler: C,
    prev: Option<Arc<C::View>>,
    old: Option<Arc<Snapshot>>,
    new: Arc<Snapshot>,
) -> (C, Compiled<C::View>) {
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let change = Change {
            old: old.as_deref(),
            new: &new,
        };
        let compiled = compiler.compile(prev.as_deref(), change);
        tracing::debug!(
            generation = new.generation,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "view compiled"
        );
        (compiler, compiled)
    })
    .await
    .expect("a view compile panicked")
}

/// Logs the errors a view brought that the last one did not have.
fn report<V>(plane: &'static str, generation: u64, view: &View<V>, errors: Vec<ConfigError>) {
    let old = view.errors.load();
    for e in errors.iter().filter(|e| !old.contains(e)) {
        tracing::warn!(plane, generation, error = %e, "config error");
    }
    if *old.as_slice() != errors[..] {
        view.errors.store(Arc::new(errors));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    /// (built from, built) generation pairs.
    type Builds = Arc<std::sync::Mutex<Vec<(Option<u64>, u64)>>>;

    /// Records what it was asked to build.
    struct Generations(Builds);

    impl ViewCompiler for Generations {
        type View = u64;
        fn compile(&mut self, prev: Option<&u64>, change: Change<'_>) -> Compiled<u64> {
            assert_eq!(prev.copied(), change.old.map(|s| s.generation));
            self.0
                .lock()
                .unwrap()
                .push((change.old.map(|s| s.generation), change.new.generation));
            // Hold the follower up so that publishes pile up meanwhile.
            std::thread::sleep(std::time::Duration::from_millis(50));
            Compiled {
                view: change.new.generation,
                errors: Vec::new(),
            }
        }
    }

    fn snap(generation: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            generation,
            ..Default::default()
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builds_the_first_view_then_only_the_latest_of_a_burst() {
        let store = Store::new();
        store.publish(snap(1));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (view, _task) = follow(store.snapshots(), Generations(seen.clone()), "test").await;
        assert_eq!((**view.load(), view.applied()), (1, 1));
        store.publish(snap(2));
        // Wait until the follower is busy with 2, then pile up 3..=5.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "2 never compiled");
            tokio::task::yield_now().await;
        }
        for g in 3..=5 {
            store.publish(snap(g));
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), view.wait_applied(5))
            .await
            .expect("5 applied")
            .unwrap();
        assert_eq!(**view.load(), 5);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(None, 1), (Some(1), 2), (Some(2), 5)],
            "3 and 4 were skipped"
        );
    }

    #[tokio::test]
    async fn handles_wait_for_the_first_snapshot() {
        let store = Store::new();
        let mut h = store.snapshots();
        assert_eq!(h.generation(), 0);
        let waiter = tokio::spawn(async move {
            h.wait_ready().await.unwrap();
            h.load().generation
        });
        store.publish(snap(3));
        assert_eq!(waiter.await.unwrap(), 3);
        let mut h = store.snapshots();
        drop(store);
        assert_eq!(h.changed().await, Err(Closed));
    }
}
