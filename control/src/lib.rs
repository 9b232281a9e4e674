//! Where manifests come from, and the Store: the only code that publishes
//! Snapshots.

mod folder;
mod follow;
mod memory;
mod store;

pub use folder::{FolderSource, load_paths};
pub use follow::{Change, Closed, Compiled, Snapshots, View, ViewCompiler, follow};
pub use memory::MemorySource;
pub use store::Store;
