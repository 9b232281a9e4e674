//! Keeps the last good version of every file and object, so bad input is
//! isolated: a file that does not parse keeps its last good objects, an
//! object that fails validation keeps its last good version, and everything
//! else still updates.

use crate::compiler::Compiler;
use crate::error::{ConfigError, ObjectKey, Warning};
use crate::object::Object;
use crate::parse::parse_file;
use crate::snapshot::{CompileOptions, Objects, Snapshot};
use crate::validate::validate;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Default)]
struct FileState {
    /// Keys this file currently contributes (its last good parse).
    keys: BTreeSet<ObjectKey>,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

/// Turns file contents into Snapshots, one generation after another. Each
/// object change is handed to the incremental [`Compiler`], so a build
/// costs what changed since the last one.
pub struct Builder {
    opts: CompileOptions,
    files: BTreeMap<PathBuf, FileState>,
    objects: Objects,
    compiler: Compiler,
    generation: u64,
}

impl Builder {
    pub fn new(opts: CompileOptions) -> Self {
        Builder {
            opts,
            files: BTreeMap::new(),
            objects: Objects::new(),
            compiler: Compiler::new(),
            generation: 0,
        }
    }

    /// Paths currently known (for sources that need to notice deletions).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// A file's new content; `None` means the file is gone and so are its objects.
    pub fn update_file(&mut self, path: &Path, content: Option<&[u8]>) {
        let Some(bytes) = content else {
            if let Some(old) = self.files.remove(path) {
                for k in old.keys {
                    self.remove_if_from(&k, path);
                }
            }
            return;
        };
        let state = self.files.entry(path.to_path_buf()).or_default();
        state.errors.clear();
        state.warnings.clear();
        let parsed = match parse_file(path, bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "manifest file rejected; keeping its last good objects");
                state.errors.push(e);
                return;
            }
        };
        state.warnings = parsed.warnings;
        let old_keys = std::mem::take(&mut state.keys);
        let mut new_keys = BTreeSet::new();
        let mut errors = Vec::new();
        for item in parsed.objects {
            match item {
                Err((key, fe)) => {
                    // Undecodable: keep its last good version if it came from here.
                    if old_keys.contains(&key) {
                        new_keys.insert(key.clone());
                    }
                    errors.push(ConfigError::field(path, key, fe));
                }
                Ok(obj) => {
                    let key = obj.key();
                    if let Some((other, _)) = self.objects.get(&key)
                        && other != path
                    {
                        errors.push(ConfigError {
                            file: path.into(),
                            object: Some(key.clone()),
                            field: None,
                            reason: format!(
                                "already defined in {}; this copy is ignored",
                                other.display()
                            ),
                        });
                        continue;
                    }
                    if !new_keys.insert(key.clone()) {
                        errors.push(ConfigError {
                            file: path.into(),
                            object: Some(key.clone()),
                            field: None,
                            reason: "defined twice in this file; the first copy is used".into(),
                        });
                        continue;
                    }
                    let problems = validate(&obj, &self.opts.validate);
                    if problems.is_empty() {
                        self.set(key, Some((path.to_path_buf(), obj)));
                    } else {
                        for fe in problems {
                            errors.push(ConfigError::field(path, key.clone(), fe));
                        }
                        // Keep its last good version (if any) from this file.
                        if !old_keys.contains(&key) {
                            new_keys.remove(&key);
                        }
                    }
                }
            }
        }
        for e in &errors {
            tracing::warn!(error = %e, "invalid object; keeping its last good version");
        }
        for k in old_keys.difference(&new_keys) {
            self.remove_if_from(k, path);
        }
        let state = self.files.get_mut(path).expect("inserted above");
        state.keys = new_keys;
        state.errors = errors;
    }

    fn remove_if_from(&mut self, key: &ObjectKey, path: &Path) {
        if self.objects.get(key).is_some_and(|(p, _)| p == path) {
            self.set(key.clone(), None);
        }
    }

    /// The one place good objects change: the compiler hears of every
    /// change (and of nothing that is not one).
    fn set(&mut self, key: ObjectKey, new: Option<(PathBuf, Object)>) {
        let old = self.objects.get(&key);
        if old == new.as_ref() {
            return;
        }
        self.compiler
            .note(&key, old.map(|(_, o)| o), new.as_ref().map(|(_, o)| o));
        match new {
            Some(v) => self.objects.insert(key, v),
            None => self.objects.remove(&key),
        };
    }

    /// Compiles the current objects into the next generation.
    pub fn build(&mut self) -> Arc<Snapshot> {
        self.generation += 1;
        let (errors, warnings) = (self.file_errors(), self.file_warnings());
        Arc::new(self.compiler.compile(
            &self.objects,
            self.generation,
            &self.opts,
            None,
            errors,
            warnings,
        ))
    }

    /// Errors of the files themselves and of the objects in them.
    pub fn file_errors(&self) -> Vec<ConfigError> {
        self.files.values().flat_map(|f| f.errors.clone()).collect()
    }

    pub fn file_warnings(&self) -> Vec<Warning> {
        self.files
            .values()
            .flat_map(|f| f.warnings.clone())
            .collect()
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn object(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests;
