//! Where manifests come from, and the Store: the only code that publishes
//! Snapshots.

mod folder;
mod store;

pub use folder::{FolderSource, load_paths};
pub use store::Store;
