//! PostgreSQL stopped and restarted while token requests keep coming: Basic
//! requests get a prompt 503 (never a 500 or a hang), anonymous ones keep
//! being served, berth recovers by itself, and every answer has its audit row.
//! One test: the load's samples are what every check reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::private_pg::PrivatePg;
use super::{audit_rows, missing_rows, policies_with, PUBLIC};
use crate::components::{http_get, rt, Berth, ALICE_PASSWORD, SERVICE};

#[derive(Debug, Clone)]
struct Sample {
    basic: bool,
    sent: Instant,
    latency: Duration,
    /// `None`: no answer (connection error or client timeout).
    status: Option<u16>,
    body: String,
}

/// Token requests in loops, Basic (alice) and anonymous side by side, until `stop`.
fn load(realm: String, stop: Arc<AtomicBool>, samples: Arc<Mutex<Vec<Sample>>>) {
    rt().block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let one = |basic: bool| {
            let (client, realm, stop, samples) =
                (client.clone(), realm.clone(), stop.clone(), samples.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut req = client.get(&realm).query(&[("service", SERVICE)]);
                    req = if basic {
                        req.query(&[("scope", "repository:alice/app:pull")])
                            .basic_auth("alice", Some(ALICE_PASSWORD))
                    } else {
                        req.query(&[("scope", "repository:public/app:pull")])
                    };
                    let sent = Instant::now();
                    let (status, body) = match req.send().await {
                        Ok(r) => (
                            Some(r.status().as_u16()),
                            r.text().await.unwrap_or_default(),
                        ),
                        Err(e) => (None, e.to_string()),
                    };
                    samples.lock().unwrap().push(Sample {
                        basic,
                        sent,
                        latency: sent.elapsed(),
                        status,
                        body,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // Three Basic clients: each waits out its own 503 while the database is down.
        tokio::join!(one(true), one(true), one(true), one(false));
    });
}

#[test]
fn postgres_stopped_and_restarted_under_load() {
    let test = "postgres-outage";
    let Some(pg) = PrivatePg::start(test) else {
        return;
    };
    let policies = policies_with(PUBLIC);
    let mut berth = Berth::start_with_env(
        policies.path(),
        &[
            ("BERTH_DATABASE", pg.url.clone()),
            ("BERTH_LOG_FORMAT", "json".to_string()),
            ("BERTH_AUDIT_FOLD_WINDOW", "1s".to_string()),
        ],
    );
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let loader = {
        let (realm, stop, samples) = (berth.realm(), stop.clone(), samples.clone());
        thread::spawn(move || load(realm, stop, samples))
    };
    let ready = |b: &Berth| http_get(&format!("{}/readyz", b.url), None).map(|(s, _)| s);

    thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    pg.down();
    let down_at = Instant::now();
    eprintln!("PostgreSQL stopped (took {:?})", stopping.elapsed());
    thread::sleep(Duration::from_millis(1500));
    let ready_down = ready(&berth);
    thread::sleep(Duration::from_millis(1500));
    pg.up();
    let up_at = Instant::now();
    eprintln!("PostgreSQL restarted after {:?}", down_at.elapsed());
    // berth must recover by itself: a Basic request sent after the restart succeeds.
    let recovered = loop {
        let ok_after = samples
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.basic && s.sent > up_at && s.status == Some(200))
            .map(|s| s.sent.duration_since(up_at));
        if let Some(t) = ok_after {
            break Some(t);
        }
        if up_at.elapsed() > Duration::from_secs(20) {
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let samples = samples.lock().unwrap().clone();
    let ready_up = ready(&berth);
    let running = berth.running();

    let during = |s: &&Sample| s.sent > stopping && s.sent < up_at;
    let basic_down: Vec<&Sample> = samples.iter().filter(|s| s.basic).filter(during).collect();
    let anon_down: Vec<&Sample> = samples.iter().filter(|s| !s.basic).filter(during).collect();
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "{} requests ({} Basic, {} anonymous while PostgreSQL was down); slowest {:?}; \
         Basic 200 again {:?} after the restart; /readyz {:?} down, {:?} up",
        samples.len(),
        basic_down.len(),
        anon_down.len(),
        slowest,
        recovered,
        ready_down,
        ready_up
    );
    let diag = || berth.log_tail(30);
    let bad: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            !matches!(s.status, Some(200) | Some(503)) || (!s.basic && s.status != Some(200))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "only 200 and (for Basic) 503 are acceptable; got {:#?}\n{}",
        &bad[..bad.len().min(5)],
        diag()
    );
    assert!(
        basic_down.iter().any(|s| s.status == Some(503)),
        "no Basic request got 503 while PostgreSQL was down: {basic_down:#?}\n{}",
        diag()
    );
    for s in basic_down.iter().filter(|s| s.status == Some(503)) {
        let body: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
        assert_eq!(body["error"], "temporarily_unavailable", "{}", s.body);
        assert!(
            !s.body.contains("postgres"),
            "a 503 body names the cause: {}",
            s.body
        );
    }
    assert!(
        !anon_down.is_empty(),
        "no anonymous request was answered while PostgreSQL was down"
    );
    assert!(
        slowest < Duration::from_secs(6),
        "a request took {slowest:?} (a hang, not a prompt 503)"
    );
    assert_eq!(ready_down, Some(503), "/readyz while PostgreSQL was down");
    assert_eq!(ready_up, Some(200), "/readyz after the restart");
    assert!(
        recovered.is_some(),
        "Basic requests did not succeed within 20 s of the restart\n{}",
        diag()
    );
    assert!(running, "berth exited\n{}", diag());

    // No audit record lost: every decision logged has its row, and every
    // answered 200 has an `issued` decision.
    let missing = missing_rows(&berth, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "{} decisions have no audit row after recovery: {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        diag()
    );
    // Repeated grants fold into their first row; the counts are written as the
    // 1 s windows close, so wait for them (at most 10 s).
    let issued = |rows: &[Value], basic: bool, account: &str| {
        let answered = samples
            .iter()
            .filter(|s| s.basic == basic && s.status == Some(200))
            .count() as u64;
        let stored: u64 = rows
            .iter()
            .filter(|r| r["outcome"] == "issued" && r["account"] == account)
            .map(|r| r["repeats"].as_u64().unwrap_or(0))
            .sum();
        (stored, answered)
    };
    let counted = Instant::now();
    let rows = loop {
        let rows = audit_rows(&berth);
        let done = [(true, "alice"), (false, "")]
            .iter()
            .all(|(basic, account)| {
                let (stored, answered) = issued(&rows, *basic, account);
                stored == answered
            });
        if done || counted.elapsed() > Duration::from_secs(10) {
            break rows;
        }
        thread::sleep(Duration::from_millis(250));
    };
    for (basic, account) in [(true, "alice"), (false, "")] {
        let (stored, answered) = issued(&rows, basic, account);
        assert_eq!(
            stored, answered,
            "issued decisions in audit rows for {account:?} vs 200 answers"
        );
    }
    let unavailable = rows
        .iter()
        .filter(|r| r["outcome"] == "temporarily_unavailable")
        .count();
    assert_eq!(
        unavailable,
        samples.iter().filter(|s| s.status == Some(503)).count(),
        "503 answers vs their audit rows"
    );
}
