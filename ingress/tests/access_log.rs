//! The access log: one line per request, with route, upstream and status.
//! Its own test binary: the log's sink is installed once per process.

mod common;
use common::*;
use http::StatusCode;
use ingress::access_log::{self, Format};
use std::sync::Mutex;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn capture(line: &[u8]) {
    LINES
        .lock()
        .unwrap()
        .push(String::from_utf8(line.to_vec()).unwrap());
}

#[tokio::test(flavor = "current_thread")]
async fn one_access_log_line_per_request() {
    access_log::install(Format::Text, capture);
    let a = backend("a").await;
    let yaml = service("web", &[a]) + &ingress("logged", "x.test", &[("Prefix", "/", "web")], &[]);
    let p = Plane::start(&yaml).await;
    assert_eq!(get(p.http, "x.test", "/hello").await.status, StatusCode::OK);
    assert_eq!(
        get(p.http, "x.test", "/..").await.status,
        StatusCode::BAD_REQUEST
    );
    let lines = LINES.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = &lines[0];
    for want in [
        "path=\"/hello\"",
        "ingress=\"default/logged\"",
        "status=200",
        "upstream=Some(127.0.0.1:",
        " INFO nodeway::access: request method=GET client.addr=127.0.0.1:",
        "duration_us=",
    ] {
        assert!(first.contains(want), "{want} in {first}");
    }
    assert!(lines[1].contains("status=400"), "{}", lines[1]);
}
