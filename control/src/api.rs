//! The Kubernetes API source: lists and watches the kinds the planes read
//! (kube-runtime's watcher: list, then watch from the list's
//! resourceVersion; re-list on 410 Gone or a cut stream, with backoff) and
//! hands every event to the model as a change of one object, through the
//! same parse and validation as a manifest file (the object's "file" is
//! `k8s/<Kind>/<namespace>/<name>`, which errors name).
//!
//! - Nothing is published before every kind's initial list is complete.
//! - While any kind is being (re-)listed nothing is published: the planes
//!   serve the last complete picture, and the list's objects replace their
//!   old versions in place (no second copy of the kind); once the list is
//!   complete, objects missing from it are deleted and the whole change is
//!   published at once.
//! - `managedFields` and kubectl's last-applied copy are dropped when the
//!   object is parsed, as for files.
//! - Secrets are watched with `type=kubernetes.io/tls` only.
//! - `--config` paths given as well are read and watched like the folder
//!   source's, into the same builder; where both define an object, the
//!   API's copy is served (a warning names the file).

use crate::folder::{Files, Reload, SourceError, Watch, publish};
use crate::store::Store;
use futures_util::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use model::{Builder, CompileOptions, Origin, Snapshot};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why the API source could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster configuration: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Most events applied in one go: about two of the watcher's list pages.
const MAX_BATCH: usize = 1000;

/// The kinds always read from the API, in the order they are listed (the
/// Gateway API kinds follow where their CRDs are installed).
const KINDS: [&str; 6] = [
    "Namespace",
    "Service",
    "EndpointSlice",
    "IngressClass",
    "Ingress",
    "Secret",
];

/// Per-resource health of the watches, as `nodeway_api_*` series.
#[derive(Clone, Default)]
pub struct ApiMetrics {
    restarts: Family<ResourceLabel, Counter>,
    objects: Family<ResourceLabel, Gauge>,
    last_event: Family<ResourceLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

impl ApiMetrics {
    pub fn new(registry: &mut Registry) -> ApiMetrics {
        let m = ApiMetrics::default();
        let r = registry.sub_registry_with_prefix("nodeway_api");
        r.register(
            "watch_restarts",
            "Watch failures (410 Gone, a cut stream, API errors), each followed by a new watch or list with backoff",
            m.restarts.clone(),
        );
        r.register("objects", "Objects of the resource held", m.objects.clone());
        r.register(
            "last_event_timestamp_seconds",
            "When the resource's last event arrived (its age: time() minus this)",
            m.last_event.clone(),
        );
        m
    }

    fn label(kind: &'static str) -> ResourceLabel {
        ResourceLabel { resource: kind }
    }

