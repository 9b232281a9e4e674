//! The folder source: reads every manifest under the `--config` paths, watches
//! them, and publishes a new Snapshot when something really changed.
//!
//! Each change triggers a rescan of the paths rather than trusting individual
//! events: editors write-then-rename, and Kubernetes ConfigMap volumes swap a
//! `..data` symlink, so the event names rarely match the file names that changed.
//! A rescan reads only files whose size, mtime or inode moved, and parses only
//! those whose bytes differ: one changed file of 10,000 costs one file's parse.

use crate::store::Store;
use model::{Builder, CompileOptions, Snapshot};
use notify::{RecursiveMode, Watcher};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Events closer together than this are handled as one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(75);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// What one reload did, for logs and metrics.
#[derive(Debug, Clone)]
pub struct Reload {
    pub generation: u64,
    pub errors: usize,
    pub took: Duration,
    /// A whole kind was listed again (an API re-list): a large transient
    /// just ended, and its freed memory is worth handing back.
    pub relisted: bool,
}

pub struct FolderSource {
    files: Files,
    builder: Builder,
}

/// The manifest files under some paths, as last read: a rescan hands a
/// builder only the files that appeared, changed or went. Both sources use
/// it (the API source for the `--config` paths merged with the cluster).
pub(crate) struct Files {
    roots: Vec<PathBuf>,
    /// What every file looked like when last read, to skip unchanged files.
    seen: BTreeMap<PathBuf, Seen>,
    /// Rescans done (tests use it to prove idle folders cost nothing).
    scans: Arc<AtomicU64>,
    /// Files read (tests use it to prove unchanged files are not).
    reads: Arc<AtomicU64>,
}

/// Reads the paths once and compiles them: what `nodeway check` uses.
pub fn load_paths(roots: &[PathBuf], opts: CompileOptions) -> Result<Arc<Snapshot>, SourceError> {
    let mut src = FolderSource::new(roots.to_vec(), opts)?;
    src.scan();
    Ok(src.build())
}

/// A file as last read: a rescan reads it again only if its size, mtime or
/// inode moved, and parses it again only if its bytes did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    stat: Option<Stat>,
    hash: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    len: u64,
    mtime: std::time::SystemTime,
    dev: u64,
    ino: u64,
}

/// Within this of a scan, an mtime cannot prove a file unchanged: a same-size
/// rewrite in the same clock tick keeps it (git's "racy" files). Such files
/// are read again (and only parsed if their bytes changed).
const RACY: Duration = Duration::from_secs(2);

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Option<Stat> {
        use std::os::unix::fs::MetadataExt;
        Some(Stat {
            len: meta.len(),
            mtime: meta.modified().ok()?,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Proves the file unchanged since it was seen like this at `scanned`.
    fn trusted(&self, scanned: std::time::SystemTime) -> bool {
        self.mtime + RACY < scanned
    }
}

impl Files {
    /// The paths must exist now (a typo should not start an empty source).
    pub(crate) fn new(roots: Vec<PathBuf>) -> Result<Files, SourceError> {
        for r in &roots {
            std::fs::metadata(r).map_err(|source| SourceError::Io {
                path: r.clone(),
                source,
            })?;
        }
        Ok(Files {
            roots,
            seen: BTreeMap::new(),
            scans: Arc::default(),
            reads: Arc::default(),
        })
    }

    /// Rereads the paths into `builder`; returns true when any file
    /// appeared, changed or went.
    pub(crate) fn scan(&mut self, builder: &mut Builder) -> bool {
        self.scans.fetch_add(1, Ordering::Relaxed);
        let mut files = BTreeSet::new();
        for root in &self.roots {
            collect_files(root, true, 0, &mut files);
        }
        let mut changed = false;
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !files.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            tracing::info!(file = %path.display(), "manifest file removed");
            self.seen.remove(&path);
            builder.update_file(&path, None);
            changed = true;
        }
        let now = std::time::SystemTime::now();
        for path in files {
            let stat = std::fs::metadata(&path).ok().as_ref().and_then(Stat::of);
            let old = self.seen.get(&path).copied();
            if let (Some(old), Some(stat)) = (old, stat)
                && old.stat == Some(stat)
                && stat.trusted(now)
            {
                continue;
            }
            let bytes = match read_limited(&path) {
                Ok(b) => b,
                Err(e) => {
                    // Vanished between listing and reading: the next event rescans.
                    tracing::debug!(file = %path.display(), error = %e, "unreadable, skipped");
                    continue;
                }
            };
            self.reads.fetch_add(1, Ordering::Relaxed);
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            let hash = h.finish();
            // Trust the stat only if it did not move while we read.
            let after = std::fs::metadata(&path).ok().as_ref().and_then(Stat::of);
            let seen = Seen {
                stat: stat.filter(|s| after == Some(*s)),
                hash,
            };
            self.seen.insert(path.clone(), seen);
            if old.is_some_and(|o| o.hash == hash) {
                continue;
            }
            builder.update_file(&path, Some(&bytes));
            changed = true;
        }
        changed
    }

    /// Watches the paths: each burst of changes is one message on the
    /// receiver (debounced), until the watcher is dropped.
    pub(crate) fn watch(&self) -> Result<Watch, SourceError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Our own rescans open and read the files: access events must not
            // trigger another rescan, or the source would spin.
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(|source| SourceError::Watch {
            path: PathBuf::new(),
            source,
        })?;
        for root in &self.roots {
            // A file is watched through its folder: editors replace files by rename.
            let (target, mode) = if root.is_dir() {
                (root.clone(), RecursiveMode::Recursive)
            } else {
                let parent = root.parent().filter(|p| !p.as_os_str().is_empty());
                (
                    parent.unwrap_or(Path::new(".")).to_path_buf(),
                    RecursiveMode::NonRecursive,
                )
            };
            watcher
                .watch(&target, mode)
                .map_err(|source| SourceError::Watch {
                    path: target.clone(),
                    source,
                })?;
        }
        Ok(Watch {
            _watcher: watcher,
            events: rx,
            pending: false,
        })
    }
}

