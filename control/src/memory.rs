//! A source held in memory: manifests handed in as text, published through
//! the same Builder (and so the same incremental compile) as the folder.
//! For tests and embedders that generate manifests themselves.

use crate::store::Store;
use model::{Builder, CompileOptions, Snapshot};
use std::path::Path;
use std::sync::Arc;

pub struct MemorySource {
    builder: Builder,
    store: Store,
}

impl MemorySource {
    pub fn new(opts: CompileOptions) -> Self {
        MemorySource {
            builder: Builder::new(opts),
            store: Store::new(),
        }
    }

    /// The Store it publishes to (hand its `snapshots()` to planes).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replaces (or with `None` removes) the manifests of one pseudo-file,
    /// without publishing.
    pub fn set(&mut self, file: &str, yaml: Option<&str>) {
        self.builder
            .update_file(Path::new(file), yaml.map(str::as_bytes));
    }

    /// Compiles and publishes the next generation; returns it.
    pub fn publish(&mut self) -> Arc<Snapshot> {
        let snap = self.builder.build();
        self.store.publish(snap.clone());
        snap
    }

    /// `set` then `publish`.
    pub fn apply(&mut self, file: &str, yaml: &str) -> Arc<Snapshot> {
        self.set(file, Some(yaml));
        self.publish()
    }
}