    fn event(&self, kind: &'static str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.last_event.get_or_create(&Self::label(kind)).set(now);
    }
}

/// One watcher event, reduced to what the source needs.
pub(crate) enum Delta {
    /// A (re-)list of `kind` starts.
    Listing(&'static str),
    /// An object as the API has it now (JSON).
    Object(&'static str, PathBuf, Vec<u8>),
    Gone(&'static str, PathBuf),
    /// The list of `kind` is complete.
    Listed(&'static str),
    /// The watch of `kind` failed; it is retried with backoff. `refused`:
    /// the list was refused for good (403 Forbidden, 404 Not Found), not a
    /// passing failure.
    Failed(&'static str, bool),
}

pub(crate) type Deltas = Pin<Box<dyn Stream<Item = Delta> + Send>>;

/// Connects with a kubeconfig (`Some`) or the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ApiError> {
    let config = match kubeconfig {
        Some(path) => {
            let err = |source| ApiError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
        None => kube::Config::incluster()?,
    };
    Ok(Client::try_from(config)?)
}

/// The watch stream of one kind.
fn deltas<K>(client: &Client, kind: &'static str, config: watcher::Config) -> Deltas
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    to_deltas(kind, watcher(api, config).default_backoff(), |_: &mut K| {})
}

/// A watcher's events as Deltas of `kind`; `complete` fills in what the
/// model needs and the event lacks, before the object is serialized.
pub(crate) fn to_deltas<K>(
    kind: &'static str,
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    complete: impl Fn(&mut K) + Send + 'static,
) -> Deltas
where
    K: Resource + Serialize + Send + 'static,
{
    let path = move |o: &K| {
        PathBuf::from(format!(
            "k8s/{kind}/{}/{}",
            o.namespace().unwrap_or_default(),
            o.name_any()
        ))
    };
    let stream = events.filter_map(move |event| {
        let delta = match event {
            Ok(watcher::Event::Init) => Some(Delta::Listing(kind)),
            Ok(watcher::Event::InitDone) => Some(Delta::Listed(kind)),
            Ok(watcher::Event::InitApply(mut o) | watcher::Event::Apply(mut o)) => {
                complete(&mut o);
                serde_json::to_vec(&o)
                    .ok()
                    .map(|json| Delta::Object(kind, path(&o), json))
            }
            Ok(watcher::Event::Delete(o)) => Some(Delta::Gone(kind, path(&o))),
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch failed; retrying with backoff");
                let refused = matches!(
                    &e,
                    watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.is_forbidden() || s.is_not_found()
                );
                Some(Delta::Failed(kind, refused))
            }
        };
        std::future::ready(delta)
    });
    Box::pin(stream)
}

/// Every kind's stream, merged.
fn all_deltas(client: &Client, gateway: &[crate::api_gateway::GatewayKind]) -> Deltas {
    let plain = watcher::Config::default;
    let streams = vec![
        deltas::<Namespace>(client, "Namespace", plain()),
        deltas::<Service>(client, "Service", plain()),
        deltas::<EndpointSlice>(client, "EndpointSlice", plain()),
        deltas::<IngressClass>(client, "IngressClass", plain()),
        deltas::<Ingress>(client, "Ingress", plain()),
        deltas::<Secret>(client, "Secret", plain().fields("type=kubernetes.io/tls")),
    ];
    let streams = streams.into_iter().chain(
        gateway
            .iter()
            .map(|k| crate::api_gateway::deltas(client, k)),
    );
    Box::pin(futures_util::stream::select_all(streams))
}

/// Resolves `true` after a burst of file changes; never without files.
async fn files_changed(watch: &mut Option<Watch>) -> bool {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// The cluster as the API has it, turned into Snapshots.
pub struct ApiSource {
    client: Client,
    builder: Builder,
    /// Manifest files merged with the cluster (`--config` with the API).
    files: Option<Files>,
    /// The kinds read: [`KINDS`], then the Gateway API kinds installed.
    kinds: Vec<&'static str>,
    /// The objects of each kind in the builder now.
    known: BTreeMap<&'static str, BTreeSet<PathBuf>>,
    /// Kinds being (re-)listed: the objects the new list holds so far.
    listing: BTreeMap<&'static str, BTreeSet<PathBuf>>,
    /// Kinds whose first list is complete.
    listed: BTreeSet<&'static str>,
    /// A kind was listed again since the last publish.
    relisted: bool,
    metrics: ApiMetrics,
    /// What the source waits for, in words ("" when the picture is
    /// complete), for `/readyz`.
    progress: Arc<Mutex<String>>,
}

impl ApiSource {
    pub fn new(client: Client, opts: CompileOptions, metrics: ApiMetrics) -> ApiSource {
        ApiSource {
            client,
            builder: Builder::new(opts),
            files: None,
            kinds: KINDS.to_vec(),
            known: BTreeMap::new(),
            listing: BTreeMap::new(),
            listed: BTreeSet::new(),
            relisted: false,
            metrics,
            progress: Arc::new(Mutex::new(format!(
                "waiting for the first list of {}",
                KINDS.join(", ")
            ))),
        }
    }

    /// What the source waits for, in words ("" when nothing): the kinds
    /// whose first list is not complete, or that are being re-listed.
    pub fn progress(&self) -> Arc<Mutex<String>> {
        self.progress.clone()
    }

    fn describe_progress(&self) -> String {
        let unlisted: Vec<&str> = self
            .kinds
            .iter()
            .copied()
            .filter(|k| !self.listed.contains(k))
            .collect();
        if !unlisted.is_empty() {
            return format!("waiting for the first list of {}", unlisted.join(", "));
        }
        let relisting: Vec<&str> = self
            .listing
            .keys()
            .copied()
            .filter(|k| self.kinds.contains(k))
            .collect();
        if relisting.is_empty() {
            return String::new();
        }
        format!(
            "re-listing {} (the last complete picture is served)",
            relisting.join(", ")
        )
    }

    /// Merges the manifests under `roots` with the cluster: they are read
    /// and watched as the folder source does, and lose to the API's copy of
    /// an object both define.
    pub fn with_files(mut self, roots: Vec<PathBuf>) -> Result<ApiSource, SourceError> {
        self.files = Some(Files::new(roots)?);
        Ok(self)
    }

    /// Follows the API (and the files, if any) until the streams end
    /// (never, in practice), publishing a Snapshot after each burst of
    /// events once every kind is listed.
    pub async fn run(
        mut self,
        store: Store,
        mut on_reload: impl FnMut(&Snapshot, &Reload) + Send + 'static,
    ) -> Result<(), SourceError> {
        let gateway = crate::api_gateway::discover(&self.client).await;
        self.kinds.extend(gateway.iter().map(|k| k.kind));
        let mut stream = all_deltas(&self.client, &gateway);
        let mut watch = self.files.as_ref().map(Files::watch).transpose()?;
        let mut dirty = false;
        let mut rescan = self.files.is_some();
        loop {
            let mut batch = Vec::new();
            if !rescan {
                tokio::select! {
                    delta = stream.next() => match delta {
                        Some(d) => batch.push(d),
                        None => return Ok(()),
                    },
                    true = files_changed(&mut watch) => rescan = true,
                }
            }
            let started = Instant::now();
            // Whatever else is already there: one Snapshot per burst (of
            // at most a list page or two, so a re-list never holds a whole
            // kind's JSON at once).
            while batch.len() < MAX_BATCH
                && let Some(Some(more)) = stream.next().now_or_never()
            {
                batch.push(more);
            }
            // Parse, validate and compile off the async workers (an initial
            // list of 10,000 Services is seconds of work).
            let (source, changed, snap) = tokio::task::spawn_blocking(move || {
                let mut changed = dirty;
                if rescan && let Some(files) = &mut self.files {
                    changed |= files.scan(&mut self.builder);
                }
                for delta in batch {
                    changed |= self.apply(delta);
                }
                // Only complete pictures: every kind listed, none re-listing.
                let complete = self.kinds.iter().all(|k| self.listed.contains(k))
                    && !self.listing.keys().any(|k| self.kinds.contains(k));
                *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = self.describe_progress();
                let snap = (changed && complete).then(|| self.builder.build());
                let relisted = snap.is_some() && std::mem::take(&mut self.relisted);
                (self, changed && snap.is_none(), snap.map(|s| (s, relisted)))
            })
            .await
            .expect("API event handling panicked");
            self = source;
            dirty = changed;
            rescan = false;
            if let Some((snap, relisted)) = snap {
                publish(&store, snap, started, relisted, &mut on_reload);
            }
        }
    }

    /// Applies one event; whether the picture changed.
    fn apply(&mut self, delta: Delta) -> bool {
        let kind = match &delta {
            Delta::Listing(k) | Delta::Listed(k) | Delta::Failed(k, _) => *k,
            Delta::Object(k, _, _) | Delta::Gone(k, _) => *k,
        };
        self.metrics.event(kind);
        let changed = self.apply_delta(delta);
        let held = self.known.get(kind).map_or(0, BTreeSet::len);
        self.metrics
            .objects
            .get_or_create(&ApiMetrics::label(kind))
            .set(held as i64);
        changed
    }

    fn apply_delta(&mut self, delta: Delta) -> bool {
        match delta {
            Delta::Failed(kind, refused) => {
                self.metrics
                    .restarts
                    .get_or_create(&ApiMetrics::label(kind))
                    .inc();
                // A Gateway API kind whose list is refused (RBAC without
                // it, the CRD removed) must not hold back everything else:
                // it is no longer waited for, and back once a list works.
                // A passing failure (a timeout, a 5xx) is waited out.
                if refused
                    && !KINDS.contains(&kind)
                    && !self.listed.contains(kind)
                    && self.kinds.contains(&kind)
                {
                    tracing::warn!(
                        kind,
                        "cannot be listed: not waited for (read once a list works)"
                    );
                    self.kinds.retain(|k| *k != kind);
                }
                false
            }
            Delta::Listing(kind) => {
                self.listing.insert(kind, BTreeSet::new());
                false
            }
            Delta::Object(kind, path, json) => {
                self.builder.update(&path, Origin::Api, Some(&json));
                if let Some(list) = self.listing.get_mut(kind) {
                    list.insert(path.clone());
                }
                self.known.entry(kind).or_default().insert(path);
                true
            }
            Delta::Gone(kind, path) => {
                self.builder.update(&path, Origin::Api, None);
                self.known.entry(kind).or_default().remove(&path);
                true
            }
            Delta::Listed(kind) => {
                let now = self.listing.remove(kind).unwrap_or_default();
                let before = self.known.insert(kind, now.clone()).unwrap_or_default();
                for gone in before.difference(&now) {
                    self.builder.update(gone, Origin::Api, None);
                }
                self.relisted |= !self.listed.insert(kind);
                if !self.kinds.contains(&kind) {
                    self.kinds.push(kind);
                }
                tracing::info!(kind, objects = now.len(), "listed");
                true
            }
        }
    }
}
