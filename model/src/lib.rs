//! What the cluster looks like: Kubernetes manifests in, an immutable compiled
#![allow(clippy::result_large_err)]
//! [`Snapshot`] out. Pure: no sockets, no runtime, no file watching.

pub mod alloc;
pub mod builder;
mod claims;
pub mod compiler;
pub mod endpoints;
pub mod error;
pub mod gateway;
pub mod ingress;
pub mod object;
pub mod parse;
pub mod service;
pub mod service_object;
pub mod shared_map;
pub mod slice;
pub mod snapshot;
pub mod testing;
pub mod tls;
pub mod validate;

pub use builder::{Builder, Origin};
pub use error::{ConfigError, FieldError, ObjectKey, Warning};
pub use object::Object;
pub use service::{
    Allocated, Backend, Endpoint, Placement, Protocol, Service, ServicePort, ServiceType,
    TargetPort, topology_backends, usable_backends,
};
pub use shared_map::SharedMap;
pub use snapshot::{
    CompileOptions, Frontend, FrontendMap, HealthCheck, Listen, NamespacedName, SecretMap,
    ServiceMap, Snapshot, TRIGGER_TIME_ANNOTATION, TriggerTime,
};
pub use tls::TlsSecret;
