//! `nodeway run`: load the manifests, start the planes, serve until SIGTERM.

use crate::admin::{self, ConfigMetrics, Readiness};
use crate::wire::{Common, Ctx, PlaneHandle};
use crate::{
    ServeArgs, allocator, limits, programming, wire_dns, wire_iface, wire_ingress, wire_l4,
};
use anyhow::Context;
use control::{FolderSource, Store};
use prometheus_client::registry::Registry;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Called once everything is bound (the demo prints its guide).
pub type OnReady = Box<dyn FnOnce(&model::Snapshot) + Send>;

/// Runs until SIGTERM/SIGINT, then drains within the grace period.
/// Where the cluster's objects come from.
pub enum Source {
    /// Folders or files of manifests, watched.
    Folders(Vec<PathBuf>),
    /// The Kubernetes API (a kubeconfig, or the in-cluster service
    /// account), merged with manifest files (the API's copy wins).
    Api {
        kubeconfig: Option<PathBuf>,
        files: Vec<PathBuf>,
        /// Write the node's addresses into the served Ingresses' status.
        publish_status: bool,
    },
}

/// Keeps a timer due within a second, for the life of the runtime.
///
/// tokio wakes its driver (an eventfd write, then an extra epoll_wait
/// return) whenever a timer is registered that is due before the one the
/// driver parked for. Without a near timer, every proxied connection's
/// connect timeout was such a timer: one write and one wake-up per
/// connection. With this one, the cost is one wake-up a second
/// (bench/RESULTS.md has the A/B).
async fn anchor_timer_wheel() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
    }
}

