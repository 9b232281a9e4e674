//! Keeps the last good version of every file and object, so bad input is
//! isolated: a file that does not parse keeps its last good objects, an
//! object that fails validation keeps its last good version, and everything
//! else still updates.
//!
//! An object defined in several places is served from one of them and the
//! others are kept aside, so the next in line takes over when it goes: the
//! API server's copy beats any file's, and among files the last in name
//! order wins, as `kubectl apply -f FOLDER` would leave it.

use crate::compiler::Compiler;
use crate::error::{ConfigError, FieldError, ObjectKey, Warning};
use crate::object::Object;
use crate::parse::parse_file;
use crate::snapshot::{CompileOptions, Objects, Snapshot};
use crate::validate::validate;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Who wins when two places define the same object: the higher origin,
/// then the later path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A manifest file of a folder source.
    #[default]
    File,
    /// An object the Kubernetes API server holds.
    Api,
}

#[derive(Default)]
struct FileState {
    origin: Origin,
    /// Keys this file currently contributes a good copy of (its last good
    /// parse), served or kept aside.
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
    /// The copy of each object that is served.
    objects: Objects,
    /// Good copies of objects that another place also defines and wins
    /// (rare: kept whole so the next one takes over without a re-read).
    shadowed: BTreeMap<ObjectKey, Vec<(PathBuf, Object)>>,
    compiler: Compiler,
    generation: u64,
}

impl Builder {
    pub fn new(opts: CompileOptions) -> Self {
        Builder {
            opts,
            files: BTreeMap::new(),
            objects: Objects::new(),
            shadowed: BTreeMap::new(),
            compiler: Compiler::new(),
            generation: 0,
        }
    }

    /// Paths currently known (for sources that need to notice deletions).
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// A manifest file's new content; `None` means the file is gone and so
    /// are its objects.
    pub fn update_file(&mut self, path: &Path, content: Option<&[u8]>) {
        self.update(path, Origin::File, content);
    }

