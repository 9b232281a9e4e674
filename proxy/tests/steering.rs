//! Steering (the `steer` crate's sk_lookup program): every TCP frontend of
//! a family goes to one shared listener. Needs root; skipped otherwise.

mod common;

use common::*;
use proxy::Config;
use std::io::ErrorKind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: steering needs root");
    }
    root
}

fn cluster_ip(i: usize) -> String {
    format!("127.64.{}.{}", i / 250, i % 250 + 1)
}

/// The number of sockets does not grow with the number of Services: a
/// budget of one socket serves 300 of them.
#[tokio::test]
async fn three_hundred_services_take_one_socket() {
    if !root() {
        return;
    }
    let a = Backend::start(addr("127.0.63.1:0"), "a").await;
    let yaml: String = (0..300)
        .map(|i| tcp_service(&format!("s{i}"), &cluster_ip(i), &a, "127.0.63.1"))
        .collect();
    let cfg = Config {
        max_listeners: 1,
        ..Config::default()
    };
    let h = Harness::start(&yaml, cfg).await;
    assert_eq!(h.proxy.problems(), Vec::<String>::new());
    let listeners = h.proxy.listeners();
    assert_eq!(listeners.len(), 300);
    assert!(listeners.iter().all(|l| l.steered), "{listeners:?}");
    for i in [0, 149, 299] {
        let to = addr(&format!("{}:8080", cluster_ip(i)));
        assert_eq!(hello(to).await.0, "a", "{to}");
    }
}

/// A steered address wins over a socket someone else bound there, as
/// kube-proxy's DNAT does; removing the Service refuses new connections
/// and keeps the open ones.
#[tokio::test]
async fn steered_address_is_taken_over_and_given_back() {
    if !root() {
        return;
    }
    let a = Backend::start(addr("127.0.63.2:0"), "a").await;
    let squatter = std::net::TcpListener::bind("127.0.63.100:8080").unwrap();
    let svc = tcp_service("over", "127.0.63.100", &a, "127.0.63.2");
    let mut h = Harness::start(&svc, Config::default()).await;
    assert_eq!(h.proxy.problems(), Vec::<String>::new());
    let (name, mut open) = hello(addr("127.0.63.100:8080")).await;
    assert_eq!(name, "a");

    // Gone from the manifests: the squatter gets its address back.
    h.update("").await;
    assert!(h.proxy.listeners().is_empty());
    let _c = TcpStream::connect("127.0.63.100:8080").await.unwrap();
    squatter.set_nonblocking(true).unwrap();
    let squatter = tokio::net::TcpListener::from_std(squatter).unwrap();
    tokio::time::timeout(DEADLINE, squatter.accept())
        .await
        .expect("the squatter accepts once steering is gone")
        .unwrap();
    drop(squatter);
    let err = TcpStream::connect("127.0.63.100:8080").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    // The connection accepted while steered is still served.
    open.get_mut().write_all(b"still\n").await.unwrap();
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, open.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.trim(), "still");
}

/// A frontend that is also its own endpoint (a hostNetwork backend behind
/// an address of its own node) is never steered: the plane's connect to the
/// endpoint would come straight back to it. It gets a socket of its own,
/// which the backend already holds, so the bind failure is reported and
/// clients reach the backend itself.
#[tokio::test]
async fn a_frontend_that_is_its_own_endpoint_is_not_steered() {
    if !root() {
        return;
    }
    let a = Backend::start(addr("127.0.63.150:0"), "a").await;
    let port = a.addr.port();
    let svc = service(
        "self",
        "127.0.63.150",
        port,
        "TCP",
        port,
        &[ready("127.0.63.150")],
        "",
        "",
    );
    let h = Harness::start(&svc, Config::default()).await;
    assert!(h.proxy.listeners().iter().all(|l| !l.steered));
    let problems = h.proxy.problems();
    assert!(
        problems.iter().any(|p| p.contains(&a.addr.to_string())),
        "{problems:?}"
    );
    assert_eq!(hello(a.addr).await.0, "a");
}
