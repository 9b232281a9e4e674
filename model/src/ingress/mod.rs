//! Ingress: which Ingresses are ours, their validation, and the compiled
//! per-host route table the L7 plane looks requests up in.

use crate::error::{ConfigError, FieldError, Warning};
use crate::snapshot::{SecretMap, ServiceMap};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
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
}

/// The compiled L7 route table (placeholder until the L7 issue lands).
#[derive(Debug, Default)]
pub struct IngressTable {}

/// Per-object checks on an Ingress (paths, annotations, backends).
pub fn validate(_ing: &Ingress) -> Vec<FieldError> {
    Vec::new()
}

pub fn compile(_input: IngressInput<'_>) -> IngressTable {
    IngressTable::default()
}