/// File-system events of some paths.
pub(crate) struct Watch {
    _watcher: notify::RecommendedWatcher,
    events: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// A burst has begun and is not reported yet: kept here, not in the
    /// future, so a caller that drops [`Watch::changed`] (a `select!` that
    /// took another branch) loses nothing.
    pending: bool,
}

impl Watch {
    /// Resolves once a burst of changes is over (no event for
    /// [`DEBOUNCE`]); `false` when the watcher stopped. Cancel-safe.
    pub(crate) async fn changed(&mut self) -> bool {
        if !self.pending {
            if self.events.recv().await.is_none() {
                return false;
            }
            self.pending = true;
        }
        loop {
            match tokio::time::timeout(DEBOUNCE, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => {
                    self.pending = false;
                    return true;
                }
            }
        }
    }
}

impl FolderSource {
    pub fn new(roots: Vec<PathBuf>, opts: CompileOptions) -> Result<Self, SourceError> {
        Ok(FolderSource {
            files: Files::new(roots)?,
            builder: Builder::new(opts),
        })
    }

    /// How many rescans this source has done so far.
    pub fn scan_counter(&self) -> Arc<AtomicU64> {
        self.files.scans.clone()
    }

    /// How many files this source has read so far.
    pub fn read_counter(&self) -> Arc<AtomicU64> {
        self.files.reads.clone()
    }

    /// Rereads the paths; returns true when any file appeared, changed or went.
    pub fn scan(&mut self) -> bool {
        self.files.scan(&mut self.builder)
    }

    pub fn build(&mut self) -> Arc<Snapshot> {
        self.builder.build()
    }

    /// Loads the paths, publishes the first Snapshot, then watches and
    /// republishes on change until the store's receivers are all gone.
    pub async fn run(
        mut self,
        store: Store,
        mut on_reload: impl FnMut(&Snapshot, &Reload) + Send + 'static,
    ) -> Result<(), SourceError> {
        let mut watch = self.files.watch()?;
        self = self.reload(&store, &mut on_reload, true).await;
        while watch.changed().await {
            self = self.reload(&store, &mut on_reload, false).await;
        }
        Ok(())
    }

    /// Rescans off the async workers (file reads block) and publishes the
    /// result when something changed (always on the first load).
    async fn reload(
        mut self,
        store: &Store,
        on_reload: &mut impl FnMut(&Snapshot, &Reload),
        first: bool,
    ) -> Self {
        let started = Instant::now();
        let (src, snap) = tokio::task::spawn_blocking(move || {
            let changed = self.scan();
            let snap = (changed || first).then(|| self.build());
            (self, snap)
        })
        .await
        .expect("manifest rescan panicked");
        if let Some(snap) = snap {
            publish(store, snap, started, false, on_reload);
        }
        src
    }
}

/// Publishes a source's new Snapshot: logs its errors and the reload,
/// tells `on_reload`, then swaps it in. Every source ends a change here.
pub(crate) fn publish(
    store: &Store,
    snap: Arc<Snapshot>,
    started: Instant,
    relisted: bool,
    on_reload: &mut impl FnMut(&Snapshot, &Reload),
) {
    let r = Reload {
        generation: snap.generation,
        errors: snap.errors.len(),
        took: started.elapsed(),
        relisted,
    };
    for e in snap.errors.iter() {
        tracing::warn!(generation = r.generation, error = %e, "config error");
    }
    log_new_warnings(&store.load(), &snap);
    tracing::info!(
        generation = r.generation,
        services = snap.services.len(),
        errors = r.errors,
        took_ms = r.took.as_secs_f64() * 1e3,
        "snapshot published"
    );
    on_reload(&snap, &r);
    store.publish(snap);
}

/// Logs the warnings `new` has and `old` had not: each once, not at every
/// reload.
fn log_new_warnings(old: &Snapshot, new: &Snapshot) {
    if Arc::ptr_eq(&old.warnings, &new.warnings) {
        return;
    }
    let seen: std::collections::HashSet<String> =
        old.warnings.iter().map(ToString::to_string).collect();
    for w in new.warnings.iter() {
        let text = w.to_string();
        if !seen.contains(&text) {
            tracing::warn!(generation = new.generation, warning = %text, "config warning");
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Files under `path`, following symlinks, skipping dot-entries (`..data`,
/// `..2024_01_01...` of ConfigMap volumes are reached through their symlinks).
fn collect_files(path: &Path, explicit: bool, depth: usize, out: &mut BTreeSet<PathBuf>) {
    // Symlinked folders can loop; real manifest trees are shallow.
    if depth > 16 {
        return;
    }
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    if hidden && !explicit {
        return;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_file() {
        if explicit || is_manifest(path) {
            out.insert(path.to_path_buf());
        }
    } else if meta.is_dir() {
        let Ok(rd) = std::fs::read_dir(path) else {
            return;
        };
        for entry in rd.flatten() {
            collect_files(&entry.path(), false, depth + 1, out);
        }
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    // One byte over the limit is enough for the parser to reject the file.
    f.take(model::parse::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests;
