use super::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

/// Steering needs root (CAP_BPF, CAP_NET_ADMIN). As root it must work:
/// the project's machines run a kernel with sk_lookup.
fn attach_or_skip() -> Option<Steering> {
    match Steering::attach() {
        Ok(s) => Some(s),
        // SAFETY: geteuid has no preconditions.
        Err(e) if unsafe { libc::geteuid() } != 0 => {
            eprintln!("skipped: steering needs root ({e})");
            None
        }
        Err(e) => panic!("steering failed as root: {e}"),
    }
}

#[test]
fn steers_many_destinations_to_one_listener_and_back() {
    let Some(s) = attach_or_skip() else { return };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    s.set_socket(0, l.as_fd()).unwrap();
    let dests: Vec<SocketAddr> = (1..=3)
        .map(|i| format!("127.0.61.{i}:4242").parse().unwrap())
        .collect();
    for d in &dests {
        s.steer(*d, 0).unwrap();
    }
    for d in &dests {
        let mut c = TcpStream::connect(d).unwrap();
        let (mut a, _) = l.accept().unwrap();
        assert_eq!(a.local_addr().unwrap(), *d, "the destination dialled");
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        a.read_exact(&mut b).unwrap();
    }
    // Unsteered: the kernel's lookup finds nothing there.
    s.unsteer(dests[0]).unwrap();
    let err = TcpStream::connect(dests[0]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // A destination never steered is not caught.
    let err = TcpStream::connect("127.0.61.9:4242").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    s.unsteer(dests[0]).unwrap();
}

#[test]
fn detaches_when_dropped() {
    let Some(s) = attach_or_skip() else { return };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    s.set_socket(0, l.as_fd()).unwrap();
    let d: SocketAddr = "127.0.61.20:4243".parse().unwrap();
    s.steer(d, 0).unwrap();
    drop(TcpStream::connect(d).unwrap());
    drop(s);
    let err = TcpStream::connect(d).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn ipv6_destinations() {
    let Some(s) = attach_or_skip() else { return };
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback");
        return;
    };
    s.set_socket(1, l.as_fd()).unwrap();
    let d: SocketAddr = "[::1]:4244".parse().unwrap();
    s.steer(d, 1).unwrap();
    let _c = TcpStream::connect(d).unwrap();
    let (a, _) = l.accept().unwrap();
    assert_eq!(a.local_addr().unwrap(), d);
}
