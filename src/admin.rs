//! The admin listener: `/healthz`, `/readyz`, `/metrics`.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;

use crate::wire::PlaneHandle;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// Config-reload metrics (the planes register their own).
#[derive(Clone, Default)]
pub struct ConfigMetrics {
    pub generation: Gauge,
    pub reloads: Family<ResultLabel, Counter>,
    pub errors: Gauge,
    pub last_reload: Gauge<f64, AtomicU64>,
}

impl ConfigMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "nodeway_config_generation",
            "Generation of the Snapshot being served",
            self.generation.clone(),
        );
        r.register(
            "nodeway_config_reloads",
            "Snapshots published, by whether they carried config errors",
            self.reloads.clone(),
        );
        r.register(
            "nodeway_config_errors",
            "Config errors in the current Snapshot",
            self.errors.clone(),
        );
        r.register(
            "nodeway_config_last_reload_timestamp_seconds",
            "When the last Snapshot was published (Unix time)",
            self.last_reload.clone(),
        );
    }

    pub fn observe(&self, generation: u64, errors: usize) {
        self.generation.set(generation as i64);
        self.errors.set(errors as i64);
        let result = if errors == 0 { "success" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_reload.set(now);
    }
}

/// What `/readyz` looks at.
#[derive(Default)]
pub struct Readiness {
    pub loaded: AtomicBool,
    /// Running planes; taken out at shutdown.
    pub planes: Mutex<Vec<Box<dyn PlaneHandle>>>,
    /// Every plane has started (bound its listeners).
    pub started: AtomicBool,
    pub shutting_down: AtomicBool,
    /// What the config source waits for, in words ("" when nothing), if
    /// it says.
    pub source_progress: std::sync::OnceLock<Arc<Mutex<String>>>,
}

impl Readiness {
    fn report(&self) -> (bool, String) {
        use std::sync::atomic::Ordering;
        let mut ok = self.loaded.load(Ordering::Acquire);
        let mut body = String::new();
        let progress = self
            .source_progress
            .get()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default();
        match (ok, progress.is_empty()) {
            (false, true) => body.push_str("config: not loaded yet\n"),
            (false, false) => body.push_str(&format!("config: not loaded yet: {progress}\n")),
            (true, false) => body.push_str(&format!("config: {progress}\n")),
            (true, true) => {}
        }
        if self.shutting_down.load(Ordering::Acquire) {
            return (false, "shutting down\n".into());
        }
        let planes = self.planes.lock().expect("never poisoned");
        if !self.started.load(Ordering::Acquire) {
            ok = false;
            body.push_str("planes: not started yet\n");
        }
        // Problems (a Service port that could not bind) are detail, not unreadiness:
        // one bad Service must not take the node out of rotation.
        for p in planes.iter() {
            let problems = p.problems();
            if problems.is_empty() {
                body.push_str(&format!("{}: ok\n", p.name()));
            } else {
                for pr in problems {
                    body.push_str(&format!("{}: {pr}\n", p.name()));
                }
            }
        }
        (ok, body)
    }
}

/// Serves the admin endpoints. `registry` is filled in once every plane has
/// registered its metrics; until then `/metrics` answers 503.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<OnceLock<Registry>>,
    ready: Arc<Readiness>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let ready = ready.clone();
                async move {
                    let (status, body, ctype) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
                        "/readyz" => {
                            let (ok, body) = ready.report();
                            let s = if ok {
                                StatusCode::OK
                            } else {
                                StatusCode::SERVICE_UNAVAILABLE
                            };
                            (s, body, "text/plain")
                        }
                        "/metrics" => {
                            let mut out = String::new();
                            let Some(registry) = registry.get() else {
                                return Ok(reply(
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "starting\n".into(),
                                    "text/plain",
                                ));
                            };
                            match prometheus_client::encoding::text::encode(&mut out, registry) {
                                Ok(()) => (
                                    StatusCode::OK,
                                    out,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                ),
                                Err(e) => (
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    e.to_string(),
                                    "text/plain",
                                ),
                            }
                        }
                        _ => (
                            StatusCode::NOT_FOUND,
                            "not found\n".to_string(),
                            "text/plain",
                        ),
                    };
                    Ok::<_, std::convert::Infallible>(reply(status, body, ctype))
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: String, ctype: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    struct Plane(Vec<String>);
    impl PlaneHandle for Plane {
        fn name(&self) -> &'static str {
            "l4"
        }
        fn problems(&self) -> Vec<String> {
            self.0.clone()
        }
        fn applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            None
        }
        fn shutdown(self: Box<Self>, _: std::time::Duration) -> crate::wire::BoxFuture {
            Box::pin(async {})
        }
    }

    #[test]
    fn ready_only_after_load_and_start_and_not_while_stopping() {
        let r = Readiness::default();
        assert!(!r.report().0, "nothing loaded");
        r.loaded.store(true, Ordering::Release);
        assert!(!r.report().0, "planes not started");
        r.planes
            .lock()
            .unwrap()
            .push(Box::new(Plane(vec!["bind 127.0.0.9:80: denied".into()])));
        r.started.store(true, Ordering::Release);
        let (ok, body) = r.report();
        assert!(ok, "a Service that cannot bind is detail, not unreadiness");
        assert!(body.contains("l4: bind 127.0.0.9:80: denied"), "{body}");
        r.shutting_down.store(true, Ordering::Release);
        assert!(!r.report().0);
    }
}
