//! `--manage-interface`: the Service addresses are kept on an interface,
//! traffic to them reaches the L4 plane, and only our addresses change.
//! Runs inside a network namespace this test creates: the only place a
//! test may send to addresses outside 127.0.0.0/8, and only after it
//! checked it is inside. Needs root and iproute2; skipped otherwise.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const MANIFESTS: &str = "apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.10, externalIPs: [192.0.2.7], ports: [{port: 80, targetPort: 18080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
addressType: IPv4
ports: [{port: 18080}]
endpoints:
- addresses: [127.0.0.1]
";
/// A Service whose ClusterIP was on the interface before nodeway started.
const PRESENT: &str = "apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.99, ports: [{port: 80}]}
";

/// A network namespace of this test, deleted when dropped.
struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        let name = format!("nodeway-iface-{}", std::process::id());
        match Command::new("ip").args(["netns", "add", &name]).status() {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("skipped: `ip netns add` failed ({other:?})");
                return None;
            }
        }
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The addresses on `lo`, as `a.b.c.d/len`.
    fn lo_addrs(&self) -> Vec<String> {
        self.ip(&["-o", "addr", "show", "dev", "lo"])
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet" || *w == "inet6")?;
                words.next().map(str::to_string)
            })
            .collect()
    }

    /// Runs a program inside the namespace.
    fn spawn(&self, args: &[&str]) -> Running {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip netns exec");
        Running(child)
    }

    /// Runs `f` on a thread that entered the namespace, once it checked
    /// that it is inside.
    fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("netns file");
                // SAFETY: setns on this thread only, with a namespace fd.
                let r = unsafe {
                    use std::os::fd::AsRawFd;
                    libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET)
                };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
                let want = std::fs::metadata(&path).unwrap().ino();
                assert_eq!(here, want, "this thread is inside the test's namespace");
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }
}

/// A process in the namespace, killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn hostname_via(addr: &str) -> Option<String> {
    let (status, body) = http_get(addr.parse().ok()?, "x", "/hostname").ok()?;
    (status == 200).then_some(body)
}

#[test]
fn service_addresses_are_kept_on_the_interface() {
    let Some(ns) = Netns::create() else { return };
    ns.ip(&["addr", "add", "10.96.0.99/32", "dev", "lo"]);
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), "a.yaml", MANIFESTS);
    write_manifests(dir.path(), "b.yaml", PRESENT);
    let bin = bin();
    let bin = bin.to_str().unwrap();
    let _echo = ns.spawn(&[bin, "echo", "--listen", "127.0.0.1:18080", "--name", "e"]);
    let config = dir.path().to_str().unwrap();
    let mut nodeway = ns.spawn(&[bin, "run", "--config", config, "--manage-interface", "lo"]);

    ns.within(|| {
        wait_for(
            Duration::from_secs(20),
            "readyz inside the namespace",
            || http_get(local(9090), "admin", "/readyz").is_ok_and(|(s, _)| s == 200),
        );
    });
    let addrs = ns.lo_addrs();
    for a in ["10.96.0.10/32", "192.0.2.7/32", "10.96.0.99/32"] {
        assert!(addrs.iter().any(|x| x == a), "{a} in {addrs:?}");
    }
    // The kernel delivers ClusterIP and externalIP traffic to the plane.
    for front in ["10.96.0.10:80", "192.0.2.7:80"] {
        let got = ns.within(|| hostname_via(front));
        assert_eq!(got.as_deref(), Some("e"), "{front}");
    }

    // An address someone else removed comes back with the next change
    // (or the periodic check).
    ns.ip(&["addr", "del", "10.96.0.10/32", "dev", "lo"]);
    write_manifests(
        dir.path(),
        "b.yaml",
        &PRESENT.replace("{name: b}", "{name: b, labels: {x: y}}"),
    );
    wait_for(Duration::from_secs(10), "10.96.0.10 put back", || {
        ns.lo_addrs().iter().any(|x| x == "10.96.0.10/32")
    });

    // Service a goes: its addresses go with it; b's stays.
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    wait_for(Duration::from_secs(10), "10.96.0.10 removed", || {
        !ns.lo_addrs().iter().any(|x| x == "10.96.0.10/32")
    });
    assert!(!ns.lo_addrs().iter().any(|x| x == "192.0.2.7/32"));

    // Back, then shutdown: what nodeway added goes, what was there stays.
    write_manifests(dir.path(), "a.yaml", MANIFESTS);
    wait_for(Duration::from_secs(10), "10.96.0.10 back", || {
        ns.lo_addrs().iter().any(|x| x == "10.96.0.10/32")
    });
    // SAFETY: signals our own child.
    unsafe { libc::kill(nodeway.0.id() as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(40), "nodeway to exit", || {
        nodeway.0.try_wait().unwrap().is_some()
    });
    let addrs = ns.lo_addrs();
    assert!(addrs.iter().any(|x| x == "10.96.0.99/32"), "{addrs:?}");
    assert!(!addrs.iter().any(|x| x == "10.96.0.10/32"), "{addrs:?}");
    assert!(!addrs.iter().any(|x| x == "192.0.2.7/32"), "{addrs:?}");
}
