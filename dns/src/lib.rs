//! Cluster DNS: authoritative for the cluster domain (and the reverse names
//! of Service and endpoint addresses), answered from the current Snapshot;
//! everything else forwarded to upstream resolvers through a bounded cache.

pub mod names;
pub mod table;
