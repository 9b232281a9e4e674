//! Stream integrity through the proxy: half-close and large transfers.

mod common;

use common::*;
use proxy::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Length of the repeating test pattern: deliberately not a power of two,
/// so a lost, duplicated or reordered span (the proxy moves pipe- and
/// buffer-sized chunks, all powers of two) shifts the stream off the pattern.
const PERIOD: usize = (1 << 20) + 8;

/// The pattern twice in a row, so any window of up to `PERIOD` bytes that
/// starts inside the first copy is one contiguous slice. Built once per
/// test; comparing against it is a memcmp, cheap even in a debug build.
fn pattern() -> Arc<Vec<u8>> {
    let mut p = vec![0u8; 2 * PERIOD];
    let mut x = 0x9e3779b97f4a7c15u64;
    for w in p[..PERIOD].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    p.copy_within(..PERIOD, PERIOD);
    Arc::new(p)
}

/// A backend that reads until EOF, comparing every byte with the pattern
/// at its stream offset, then answers "<bytes> ok" (or "<bytes> mismatch at
/// <offset>") and closes: it only replies because the client's half-close
/// got through.
async fn verifying_backend(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let a = l.local_addr().unwrap();
    let pat = pattern();
    let t = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let pat = pat.clone();
            tokio::spawn(async move {
                // Reads never exceed PERIOD, so each fits one pattern window.
                let mut buf = vec![0u8; 512 * 1024];
                let (mut n, mut bad) = (0u64, None);
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(m) => {
                            let at = (n % PERIOD as u64) as usize;
                            if bad.is_none() && buf[..m] != pat[at..at + m] {
                                bad = Some(n);
                            }
                            n += m as u64;
                        }
                        Err(_) => return,
                    }
                }
                let verdict = match bad {
                    None => "ok".to_string(),
                    Some(off) => format!("mismatch in the read at offset {off}"),
                };
                let _ = s.write_all(format!("{n} {verdict}").as_bytes()).await;
            });
        }
    });
    (a, t)
}

/// Sends `total` bytes of the repeating pattern, half-closes, and checks
/// the verdict the backend reports.
async fn transfer(to: SocketAddr, total: u64) {
    let pat = pattern();
    let mut s = TcpStream::connect(to).await.unwrap();
    let mut sent = 0u64;
    while sent < total {
        let at = (sent % PERIOD as u64) as usize;
        let n = (total - sent).min(PERIOD as u64) as usize;
        s.write_all(&pat[at..at + n]).await.unwrap();
        sent += n as u64;
    }
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, format!("{total} ok"));
}

#[tokio::test]
async fn half_close_still_gets_the_reply() {
    let (b, _t) = verifying_backend("127.0.49.1").await;
    let yaml = service(
        "hc",
        "127.0.49.100",
        8080,
        "TCP",
        b.port(),
        &[ready("127.0.49.1")],
        "",
        "",
    );
    let _h = Harness::start(&yaml, Config::default()).await;
    tokio::time::timeout(
        DEADLINE,
        transfer("127.0.49.100:8080".parse().unwrap(), 10_000),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn half_close_with_buffered_copy() {
    let (b, _t) = verifying_backend("127.0.49.2").await;
    let yaml = service(
        "hcb",
        "127.0.49.101",
        8080,
        "TCP",
        b.port(),
        &[ready("127.0.49.2")],
        "",
        "",
    );
    let _h = Harness::start(
        &yaml,
        Config {
            splice: false,
            ..Config::default()
        },
    )
    .await;
    let to = "127.0.49.101:8080".parse().unwrap();
    tokio::time::timeout(DEADLINE, transfer(to, 3 << 20))
        .await
        .unwrap();
}

/// 1 GiB through the splice path, every byte compared at its offset, and
/// the byte counter agrees.
#[tokio::test]
async fn one_gib_arrives_intact() {
    let (b, _t) = verifying_backend("127.0.49.4").await;
    let yaml = service(
        "bulk1g",
        "127.0.49.103",
        8080,
        "TCP",
        b.port(),
        &[ready("127.0.49.4")],
        "",
        "",
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let total = 1 << 30;
    tokio::time::timeout(
        DEADLINE * 6,
        transfer("127.0.49.103:8080".parse().unwrap(), total),
    )
    .await
    .unwrap();
    assert_eq!(
        h.metric("nodeway_l4_bytes_in_total{service=\"default/bulk1g\"}"),
        Some(total as f64)
    );
}
