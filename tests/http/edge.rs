//! The HTTP edge under attack, part one: stalled and dripping bodies, silent,
//! idle and flooding connections, the connection caps; and the helpers both
//! parts use (`edge_input` has oversized input, HTTP/2 floods, forged
//! `X-Forwarded-For` and random bytes). Each attack must get a bounded
//! refusal and leave other clients' tokens alone.
//!
//! "Other clients" connect from other loopback addresses (127.0.0.2, …), so
//! that the per-address caps and counters of the attacker (127.0.0.1) are not
//! theirs.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Opts, TestServer};

pub(crate) const SVC: &str = "registry.test";

pub(crate) fn opts(extra: &str) -> Opts {
    Opts {
        extra: extra.to_owned(),
        ..Opts::default()
    }
}

/// A TCP connection to `to` from the loopback address `from`.
pub(crate) async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    socket.connect(to).await
}

/// A client whose connections come from `from`.
pub(crate) fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Another client gets a token (user `bob`), and how long it took.
pub(crate) async fn bob_gets_a_token(s: &TestServer, from: [u8; 4]) -> Duration {
    let started = Instant::now();
    bob_token_through(&client_from(from), s, &format!("bob from {from:?}")).await;
    started.elapsed()
}

/// `bob` asks for a token through `client` and gets one; the response's
/// HTTP version.
pub(crate) async fn bob_token_through(
    client: &reqwest::Client,
    s: &TestServer,
    what: &str,
) -> reqwest::Version {
    let r = client
        .get(format!(
            "{}/token?service={SVC}&scope=repository:bob/app:pull",
            s.base
        ))
        .basic_auth("bob", Some("builder"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.status(), 200, "{what}");
    let version = r.version();
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(j["token"].is_string(), "{what}: {j}");
    version
}

/// Reads until the server closes (or `limit` passes); returns what was read
/// and when the connection ended (`None`: still open at `limit`).
pub(crate) async fn read_until_closed(
    s: &mut TcpStream,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(started.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, None),
        }
    }
}

pub(crate) fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response.get(..12)?);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A value of the metrics text, for the series starting with `series`.
pub(crate) fn metric(s: &TestServer, series: &str) -> f64 {
    let (text, _) = berth::http::metrics::render(&s.state, false).unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) async fn with_bob(extra: &str) -> TestServer {
    let s = TestServer::start(opts(extra)).await;
    s.add_user("bob", "builder", &[]).await;
    s
}

// ---------------------------------------------------------------------------
// Timeouts

