//! The access log: one event per request, with route, upstream and status.
//! Its own test binary: tracing caches callsite interest process-wide, so a
//! thread-local subscriber must not race other tests.

mod common;
use common::*;
use http::StatusCode;

/// Collects the access-log events (target `nodeway::access`) as text.
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.target() == "nodeway::access"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        struct V(String);
        impl tracing::field::Visit for V {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", f.name(), v));
            }
        }
        let mut v = V(String::new());
        e.record(&mut v);
        self.0.lock().unwrap().push(v.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn one_access_log_event_per_request() {
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Capture(lines.clone()));
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("logged", "x.test", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    assert_eq!(get(p.http, "x.test", "/hello").await.status, StatusCode::OK);
    assert_eq!(
        get(p.http, "x.test", "/..").await.status,
        StatusCode::BAD_REQUEST
    );
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = &lines[0];
    for want in [
        "path=\"/hello\"",
        "ingress=\"default/logged\"",
        "status=200",
        "upstream=Some(127.0.0.1:",
        "duration_us=",
    ] {
        assert!(first.contains(want), "{want} in {first}");
    }
    assert!(lines[1].contains("status=400"), "{}", lines[1]);
}
