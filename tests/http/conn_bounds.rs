//! Connection handling under attack, beside the per-connection memory
//! bounds: a connection's protocol is told from its first bytes (peeked) or
//! ALPN, and hyper's read buffer starts at 8 KiB and grows only for a large
//! head. Heads at the limit and one byte over, requests dripped a byte at a
//! time or split inside the HTTP/2 preface, HTTP/2 with prior knowledge and 64
//! parallel keep-alive connections must all get the right answer; a connection
//! busy with short requests is never closed as idle.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use berth::net::server::MAX_HEAD_BYTES;

use crate::edge::{
    bob_token_through, frame, frames, healthz_headers, read_until_closed, status_of, with_bob,
    H2_PREFACE, SVC,
};

fn basic() -> String {
    format!("Basic {}", data_encoding::BASE64.encode(b"bob:builder"))
}

/// A token request's head (no final empty line) whose size, counted as
/// [`berth::net::server::head_within_limit`] counts it, is exactly `size`
/// (padded with an `X-Pad` field); `close` ends the connection after it.
fn token_head(size: usize, close: bool) -> String {
    let mut head = format!(
        "GET /token?service={SVC}&scope=repository:bob/app:pull HTTP/1.1\r\nHost: t\r\n\
         Authorization: {}\r\nConnection: {}\r\n",
        basic(),
        if close { "close" } else { "keep-alive" }
    );
    let pad = "X-Pad: \r\n".len();
    assert!(size >= head.len() + pad, "{size} is too small a head");
    head.push_str(&format!(
        "X-Pad: {}\r\n",
        "a".repeat(size - head.len() - pad)
    ));
    assert_eq!(head.len(), size);
    head
}

/// Statuses of the HTTP/1.1 responses in `bytes`, and how many carry a token.
fn statuses(bytes: &[u8]) -> (Vec<u16>, usize) {
    let text = String::from_utf8_lossy(bytes);
    let codes = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| status_of(&bytes[i..]))
        .collect();
    (codes, text.matches("\"token\":\"").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_at_the_limit_and_one_byte_over() {
    let s = with_bob("").await;
    // At the limit, then an ordinary request on the same connection: the read
    // buffer grew for the first and still serves the second.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let mut both = token_head(MAX_HEAD_BYTES, false).into_bytes();
    both.extend_from_slice(b"\r\n");
    both.extend_from_slice(token_head(400, true).as_bytes());
    both.extend_from_slice(b"\r\n");
    c.write_all(&both).await.unwrap();
    let (got, ended) = read_until_closed(&mut c, Duration::from_secs(20)).await;
    assert!(ended.is_some(), "the second request closes the connection");
    assert_eq!(
        statuses(&got),
        (vec![200, 200], 2),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // One byte over: 431, empty body, connection closed; sent in pieces too.
    for pieces in [1, 7] {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        let mut over = token_head(MAX_HEAD_BYTES + 1, false).into_bytes();
        over.extend_from_slice(b"\r\n");
        let step = over.len().div_ceil(pieces);
        for chunk in over.chunks(step) {
            let _ = c.write_all(chunk).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (got, ended) = read_until_closed(&mut c, Duration::from_secs(20)).await;
        assert!(ended.is_some(), "closed after the 431");
        assert_eq!(
            statuses(&got),
            (vec![431], 0),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_bytes_split_anywhere_still_pick_the_right_protocol() {
    let s = with_bob("").await;
    let mut request = token_head(300, true).into_bytes();
    request.extend_from_slice(b"\r\n");
    // A byte at a time; "P" alone (a POST, or the first byte of the HTTP/2
    // preface); "PRI" alone (still the preface's start, but HTTP/1).
    let form = format!(
        "grant_type=password&username=bob&password=builder&client_id=test\
         &service={SVC}&scope=repository:bob/app:pull"
    );
    let post = format!(
        "POST /token HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .into_bytes();
    let splits: [(&str, &[u8], usize); 3] = [
        ("a byte at a time", &request, 1),
        ("P, then the rest", &post, 1),
        (
            "PRI, then the rest",
            b"PRI /token HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            3,
        ),
    ];
    for (what, bytes, first) in splits {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        if what == "a byte at a time" {
            for b in bytes.iter() {
                c.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        } else {
            c.write_all(&bytes[..first]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_all(&bytes[first..]).await.unwrap();
        }
        let (got, ended) = read_until_closed(&mut c, Duration::from_secs(20)).await;
        assert!(ended.is_some(), "{what}: closed");
        let text = String::from_utf8_lossy(&got);
        match what {
            // An unknown method is answered, not hung up on.
            "PRI, then the rest" => {
                let status = status_of(&got);
                assert!(
                    status.is_some_and(|c| (400..500).contains(&c)),
                    "{what}: {text}"
                );
            }
            _ => assert_eq!(statuses(&got), (vec![200], 1), "{what}: {text}"),
        }
    }

    // The HTTP/2 preface split in two, then a request on stream 1.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(&H2_PREFACE[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(&H2_PREFACE[10..]).await.unwrap();
    c.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    // HEADERS, END_STREAM | END_HEADERS.
    c.write_all(&frame(1, 0x5, 1, &healthz_headers()))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = c.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            got.extend_from_slice(&buf[..n]);
            // :status 200 is HPACK static entry 8 (0x88).
            if frames(&got)
                .iter()
                .any(|f| f.kind == 1 && f.payload.first() == Some(&0x88))
            {
                return true;
            }
        }
    })
    .await;
    assert_eq!(answered.ok(), Some(true), "{:?}", frames(&got));

    // HTTP/2 with prior knowledge, through a client library.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let version = bob_token_through(&h2, &s, "bob over HTTP/2").await;
    assert_eq!(version, reqwest::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_parallel_keep_alive_connections() {
    let s = with_bob("").await;
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let base = s.base.clone();
        tasks.push(tokio::spawn(async move {
            // A client of its own: its own connection, kept alive.
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut tokens = 0;
            for n in 0..5 {
                let r = c
                    .get(format!(
                        "{base}/token?service={SVC}&scope=repository:bob/app:pull\
                         &scope=repository:bob/c{i}-{n}:pull"
                    ))
                    .basic_auth("bob", Some("builder"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let j: serde_json::Value = r.json().await.unwrap();
                tokens += usize::from(j["token"].is_string());
            }
            tokens
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 64 * 5);
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from `c`;
/// its status, or `None` when the connection ended first.
async fn one_response(c: &mut TcpStream, pending: &mut Vec<u8>) -> Option<u16> {
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(pending).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let status = status_of(pending);
                pending.drain(..end + 4 + len);
                return status;
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_not_taken_for_idle() {
    // Requests back to back on one connection for three idle timeouts: each
    // starts and ends within one turn of the connection's task, and none may
    // find the connection closed under it.
    let s = with_bob("idle_timeout = '1s'").await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let started = std::time::Instant::now();
    let mut pending = Vec::new();
    let mut answered = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write after {answered} answers: {e}"));
        let status = one_response(&mut c, &mut pending).await;
        assert_eq!(
            status,
            Some(200),
            "request {} after {:?}",
            answered + 1,
            started.elapsed()
        );
        answered += 1;
    }
    // Once quiet, it is closed within about the idle timeout.
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(10)).await;
    let closed = closed.expect("closed once idle");
    assert!(closed < Duration::from_secs(4), "{closed:?}");
    eprintln!("{answered} requests in 3 s on one connection; closed {closed:?} after the last");
}
