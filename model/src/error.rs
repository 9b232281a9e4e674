//! Config errors: every one names the file, the object and the field.

use std::fmt;
use std::path::PathBuf;

/// Identity of a manifest object: `Kind namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    /// Empty for cluster-scoped kinds (Namespace, IngressClass).
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A problem in one field of one object (before we know its file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON-path-like field, e.g. `spec.ports[0].port`.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A configuration error as shown to users, logged and counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// None when the whole file failed (it did not parse).
    pub object: Option<ObjectKey>,
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl ConfigError {
    pub fn file(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            object: None,
            field: None,
            reason: reason.into(),
        }
    }

    pub fn field(file: impl Into<PathBuf>, object: ObjectKey, e: FieldError) -> Self {
        ConfigError {
            file: file.into(),
            object: Some(object),
            field: Some(e.field),
            reason: e.reason,
        }
    }
}

/// Something skipped on purpose (an Ingress of another class, an unknown kind):
/// not an error, but `check` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub object: Option<ObjectKey>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        write!(f, ": {}", self.message)
    }
}
