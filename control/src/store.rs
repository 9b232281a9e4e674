//! The Store: the current Snapshot behind one ArcSwap, plus a watch of its
//! generation so planes can react to changes without polling. Only sources
//! in this crate publish; everyone else gets a read-only [`Snapshots`].

use crate::follow::Snapshots;
use arc_swap::ArcSwap;
use model::Snapshot;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Store {
    current: Arc<ArcSwap<Snapshot>>,
    generation: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// Starts with the empty generation-0 Snapshot ("nothing loaded yet").
    pub fn new() -> Self {
        Store {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            generation: watch::Sender::new(0),
        }
    }

    /// A read-only handle for planes and tests.
    pub fn snapshots(&self) -> Snapshots {
        Snapshots {
            current: self.current.clone(),
            generation: self.generation.subscribe(),
        }
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a new Snapshot atomically, then tells the watchers.
    pub(crate) fn publish(&self, snap: Arc<Snapshot>) {
        let generation = snap.generation;
        self.current.store(snap);
        self.generation.send_replace(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_swaps_and_notifies() {
        let store = Store::new();
        let mut rx = store.snapshots();
        assert_eq!(store.load().generation, 0);
        store.publish(Arc::new(Snapshot {
            generation: 7,
            ..Default::default()
        }));
        rx.changed().await.unwrap();
        assert_eq!(rx.generation(), 7);
        assert_eq!(rx.load().generation, 7);
    }
}
