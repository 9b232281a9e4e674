use super::*;
use std::fs;
use std::os::unix::fs::symlink;

fn svc(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
    )
}

/// Writes like an editor: a temporary file renamed over the target.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

async fn wait_for(store: &Store, what: &str, f: impl Fn(&Snapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rx = store.snapshots();
    loop {
        if f(&store.load()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        let _ = tokio::time::timeout(left, rx.changed()).await;
    }
}

fn start(roots: Vec<PathBuf>) -> Store {
    let store = Store::new();
    let src = FolderSource::new(roots, CompileOptions::default()).unwrap();
    let s = store.clone();
    tokio::spawn(async move { src.run(s, |_, _| {}).await });
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_is_picked_up_as_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("svc.yaml");
    fs::write(&f, svc("a", "127.0.0.10")).unwrap();
    let store = start(vec![dir.path().into()]);
    wait_for(&store, "first load", |s| {
        s.service("default", "a").is_some()
    })
    .await;
    let first = store.load().generation;
    write_atomic(&f, &svc("a", "127.0.0.11"));
    wait_for(&store, "new clusterIP", |s| {
        s.service("default", "a")
            .is_some_and(|a| a.cluster_ips[0].to_string() == "127.0.0.11")
    })
    .await;
    assert!(store.load().generation > first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_file_removes_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), svc("a", "127.0.0.10")).unwrap();
    fs::write(dir.path().join("b.yaml"), svc("b", "127.0.0.12")).unwrap();
    let store = start(vec![dir.path().into()]);
    wait_for(&store, "both", |s| s.services.len() == 2).await;
    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    wait_for(&store, "a gone", |s| {
        s.service("default", "a").is_none() && s.service("default", "b").is_some()
    })
    .await;
}

/// Kubernetes ConfigMap volumes: `svc.yaml -> ..data/svc.yaml`, `..data -> ..v1`;
/// an update writes `..v2` and swaps the `..data` symlink by rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_data_symlink_swap_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("..v1")).unwrap();
    fs::write(d.join("..v1/svc.yaml"), svc("a", "127.0.0.10")).unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    symlink("..data/svc.yaml", d.join("svc.yaml")).unwrap();
    let store = start(vec![d.into()]);
    wait_for(&store, "first load", |s| {
        s.service("default", "a").is_some()
    })
    .await;
    assert_eq!(
        store.load().services.len(),
        1,
        "hidden ..v1 copy must not count twice"
    );

    fs::create_dir(d.join("..v2")).unwrap();
    fs::write(d.join("..v2/svc.yaml"), svc("a", "127.0.0.20")).unwrap();
    symlink("..v2", d.join("..data_tmp")).unwrap();
    fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    fs::remove_dir_all(d.join("..v1")).unwrap();
    wait_for(&store, "swapped content", |s| {
        s.service("default", "a")
            .is_some_and(|a| a.cluster_ips[0].to_string() == "127.0.0.20")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_keeps_last_good_objects_while_others_update() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    fs::write(&a, svc("a", "127.0.0.10")).unwrap();
    fs::write(&b, svc("b", "127.0.0.12")).unwrap();
    let store = start(vec![dir.path().into()]);
    wait_for(&store, "both", |s| s.services.len() == 2).await;
    write_atomic(&a, "apiVersion: v1\nkind: Service\nmetadata: {name: a\n"); // unclosed flow map
    write_atomic(&b, &svc("b", "127.0.0.13"));
    wait_for(&store, "b updated", |s| {
        s.service("default", "b")
            .is_some_and(|b| b.cluster_ips[0].to_string() == "127.0.0.13")
    })
    .await;
    let snap = store.load();
    assert!(
        snap.service("default", "a").is_some(),
        "a keeps its last good version"
    );
    assert_eq!(snap.errors.len(), 1);
    assert!(snap.errors[0].file.ends_with("a.yaml"));
}

#[test]
fn unchanged_rescan_reports_no_change() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), svc("a", "127.0.0.10")).unwrap();
    fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let mut src = FolderSource::new(vec![dir.path().into()], CompileOptions::default()).unwrap();
    assert!(src.scan());
    assert!(!src.scan());
    assert_eq!(src.build().services.len(), 1);
}

/// Reading the files (ours or anyone's) is not a change: no rescan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_files_does_not_trigger_rescans() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.yaml");
    fs::write(&f, svc("a", "127.0.0.10")).unwrap();
    let store = Store::new();
    let src = FolderSource::new(vec![dir.path().into()], CompileOptions::default()).unwrap();
    let scans = src.scan_counter();
    let s = store.clone();
    tokio::spawn(async move { src.run(s, |_, _| {}).await });
    wait_for(&store, "first load", |s| s.generation == 1).await;
    for _ in 0..5 {
        let _ = fs::read(&f).unwrap();
    }
    // A real change afterwards is the second scan: nothing came in between,
    // neither our own reads nor the ones above.
    write_atomic(&f, &svc("a", "127.0.0.11"));
    wait_for(&store, "the change", |s| s.generation == 2).await;
    // Give a spinning watcher the time to show itself (several debounce periods).
    tokio::time::sleep(DEBOUNCE * 4).await;
    assert_eq!(scans.load(Ordering::Relaxed), 2);
}

fn set_age(path: &std::path::Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn rescans_read_only_files_whose_size_mtime_or_inode_moved() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    fs::write(&a, svc("a", "127.0.0.10")).unwrap();
    fs::write(&b, svc("b", "127.0.0.11")).unwrap();
    set_age(&a, 60);
    set_age(&b, 60);
    let mut src = FolderSource::new(vec![dir.path().into()], CompileOptions::default()).unwrap();
    let reads = src.read_counter();
    assert!(src.scan());
    assert_eq!(reads.load(Ordering::Relaxed), 2);
    assert!(!src.scan());
    assert_eq!(
        reads.load(Ordering::Relaxed),
        2,
        "unchanged files are not read"
    );
    // Same size, rewritten in place: the mtime tells.
    fs::write(&b, svc("b", "127.0.0.12")).unwrap();
    set_age(&b, 30);
    assert!(src.scan());
    assert_eq!(reads.load(Ordering::Relaxed), 3);
    let snap = src.build();
    assert_eq!(
        snap.service("default", "b").unwrap().cluster_ips,
        vec!["127.0.0.12".parse::<std::net::IpAddr>().unwrap()]
    );
    // A file changed just now cannot be proven unchanged by its mtime
    // (a same-size rewrite in the same clock tick keeps it): it is read
    // again, but not parsed again while its bytes stay the same.
    fs::write(&a, svc("a", "127.0.0.13")).unwrap();
    assert!(src.scan());
    assert!(!src.scan());
    assert_eq!(reads.load(Ordering::Relaxed), 5);
}

/// `Watch::changed` is raced against the API stream in a `select!`: a
/// call dropped in the middle of a burst's debounce must not lose the
/// burst (the next call reports it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_call_loses_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files::new(vec![dir.path().into()]).unwrap();
    let mut watch = files.watch().unwrap();
    fs::write(dir.path().join("a.yaml"), "a: 1\n").unwrap();
    // Dropped after the first event arrived, before the burst is over.
    let cut = tokio::time::timeout(DEBOUNCE / 3, watch.changed()).await;
    assert!(cut.is_err(), "still debouncing");
    let reported = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
    assert_eq!(reported.ok(), Some(true), "the burst is still reported");
}
