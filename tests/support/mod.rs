//! Shared helpers for end-to-end tests: run the real `nodeway` binary and echo
//! backends on loopback, wait on conditions with deadlines.
#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nodeway"))
}

/// A port free on `ip` for both TCP and UDP right now.
pub fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind((ip, 0)).expect("bind :0");
        let port = l.local_addr().unwrap().port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// A loopback address no other test in this run uses: 127.250.<pid>.<n>.
pub fn own_loopback() -> IpAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(
        127,
        250,
        (pid % 250) as u8,
        (n % 250) as u8 + 1,
    ))
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Polls `f` until it holds, failing the test after `deadline`.
pub fn wait_for(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Writes a manifest like an editor does: a temporary file renamed into place.
pub fn write_manifests(dir: &Path, file: &str, yaml: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// A minimal HTTP/1.1 GET over a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", host, path, &[]).map(|r| (r.status, r.body))
}

/// One answer read off a connection: status, header lines, body.
pub struct Reply {
    pub status: u16,
    /// (lower-case name, value) in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 request over a fresh connection (`Connection: close` is
/// added): `method target`, a Host and extra header lines.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

fn log_file(tag: &str) -> (PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!(
        "nodeway-test-{}-{tag}-{}.log",
        std::process::id(),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
    ));
    let f = std::fs::File::create(&path).unwrap();
    (path, f)
}

/// A running `nodeway run`, killed on drop (its log printed if the test failed).
pub struct Nodeway {
    pub child: Child,
    pub dns: SocketAddr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Nodeway {
    /// Starts `nodeway run --config DIR` with free loopback ports for every
    /// listener and a DNS upstream that is a dead loopback port (tests never
    /// reach the machine's resolver); `extra` may override any of them.
    pub fn start(config: &Path, extra: &[&str]) -> Nodeway {
        let config = config.display().to_string();
        Nodeway::start_from(&["--config", &config], extra)
    }

    /// [`Nodeway::start`] with another source than `--config` (e.g.
    /// `--kubeconfig PATH`).
    pub fn start_from(source: &[&str], extra: &[&str]) -> Nodeway {
        let mut n = Nodeway::spawn_from(source, extra);
        n.wait_ready();
        n
    }

    /// [`Nodeway::start`] with `NODEWAY_LOG` set to `log` (else `info`).
    pub fn start_logging(config: &Path, extra: &[&str], level: &str) -> Nodeway {
        let config = config.display().to_string();
        let mut n = Nodeway::spawn_logging(&["--config", &config], extra, level);
        n.wait_ready();
        n
    }

    /// [`Nodeway::start_from`] without waiting until it is ready.
    pub fn spawn_from(source: &[&str], extra: &[&str]) -> Nodeway {
        Nodeway::spawn_logging(source, extra, "info")
    }

    fn spawn_logging(source: &[&str], extra: &[&str], level: &str) -> Nodeway {
        // Listeners on an address of their own: an ephemeral port taken by
        // some other socket on 127.0.0.1 between `free_port` and nodeway's
        // bind cannot collide with them.
        let lo = own_loopback();
        // Distinct: a port freed by one probe may come back from the next.
        let mut taken = Vec::new();
        let mut at = |ip: IpAddr| loop {
            let p = free_port(ip);
            if !taken.contains(&p) {
                taken.push(p);
                break SocketAddr::new(ip, p);
            }
        };
        let (dns, http, https, admin, dead) = (at(lo), at(lo), at(lo), at(lo), at(lo));
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(source.iter().map(|s| s.to_string()));
        let mut flag = |name: &str, value: String| {
            if !extra.contains(&name) {
                args.push(name.into());
                args.push(value);
            }
        };
        flag("--dns-listen", dns.to_string());
        flag("--dns-upstream", dead.to_string());
        flag("--http-listen", http.to_string());
        flag("--https-listen", https.to_string());
        flag("--admin-listen", admin.to_string());
        flag("--threads", "2".into());
        flag("--grace-period", "5s".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        let (log, f) = log_file("run");
        let child = Command::new(bin())
            .args(&args)
            .env("NODEWAY_LOG", level)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn nodeway");
        Nodeway {
            child,
            dns,
            http,
            https,
            admin,
            log,
        }
    }

    pub fn wait_ready(&mut self) {
        let admin = self.admin;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nodeway exited early ({status}):\n{}", self.log_text());
            }
            if matches!(http_get(admin, "admin", "/readyz"), Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < end,
                "nodeway not ready in 30s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "admin", "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// A metric's value (first sample whose name and labels start with `prefix`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn generation(&self) -> u64 {
        self.metric("nodeway_config_generation").unwrap_or(0.0) as u64
    }

    /// Waits until the served generation is at least `at_least`.
    pub fn wait_generation(&self, at_least: u64) {
        wait_for(
            Duration::from_secs(10),
            &format!("generation {at_least}"),
            || self.generation() >= at_least,
        );
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < end, "nodeway did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nodeway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- nodeway log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A `nodeway echo` backend, killed on drop.
pub struct Echo {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Echo {
    pub fn start(addr: SocketAddr, name: &str) -> Echo {
        let child = Command::new(bin())
            .args(["echo", "--listen", &addr.to_string(), "--name", name])
            .env("NODEWAY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn echo");
        let mut e = Echo { child, addr };
        wait_for(
            Duration::from_secs(10),
            &format!("echo {name} on {addr}"),
            || {
                if let Ok(Some(s)) = e.child.try_wait() {
                    panic!("echo {name} exited: {s}");
                }
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            },
        );
        e
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The response code and A addresses of one query to `dns` (an unknown
/// code when no answer came).
pub fn a_record(dns: SocketAddr, name: &str) -> (hickory_proto::op::ResponseCode, Vec<String>) {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&m.to_vec().unwrap(), dns).unwrap();
    let mut buf = [0u8; 4096];
    let Ok((n, _)) = s.recv_from(&mut buf) else {
        // No answer at all: not a code any server sends.
        return (ResponseCode::Unknown(4095), Vec::new());
    };
    let r = Message::from_vec(&buf[..n]).unwrap();
    let ips = r
        .answers
        .iter()
        .filter_map(|rr| match &rr.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    (r.metadata.response_code, ips)
}