    /// New content of `path` (a manifest file, or one API object under a
    /// path of its own) from `origin`; `None` means it is gone.
    pub fn update(&mut self, path: &Path, origin: Origin, content: Option<&[u8]>) {
        let Some(bytes) = content else {
            if let Some(old) = self.files.remove(path) {
                for k in old.keys {
                    self.withdraw(&k, path);
                }
            }
            return;
        };
        let state = self.files.entry(path.to_path_buf()).or_default();
        state.origin = origin;
        state.errors.clear();
        state.warnings.clear();
        let parsed = match parse_file(path, bytes, &self.opts.validate) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "manifest file rejected; keeping its last good objects");
                state.errors.push(e);
                return;
            }
        };
        let old_keys = std::mem::take(&mut state.keys);
        let mut sorted = self.sort_out(path, parsed.objects, &old_keys);
        for e in &sorted.errors {
            tracing::warn!(error = %e, "invalid object; keeping its last good version");
        }
        let mut new_keys = std::mem::take(&mut sorted.kept);
        for (key, obj) in sorted.good {
            new_keys.insert(key.clone());
            self.offer(key, path, obj);
        }
        for k in old_keys.difference(&new_keys) {
            self.withdraw(k, path);
        }
        let state = self.files.get_mut(path).expect("inserted above");
        state.keys = new_keys;
        state.errors = sorted.errors;
        state.warnings = parsed.warnings;
        state.warnings.extend(sorted.warnings);
    }

    /// Splits a file's objects into the good copy of each key and the keys
    /// whose last good version from this file stays because the new one is
    /// bad. The last copy of a key in the file decides, as if applied in
    /// order: an earlier copy only earns a warning.
    fn sort_out(
        &self,
        path: &Path,
        objects: Vec<Result<Object, (ObjectKey, Vec<FieldError>)>>,
        old_keys: &BTreeSet<ObjectKey>,
    ) -> Sorted {
        let mut out = Sorted::default();
        let mut last: BTreeMap<ObjectKey, Result<Object, Vec<FieldError>>> = BTreeMap::new();
        for item in objects {
            let (key, copy) = match item {
                Ok(obj) => (obj.key(), Ok(obj)),
                Err((key, fe)) => (key, Err(fe)),
            };
            if last.insert(key.clone(), copy).is_some() {
                out.warnings.push(Warning {
                    file: path.into(),
                    object: Some(key),
                    message: "defined twice in this file; the last copy is used".into(),
                });
            }
        }
        for (key, copy) in last {
            let problems = match copy {
                Err(problems) => problems,
                Ok(obj) => {
                    let problems = validate(&obj);
                    if problems.is_empty() {
                        out.good.insert(key, obj);
                        continue;
                    }
                    problems
                }
            };
            for fe in problems {
                out.errors.push(ConfigError::field(path, key.clone(), fe));
            }
            if old_keys.contains(&key) {
                out.kept.insert(key);
            }
        }
        out
    }

    /// Which of two places defining one object is served.
    fn rank<'a>(&self, path: &'a Path) -> (Origin, &'a Path) {
        let origin = self.files.get(path).map(|f| f.origin).unwrap_or_default();
        (origin, path)
    }

    /// `path` defines `key` as `obj`: it is served, or kept aside when a
    /// place that ranks higher defines it too.
    fn offer(&mut self, key: ObjectKey, path: &Path, obj: Object) {
        let served = self.objects.get(&key).map(|(p, _)| p.as_path());
        match served {
            Some(p) if p != path && self.rank(p) > self.rank(path) => {
                let aside = self.shadowed.entry(key).or_default();
                aside.retain(|(p, _)| p != path);
                aside.push((path.to_path_buf(), obj));
            }
            Some(p) if p != path => {
                let loser = self.objects.get(&key).cloned().expect("served");
                let aside = self.shadowed.entry(key.clone()).or_default();
                aside.retain(|(p, _)| p != path);
                aside.push(loser);
                self.set(key, Some((path.to_path_buf(), obj)));
            }
            _ => self.set(key, Some((path.to_path_buf(), obj))),
        }
    }

    /// `path` no longer defines `key`: if it was served, the next in line
    /// takes over.
    fn withdraw(&mut self, key: &ObjectKey, path: &Path) {
        if self.objects.get(key).is_some_and(|(p, _)| p == path) {
            let next = self.next_in_line(key);
            self.set(key.clone(), next);
        } else if let Some(aside) = self.shadowed.get_mut(key) {
            aside.retain(|(p, _)| p != path);
            if aside.is_empty() {
                self.shadowed.remove(key);
            }
        }
    }

    /// Takes the best copy kept aside for `key`, if any.
    fn next_in_line(&mut self, key: &ObjectKey) -> Option<(PathBuf, Object)> {
        let aside = self.shadowed.get(key)?;
        let best = (0..aside.len())
            .max_by(|a, b| self.rank(&aside[*a].0).cmp(&self.rank(&aside[*b].0)))?;
        let aside = self.shadowed.get_mut(key).expect("looked up above");
        let next = aside.swap_remove(best);
        if aside.is_empty() {
            self.shadowed.remove(key);
        }
        Some(next)
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

    /// Warnings of the files, and one for every copy of an object that is
    /// not served because another place defines it too.
    pub fn file_warnings(&self) -> Vec<Warning> {
        let mut out: Vec<Warning> = self
            .files
            .values()
            .flat_map(|f| f.warnings.clone())
            .collect();
        for (key, aside) in &self.shadowed {
            let Some((served, _)) = self.objects.get(key) else {
                continue;
            };
            let message = match self.rank(served).0 {
                Origin::Api => "the Kubernetes API also has this object; its copy is used".into(),
                Origin::File => format!(
                    "also defined in {}, which is used (the last file in name order wins)",
                    served.display()
                ),
            };
            out.extend(aside.iter().map(|(file, _)| Warning {
                file: file.clone(),
                object: Some(key.clone()),
                message: message.clone(),
            }));
        }
        out
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn object(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key).map(|(_, o)| o)
    }
}

/// A file's objects, sorted out before they are offered.
#[derive(Default)]
struct Sorted {
    good: BTreeMap<ObjectKey, Object>,
    kept: BTreeSet<ObjectKey>,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

#[cfg(test)]
mod tests;