pub async fn run(source: Source, args: ServeArgs, on_ready: Option<OnReady>) -> anyhow::Result<()> {
    let started = std::time::SystemTime::now();
    tokio::spawn(anchor_timer_wheel());
    let store = Store::new();
    let opts = args.model.compile_options(&args.ingress)?;
    let nofile = limits::raise_nofile().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read or raise the open-file limit");
        1024
    });

    let mut registry = Registry::default();
    let config_metrics = ConfigMetrics::default();
    config_metrics.register(&mut registry);
    let programming = programming::register(&mut registry);
    registry.register(
        "nodeway_access_log_dropped",
        "Access-log lines dropped because stderr did not keep up",
        crate::logwriter::DROPPED.clone(),
    );
    let ready = Arc::new(Readiness::default());

    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("admin listener {}", args.admin_listen))?;
    // Serve /healthz and a not-ready /readyz while loading.
    let metrics_registry = Arc::new(OnceLock::new());
    tokio::spawn(admin::serve(admin, metrics_registry.clone(), ready.clone()));

    // Follow the source; the first Snapshot is published before we go on.
    let mut updates = store.snapshots();
    let (m, r) = (config_metrics.clone(), ready.clone());
    let on_reload = move |snap: &model::Snapshot, reload: &control::Reload| {
        m.observe(snap.generation, snap.errors.len());
        r.loaded.store(true, Ordering::Release);
        if reload.relisted {
            // A re-list parsed a whole kind on the blocking pool's threads;
            // glibc would keep what it freed in their arenas.
            tokio::task::spawn_blocking(allocator::release_free_memory);
        }
    };
    let mut status_writer = None;
    let source_task: tokio::task::JoinHandle<anyhow::Result<()>> = match source {
        Source::Folders(paths) => {
            let folder = FolderSource::new(paths, opts)?;
            let store = store.clone();
            tokio::spawn(async move { Ok(folder.run(store, on_reload).await?) })
        }
        Source::Api {
            kubeconfig,
            files,
            publish_status,
        } => {
            let client = control::api::client(kubeconfig.as_deref()).await?;
            if publish_status {
                if args.node_ips.iter().all(IpAddr::is_loopback) {
                    tracing::warn!(addresses = ?args.node_ips, "--publish-status with loopback --node-ip addresses only: clients elsewhere cannot use them");
                }
                status_writer = Some(control::status::StatusWriter::new(
                    client.clone(),
                    &args.node_ips,
                ));
            }
            let metrics = control::api::ApiMetrics::new(&mut registry);
            let mut api = control::api::ApiSource::new(client, opts, metrics);
            let _ = ready.source_progress.set(api.progress());
            if !files.is_empty() {
                api = api.with_files(files)?;
            }
            let store = store.clone();
            tokio::spawn(async move { Ok(api.run(store, on_reload).await?) })
        }
    };
    let mut ctx = Ctx {
        snapshots: store.snapshots(),
        registry,
        common: Common {
            node_ips: args.node_ips.clone(),
            node_name: args.node_name.clone(),
            node_zone: args.node_zone.clone(),
            cluster_domain: args
                .cluster_domain
                .trim_end_matches('.')
                .to_ascii_lowercase(),
        },
    };
    // DNS and Ingress bind first: however many Service addresses L4 has to
    // bind (or fails to), the other planes have their sockets. DNS answers
    // from the start: SERVFAIL for the cluster's names until the first
    // Snapshot (an API source's initial lists may take a while), never
    // NXDOMAIN.
    let mut planes: Vec<Box<dyn PlaneHandle>> = Vec::new();
    planes.extend(
        wire_dns::start(&args.dns, &mut ctx)
            .await
            .context("DNS plane")?,
    );
    if updates.wait_ready().await.is_err() {
        // The source ended before loading anything: report why.
        return match source_task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("config source stopped")),
        };
    }
    // One plane compiles the first picture at a time: side by side, on
    // threads of their own, they would leave glibc's arenas fragmented
    // (about 15 MB more at 10,000 Services).
    serving(&planes, store.snapshots().generation()).await;
    planes.extend(
        wire_ingress::start(&args.ingress, &mut ctx)
            .await
            .context("Ingress plane")?,
    );
    // Service addresses on the managed interface before L4 serves them.
    let keeper = wire_iface::start(&args.interface, ctx.snapshots.clone())
        .await
        .context("managed interface")?;
    if let Some(k) = &keeper {
        planes.push(Box::new(wire_iface::Handle(k.problems())));
    }
    match wire_l4::start(&args.l4, &mut ctx, limits::listener_budget(nofile)).await {
        Ok(l4) => planes.extend(l4),
        Err(e) => {
            // Do not leave the addresses behind for a process that is not
            // coming up.
            if let Some(k) = keeper {
                k.shutdown().await;
            }
            return Err(e.context("L4 plane"));
        }
    }
    let names: Vec<&str> = planes.iter().map(|p| p.name()).collect();
    // Ready means serving the loaded picture.
    serving(&planes, store.snapshots().generation()).await;
    let applied = planes.iter().filter_map(|p| p.applied()).collect();
    tokio::spawn(programming::follow(
        store.snapshots(),
        applied,
        programming,
        started,
    ));
    allocator::release_free_memory();
    tracing::info!(planes = ?names, admin = %args.admin_listen, "nodeway ready");
    *ready.planes.lock().expect("never poisoned") = planes;
    ready.started.store(true, Ordering::Release);
    // Only a node that serves is published in the Ingresses' status.
    let (stop_status, status_stopped) = tokio::sync::oneshot::channel::<()>();
    let status_task = status_writer.map(|w| {
        let stop = async {
            let _ = status_stopped.await;
        };
        tokio::spawn(w.run(store.snapshots(), stop))
    });
    let _ = metrics_registry.set(ctx.registry);
    if let Some(f) = on_ready {
        f(&store.load());
    }

    shutdown_signal().await;
    tracing::info!(grace = ?args.grace_period, "shutting down: no new work, draining");
    ready.shutting_down.store(true, Ordering::Release);
    // Clients should stop being sent here: our addresses leave the
    // Ingresses' status while the planes drain.
    let _ = stop_status.send(());
    let planes = std::mem::take(&mut *ready.planes.lock().expect("never poisoned"));
    let mut drains: Vec<_> = planes
        .into_iter()
        .map(|p| tokio::spawn(p.shutdown(args.grace_period)))
        .collect();
    drains.extend(status_task);
    let all = async {
        for d in drains {
            let _ = d.await;
        }
    };
    // Planes bound themselves by the grace period; this is the backstop.
    let _ = tokio::time::timeout(args.grace_period + Duration::from_secs(1), all).await;
    if let Some(k) = keeper {
        k.shutdown().await;
    }
    source_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Waits until every plane serves `generation` or a later one.
async fn serving(planes: &[Box<dyn PlaneHandle>], generation: u64) {
    for mut p in planes.iter().filter_map(|p| p.applied()) {
        let _ = p.wait_for(|g| *g >= generation).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