const STALLED: &[u8] = b"POST /token HTTP/1.1\r\nHost: t\r\n\
    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_dropped_within_the_body_timeout() {
    let s = with_bob("body_read_timeout = '2s'\nrequest_timeout = '20s'").await;
    // 50 at once: each declares 100 bytes and sends 5.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(STALLED).await.unwrap();
            read_until_closed(&mut c, Duration::from_secs(15)).await
        }));
    }
    // Meanwhile another client is served.
    bob_gets_a_token(&s, [127, 0, 0, 2]).await;
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (response, closed) = t.await.unwrap();
        let closed = closed.expect("a stalled body must be dropped, not held");
        assert_eq!(
            status_of(&response),
            Some(408),
            "{}",
            String::from_utf8_lossy(&response)
        );
        assert!(String::from_utf8_lossy(&response).contains("not received in time"));
        slowest = slowest.max(closed);
    }
    eprintln!("stalled body (body_read_timeout 2s): slowest of 50 dropped after {slowest:?}");
    assert!(slowest < Duration::from_secs(6), "{slowest:?}");
    assert!(
        metric(
            &s,
            "berth_http_requests_total{endpoint=\"token\",outcome=\"invalid_request\"}"
        ) >= 50.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_body_is_cut_by_the_request_timeout() {
    let s = with_bob("body_read_timeout = '2s'\nrequest_timeout = '3s'").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(STALLED).await.unwrap();
    // One byte every 500 ms: never a pause as long as the body timeout.
    let started = Instant::now();
    let mut response = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if c.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), c.read(&mut buf)).await {
            response.extend_from_slice(&buf[..n]);
            if n == 0 || !response.is_empty() {
                break;
            }
        }
    }
    let (rest, _) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    response.extend_from_slice(&rest);
    let took = started.elapsed();
    assert_eq!(
        status_of(&response),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    bob_gets_a_token(&s, [127, 0, 0, 2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() {
    let s = with_bob("header_read_timeout = '1s'\nidle_timeout = '2s'").await;
    // Connected, nothing sent.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    // Half a request head, then nothing.
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    // HTTP/1.1 kept alive after one answer.
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // HTTP/2 with no stream.
    let mut h2 = TcpStream::connect(s.addr).await.unwrap();
    h2.write_all(H2_PREFACE).await.unwrap();
    h2.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let (silent, half, kept, h2) = tokio::join!(
        read_until_closed(&mut silent, Duration::from_secs(10)),
        read_until_closed(&mut half, Duration::from_secs(10)),
        read_until_closed(&mut kept, Duration::from_secs(10)),
        read_until_closed(&mut h2, Duration::from_secs(10)),
    );
    for (what, (_, closed), bound) in [
        ("silent", &silent, 3),
        ("half head", &half, 3),
        ("kept alive", &kept, 3),
        ("http/2 idle", &h2, 4),
    ] {
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 10 s"));
        eprintln!("{what}: closed after {closed:?}");
        assert!(closed < Duration::from_secs(bound), "{what}: {closed:?}");
    }
    assert_eq!(status_of(&kept.0), Some(200));
    // The idle HTTP/2 connection was told to go away (GOAWAY, NO_ERROR).
    let frames = frames(&h2.0);
    assert!(
        frames
            .iter()
            .any(|f| f.kind == 7 && f.goaway_code() == Some(0)),
        "{frames:?}"
    );
    bob_gets_a_token(&s, [127, 0, 0, 2]).await;
}

// ---------------------------------------------------------------------------
// Connection caps

/// Opens `n` connections from `from` that send nothing; returns them.
async fn open_idle(to: SocketAddr, from: [u8; 4], n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(tokio::spawn(connect_from(from, to)));
        if batch.len() == 100 || i + 1 == n {
            for c in batch.drain(..) {
                if let Ok(Ok(c)) = c.await {
                    out.push(c);
                }
            }
        }
    }
    out
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_from_one_client() {
    // The flood's client sockets live in this process too: up to the hard
    // limit, raise the soft one.
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut nofile = getrlimit(Resource::Nofile);
    if nofile.current.is_some_and(|c| c < 12_000) {
        nofile.current = nofile.maximum.map(|m| m.min(12_000));
        let _ = setrlimit(Resource::Nofile, nofile);
    }
    let soft = berth::net::limits::open_files_limit().unwrap_or(u64::MAX);
    assert!(
        soft >= 12_000,
        "this test holds 5,000 client sockets: raise the open-files limit (ulimit -n 12000), now {soft}"
    );
    let s = with_bob("max_connections_per_address = 64\nheader_read_timeout = '20s'").await;
    let before = open_files();
    let flood = open_idle(s.addr, [127, 0, 0, 1], 5000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = metric(&s, "berth_connections_open{listener=\"http\"}");
    let refused = metric(
        &s,
        "berth_connections_refused_total{listener=\"http\",reason=\"per_address\"}",
    );
    let during = open_files();
    let took = bob_gets_a_token(&s, [127, 0, 0, 2]).await;
    eprintln!(
        "5,000 idle connections from one address: {} connected, server holds {open}, refused \
         {refused}; process descriptors {before} → {during} \
         (client sockets included); another client's token took {took:?}",
        flood.len()
    );
    assert_eq!(open, 64.0, "the per-address cap holds");
    assert!(refused >= (flood.len() - 64) as f64, "{refused}");
    assert_eq!(
        metric(
            &s,
            "berth_connections_limit{listener=\"http\",scope=\"per_address\"}"
        ),
        64.0
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A new connection from the flooding address is closed at once.
    let mut again = connect_from([127, 0, 0, 1], s.addr).await.unwrap();
    let _ = again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let (response, ended) = read_until_closed(&mut again, Duration::from_secs(5)).await;
    assert!(ended.is_some() && response.is_empty(), "{response:?}");
    drop(flood);
    // Slots are freed when the flood goes away.
    let mut open = f64::MAX;
    for _ in 0..50 {
        open = metric(&s, "berth_connections_open{listener=\"http\"}");
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, 0.0);
    reqwest::get(format!("{}/healthz", s.base))
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_cap_holds_against_many_addresses_in_parallel() {
    let s = with_bob("max_connections = 40\nmax_connections_per_address = 10").await;
    let mut tasks = Vec::new();
    for host in 10..16u8 {
        tasks.push(tokio::spawn(open_idle(s.addr, [127, 0, 0, host], 20)));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(&s, "berth_connections_open{listener=\"http\"}"),
        40.0
    );
    let total = metric(
        &s,
        "berth_connections_refused_total{listener=\"http\",reason=\"total\"}",
    );
    let per = metric(
        &s,
        "berth_connections_refused_total{listener=\"http\",reason=\"per_address\"}",
    );
    assert_eq!(
        total + per,
        (6 * 20 - 40) as f64,
        "total {total}, per address {per}"
    );
    assert!(total >= 1.0);
    drop(held);
    // Freed slots serve again.
    let mut served = false;
    for _ in 0..50 {
        if let Ok(r) = client_from([127, 0, 0, 2])
            .get(format!("{}/healthz", s.base))
            .send()
            .await
        {
            served = r.status() == 200;
        }
        if served {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served);
    bob_gets_a_token(&s, [127, 0, 0, 2]).await;
}

// ---------------------------------------------------------------------------
// HTTP/2 frames, written and read by hand (what a flood sends)

pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /healthz` as an HPACK block of static-table references and literals.
pub(crate) fn healthz_headers() -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.extend_from_slice(&[0x04, 8]);
    b.extend_from_slice(b"/healthz"); // :path, literal
    b.extend_from_slice(&[0x01, 1, b't']); // :authority t
    b
}

#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn goaway_code(&self) -> Option<u32> {
        if self.kind != 7 {
            return None;
        }
        Some(u32::from_be_bytes(self.payload.get(4..8)?.try_into().ok()?))
    }
}

pub(crate) fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        let Some(payload) = bytes.get(9..9 + len) else {
            break;
        };
        out.push(Frame {
            kind: bytes[3],
            payload: payload.to_vec(),
        });
        bytes = &bytes[9 + len..];
    }
    out
}
