//! The Store: the current Snapshot behind one ArcSwap, plus a watch of its
//! generation so planes can react to changes without polling.

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

    /// What planes read on the request path.
    pub fn snapshots(&self) -> Arc<ArcSwap<Snapshot>> {
        self.current.clone()
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Swaps in a new Snapshot atomically, then tells the watchers.
    pub fn publish(&self, snap: Arc<Snapshot>) {
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
        let mut rx = store.subscribe();
        assert_eq!(store.load().generation, 0);
        store.publish(Arc::new(Snapshot {
            generation: 7,
            ..Default::default()
        }));
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 7);
        assert_eq!(store.snapshots().load().generation, 7);
    }
}
