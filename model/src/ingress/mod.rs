//! Ingress: which Ingresses are ours, their validation, and the compiled
//! per-host route table the L7 plane looks requests up in.
//!
//! Everything here is pure: the L7 plane does one host lookup and one path
//! lookup per request in an [`IngressTable`] built once per Snapshot.

pub mod annotations;
mod class;
mod compile;
pub mod path;
mod table;
pub mod template;
mod validate;

pub use annotations::{
    Annotations, BackendProtocol, Canary, CookieAffinity, Cors, CorsOrigins, HashBy, HeaderPattern,
    IpNet, NextUpstream, SameSite, same_site_none_incompatible,
};
pub use class::{CONTROLLER, is_ours};
pub use compile::compile;
pub use path::{PathError, normalize_host, normalize_path};
pub use table::{
    HostRoutes, IngressTable, PathKind, Rewritten, Route, RouteBackend, ServedIngress, TlsEntry,
};
pub(crate) use validate::check_host;
pub use validate::validate;

use crate::error::{ConfigError, Warning};
use crate::snapshot::{NamespacedName, SecretMap, ServiceMap};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use std::collections::HashSet;
use std::path::Path;

/// Which Ingresses this controller serves.
#[derive(Clone, Debug)]
pub struct IngressOptions {
    /// `--ingress-class` values (default: nodeway and nginx).
    pub classes: Vec<String>,
    /// Serve Ingresses that name no class (default on for a folder source).
    pub watch_without_class: bool,
}

impl Default for IngressOptions {
    fn default() -> Self {
        IngressOptions {
            classes: vec!["nodeway".into(), "nginx".into()],
            watch_without_class: true,
        }
    }
}

/// Everything Ingress compilation reads and reports into.
pub struct IngressInput<'a> {
    pub ingresses: Vec<(&'a Path, &'a Ingress)>,
    pub classes: Vec<&'a IngressClass>,
    pub services: &'a ServiceMap,
    pub secrets: &'a SecretMap,
    pub opts: &'a IngressOptions,
    pub errors: &'a mut Vec<ConfigError>,
    pub warnings: &'a mut Vec<Warning>,
    /// Filled with every Service a backend names (found or not).
    pub named_services: &'a mut HashSet<NamespacedName>,
}

#[cfg(test)]
mod tests;
