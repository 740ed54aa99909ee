//! Bounded memory under a database that stops taking writes: the audit queue
//! holds `audit_queue` rows and the writer a bounded batch; past that a request
//! waits briefly, then fails with 503 (`audit_required = true`) or is served
//! with its row dropped, counted and logged. Rows of requests that were served
//! are all written once the database takes writes again.

use std::time::{Duration, Instant};

use berth::config::Database;
use berth::store::AuditQuery;

use crate::support::{Opts, TestServer};

/// Sends `n` anonymous token requests, 20 ms apart, while SQLite's write lock
/// is held by another connection (as a long transaction or a stuck backup would
/// hold it); returns the statuses and error descriptions.
async fn with_database_locked(s: &TestServer, n: usize) -> Vec<(u16, String)> {
    let Database::Sqlite(path) = &s.state.config.database else {
        panic!("an SQLite test server")
    };
    let lock = rusqlite::Connection::open(path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut answers = Vec::new();
    for _ in 0..n {
        let r = s
            .get("service=registry.test&scope=repository:a/b:pull", None)
            .await;
        let description = r.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        answers.push((r.status, description));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.execute_batch("ROLLBACK").unwrap();
    answers
}

/// Waits until the writer has emptied the queue; returns the rows written.
async fn drained(s: &TestServer) -> usize {
    let start = Instant::now();
    loop {
        let (queued, _) = s.state.audit.stats();
        let rows = s
            .store()
            .query_audit(&AuditQuery {
                account: None,
                repository: None,
                since: None,
                denied_only: false,
                limit: 100_000,
            })
            .await
            .map(|r| r.len())
            .unwrap_or(0);
        if queued == 0 && start.elapsed() > Duration::from_millis(500) {
            return rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "audit queue not drained: {queued} rows left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn server_opts(required: bool) -> Opts {
    Opts {
        extra: format!("audit_queue = 4\naudit_required = {required}"),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_audit_queue_refuses_when_audit_is_required() {
    let s = TestServer::start(server_opts(true)).await;
    let answers = with_database_locked(&s, 100).await;
    let served = answers.iter().filter(|(st, _)| *st == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(st, _)| *st == 503).collect();
    assert_eq!(served + refused.len(), 100, "only 200 or 503: {answers:?}");
    assert!(
        !refused.is_empty(),
        "a full audit queue refused nothing: {answers:?}"
    );
    assert!(
        refused.iter().all(|(_, d)| d.contains("audit")),
        "{refused:?}"
    );
    assert_eq!(s.state.audit.stats().1, 0, "required audit dropped rows");
    // Every request that was served has its row once the lock is gone.
    assert_eq!(drained(&s).await, served);
    // And the queue takes rows again.
    assert_eq!(s.get("service=registry.test", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_audit_queue_drops_counted_rows_by_default() {
    let s = TestServer::start(server_opts(false)).await;
    let answers = with_database_locked(&s, 100).await;
    assert!(answers.iter().all(|(st, _)| *st == 200), "{answers:?}");
    let dropped = s.state.audit.stats().1;
    assert!(dropped > 0, "100 requests never found the queue of 4 full");
    assert_eq!(drained(&s).await as u64, 100 - dropped);
    let metrics = String::from_utf8(s.get_path("/metrics").await.body).unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("berth_audit_dropped_total"))
        .unwrap_or_else(|| {
            panic!(
                "no berth_audit_dropped_total in /metrics ({} bytes)",
                metrics.len()
            )
        });
    assert_eq!(line, format!("berth_audit_dropped_total {dropped}"));
}
