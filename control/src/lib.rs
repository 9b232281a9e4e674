//! Where manifests come from, and the Store: the only code that publishes
//! Snapshots.

pub mod api;
mod api_gateway;
mod folder;
mod follow;
pub mod gateway_status;
mod memory;
pub mod status;
mod store;

pub use folder::{FolderSource, Reload, SourceError, load_paths};
pub use follow::{Change, Closed, Compiled, Snapshots, View, ViewCompiler, follow};
pub use memory::MemorySource;
pub use store::Store;
