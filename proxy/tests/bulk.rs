//! Stream integrity through the proxy: half-close and large transfers.

mod common;

use common::*;
use proxy::Config;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Position-dependent checksum (FNV-1a over 64-bit words).
fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for w in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        h ^= u64::from_le_bytes(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A backend that reads until EOF, then answers "<bytes> <checksum>" and
/// closes: it only replies because the client's half-close got through.
async fn digest_backend(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let a = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let (mut n, mut h, mut carry) = (0u64, 0xcbf29ce484222325u64, 0usize);
                loop {
                    match s.read(&mut buf[carry..]).await {
                        Ok(0) => break,
                        Ok(m) => {
                            // Reads have any length; hash whole words only
                            // and carry the rest, as the sender hashed them.
                            n += m as u64;
                            let have = carry + m;
                            let whole = have - have % 8;
                            h = fnv(h, &buf[..whole]);
                            buf.copy_within(whole..have, 0);
                            carry = have - whole;
                        }
                        Err(_) => return,
                    }
                }
                h = fnv(h, &buf[..carry]);
                let _ = s.write_all(format!("{n} {h}").as_bytes()).await;
            });
        }
    });
    (a, t)
}

/// Sends `total` bytes of a deterministic pattern, half-closes, and checks
/// the digest the backend reports.
async fn transfer(to: SocketAddr, total: u64) {
    let mut s = TcpStream::connect(to).await.unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let (mut sent, mut h, mut x) = (0u64, 0xcbf29ce484222325u64, 0x9e3779b97f4a7c15u64);
    while sent < total {
        for w in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = (total - sent).min(chunk.len() as u64) as usize;
        h = fnv(h, &chunk[..n]);
        s.write_all(&chunk[..n]).await.unwrap();
        sent += n as u64;
    }
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, format!("{total} {h}"));
}

#[tokio::test]
async fn half_close_still_gets_the_reply() {
    let (b, _t) = digest_backend("127.0.49.1").await;
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
    let (b, _t) = digest_backend("127.0.49.2").await;
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

#[tokio::test]
async fn sixty_four_mib_arrive_intact() {
    let (b, _t) = digest_backend("127.0.49.3").await;
    let yaml = service(
        "bulk64",
        "127.0.49.102",
        8080,
        "TCP",
        b.port(),
        &[ready("127.0.49.3")],
        "",
        "",
    );
    let h = Harness::start(&yaml, Config::default()).await;
    let total = 64 << 20;
    tokio::time::timeout(
        DEADLINE * 6,
        transfer("127.0.49.102:8080".parse().unwrap(), total),
    )
    .await
    .unwrap();
    assert_eq!(
        h.metric("nodeway_l4_bytes_in_total{service=\"default/bulk64\"}"),
        Some(total as f64)
    );
}

/// 1 GiB: slow in debug builds (the test itself generates and hashes every
/// byte), so run it with `cargo test -p proxy --release -- --ignored`.
#[tokio::test]
#[ignore]
async fn one_gib_arrives_intact() {
    let (b, _t) = digest_backend("127.0.49.4").await;
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
    let _h = Harness::start(&yaml, Config::default()).await;
    transfer("127.0.49.103:8080".parse().unwrap(), 1 << 30).await;
}
