//! Request head limits: large ordinary headers pass, an oversized head or too
//! many fields get 431, on HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ops::OpsServer;

async fn raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1).and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_limits() {
    let s = OpsServer::start("", None, false).await;
    let req = |extra: String| {
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    // Ordinary large headers are fine.
    let ok = format!("X-Big: {}\r\n", "a".repeat(32 * 1024));
    assert_eq!(raw(s.addr, &req(ok)).await, Some(200));
    // A head over the limit gets 431, so do too many fields.
    let big = format!(
        "X-Big: {}\r\n",
        "a".repeat(berth::net::server::MAX_HEAD_BYTES)
    );
    assert_eq!(raw(s.addr, &req(big)).await, Some(431));
    let many: String = (0..berth::net::server::MAX_HEADERS + 20)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    assert_eq!(raw(s.addr, &req(many)).await, Some(431));

    // HTTP/2 (cleartext, prior knowledge) has the same limit.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = h2
        .get(s.url("/healthz"))
        .header("x-big", "a".repeat(berth::net::server::MAX_HEAD_BYTES))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => eprintln!("oversized HTTP/2 header list refused: {e}"),
    }
    // The server is still fine.
    assert_eq!(raw(s.addr, &req(String::new())).await, Some(200));
    s.shutdown().await;
}
