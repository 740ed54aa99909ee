//! The HTTP edge under attack, part two: a 100 MB body, 1 MB of headers,
//! HTTP/2 stream and rapid-reset floods, `X-Forwarded-For` chains forged by an
//! untrusted peer, and random bytes on the socket. Each must get a bounded
//! refusal, never a 5xx or a panic, and leave other clients' tokens alone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::{
    bob_gets_a_token, client_from, frame, frames, healthz_headers, read_until_closed, status_of,
    with_bob, Frame, H2_PREFACE, SVC,
};

// ---------------------------------------------------------------------------
// Oversized input

/// Sends `head` then `body_len` bytes of body as fast as the server takes
/// them, reading at the same time; returns the answer, how much was sent and
/// when the connection ended.
async fn push(
    to: SocketAddr,
    head: Vec<u8>,
    body_len: usize,
) -> (Vec<u8>, usize, Option<Duration>) {
    let c = TcpStream::connect(to).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        let chunk = vec![b'a'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if wr.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            counter.fetch_add(n, Ordering::Relaxed);
            left -= n;
        }
    });
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_secs(1), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                ended = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    writer.abort();
    (out, sent.load(Ordering::Relaxed), ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_and_1_mb_of_headers_are_refused_early() {
    let s = with_bob("").await;
    let mb100 = 100 * 1024 * 1024;
    let with_length = format!(
        "POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {mb100}\r\n\r\n"
    );
    let chunked =
        "POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n6400000\r\n"
            .to_owned();
    let mut headers = b"GET /token?service=registry.test HTTP/1.1\r\nHost: t\r\n".to_vec();
    while headers.len() < 1024 * 1024 {
        headers.extend_from_slice(
            format!("X-Pad-{}: {}\r\n", headers.len(), "p".repeat(1000)).as_bytes(),
        );
    }
    headers.extend_from_slice(b"\r\n");
    let (a, b, c, bob) = tokio::join!(
        push(s.addr, with_length.into_bytes(), mb100),
        push(s.addr, chunked.into_bytes(), mb100),
        push(s.addr, headers, 0),
        bob_gets_a_token(&s, [127, 0, 0, 2]),
    );
    for (what, (response, sent, ended), want) in [
        ("100 MB with Content-Length", a, 413),
        ("100 MB chunked", b, 413),
        ("1 MB of headers", c, 431),
    ] {
        eprintln!(
            "{what}: {:?} after {sent} body bytes sent, closed after {ended:?}",
            status_of(&response)
        );
        assert_eq!(
            status_of(&response),
            Some(want),
            "{what}: {:?}",
            String::from_utf8_lossy(&response)
        );
        assert!(ended.is_some(), "{what}: connection left open");
        assert!(sent < mb100, "{what}: the whole body was taken");
    }
    assert!(bob < Duration::from_secs(5));
}

/// Opens an HTTP/2 connection and sends `streams` requests built by `each`
/// (given the stream id) as fast as possible, without reading; then reads
/// what came back until the server closes or 15 s pass.
async fn h2_flood(
    to: SocketAddr,
    streams: u32,
    each: impl Fn(u32) -> Vec<u8>,
) -> (Vec<Frame>, Option<Duration>) {
    let c = TcpStream::connect(to).await.unwrap();
    let (mut rd, mut wr) = c.into_split();
    let mut out = H2_PREFACE.to_vec();
    out.extend_from_slice(&frame(4, 0, 0, &[]));
    for i in 0..streams {
        out.extend_from_slice(&each(2 * i + 1));
    }
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&out).await;
        wr
    });
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(15) {
        match tokio::time::timeout(Duration::from_secs(1), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                ended = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    writer.abort();
    (frames(&got), ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_floods_are_cut_off() {
    let s = with_bob("").await;
    let block = healthz_headers();
    // 10,000 requests at once on one connection (128 streams are allowed).
    let opened = |id: u32| frame(1, 0x5, id, &block);
    // Rapid reset: each stream opened and cancelled at once.
    let reset = |id: u32| {
        let mut f = frame(1, 0x4, id, &block);
        f.extend_from_slice(&frame(3, 0, id, &8u32.to_be_bytes()));
        f
    };
    let ((many, many_end), (resets, resets_end), bob) = tokio::join!(
        h2_flood(s.addr, 10_000, opened),
        h2_flood(s.addr, 10_000, reset),
        bob_gets_a_token(&s, [127, 0, 0, 2]),
    );
    let answered = |f: &[Frame]| f.iter().filter(|f| f.kind == 1).count();
    let goaway = |f: &[Frame]| f.iter().find_map(Frame::goaway_code);
    eprintln!(
        "10,000 streams: {} answered, GOAWAY {:?}, closed after {many_end:?}; \
         10,000 rapid resets: {} answered, GOAWAY {:?}, closed after {resets_end:?}; bob {bob:?}",
        answered(&many),
        goaway(&many),
        answered(&resets),
        goaway(&resets)
    );
    // Either way the flood ends with the connection, not with 10,000 answers.
    assert!(
        many_end.is_some() && answered(&many) < 10_000,
        "stream flood not cut off"
    );
    assert!(resets_end.is_some(), "rapid-reset flood not cut off");
    assert_eq!(goaway(&resets), Some(0xb), "ENHANCE_YOUR_CALM expected");
    assert!(bob < Duration::from_secs(5));
    bob_gets_a_token(&s, [127, 0, 0, 2]).await;
}

// ---------------------------------------------------------------------------
// Forged X-Forwarded-For

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let s = with_bob("login_failure_limit = 5").await;
    s.add_user("alice", "wonderland", &[]).await;
    let c = client_from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    // Every guess claims to come from other addresses, with a long chain.
    for i in 0..12u32 {
        let chain: Vec<String> = (0..3000)
            .map(|j| format!("10.{}.{}.{}", i, j / 250, j % 250))
            .collect();
        let r = c
            .get(format!("{}/token?service={SVC}", s.base))
            .basic_auth("alice", Some("guess"))
            .header("x-forwarded-for", chain.join(", "))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&429),
        "the real address was counted: {statuses:?}"
    );
    // Another address: alice's own password, and bob, still work.
    let r = client_from([127, 0, 0, 2])
        .get(format!("{}/token?service={SVC}", s.base))
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    bob_gets_a_token(&s, [127, 0, 0, 3]).await;
}

// ---------------------------------------------------------------------------
// Property: random bytes on the socket

#[test]
fn random_bytes_on_the_socket_never_get_a_5xx_or_a_panic() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    // Panics anywhere but in test code (berth or a library, on any thread).
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| !l.file().starts_with("tests/"))
        {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(with_bob(
        "header_read_timeout = '2s'\nbody_read_timeout = '1s'",
    ));
    let prefix = prop_oneof![
        Just(Vec::new()),
        Just(b"GET /token?service=registry.test HTTP/1.1\r\n".to_vec()),
        Just(b"POST /token HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n".to_vec()),
        Just(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec()),
        Just([H2_PREFACE, &frame(4, 0, 0, &[])].concat()),
    ];
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2000),
        proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), 32u8..127],
            0..400
        ),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(prefix, bytes), |(prefix, bytes)| {
            let answer = rt.block_on(async {
                let mut c = TcpStream::connect(s.addr).await.unwrap();
                let _ = c.write_all(&prefix).await;
                let _ = c.write_all(&bytes).await;
                // End of input: the server must answer or close, not wait.
                let _ = c.shutdown().await;
                read_until_closed(&mut c, Duration::from_secs(5)).await
            });
            let (response, closed) = answer;
            prop_assert!(
                closed.is_some(),
                "connection not closed after the input ended"
            );
            for line in String::from_utf8_lossy(&response).lines() {
                if let Some(code) = line.strip_prefix("HTTP/1.1 ").and_then(|l| l.get(..3)) {
                    prop_assert!(!code.starts_with('5'), "{} for {:?}", line, bytes);
                }
            }
            // After an HTTP/2 preface the answers are frames; what matters there
            // is that the connection ends and nothing panics.
            Ok(())
        })
        .unwrap();
    rt.block_on(async {
        bob_gets_a_token(&s, [127, 0, 0, 2]).await;
    });
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "berth panicked");
    drop(s);
}
