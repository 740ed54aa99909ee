//! The authentication generation, moved by another process or connection and
//! honoured by a running server:
//!
//! - SQLite: by the very next request, while warm requests between changes
//!   query nothing (the WAL-index header shows nothing was committed);
//! - PostgreSQL: through the listener (`LISTEN`/`NOTIFY`); a lost listener
//!   falls back to reading the database and comes back, and no request that
//!   starts after a revocation was observed gets a token.
//!
//! PostgreSQL tests run against a fresh database (`BERTH_TEST_POSTGRES_URL`).
//! Outcomes are awaited with bounded polls, never by asserting a timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::machine::{server, TestDb};
use crate::support::TestServer;

const SVC: &str = "registry.test";

/// A warm Basic request for `user`'s own namespace.
fn own(user: &str) -> String {
    format!("service={SVC}&account={user}&scope=repository%3A{user}%2Fapp%3Apull")
}

/// The value of a metric line `berth_NAME VALUE` on `/metrics`, if present.
async fn metric(s: &TestServer, name: &str) -> Option<f64> {
    let r = s.get_path("/metrics").await;
    let body = String::from_utf8_lossy(&r.body);
    let wanted = format!("berth_{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(wanted.as_str()))
        .map(|v| v.trim().parse().expect("metric value"))
}

/// Whether the listener vouches for the generation now.
async fn listening(s: &TestServer) -> bool {
    metric(s, "generation_listener_up").await == Some(1.0)
}

/// Polls `what` every 50 ms for at most `limit`; true once it held.
async fn within<F, Fut>(limit: Duration, mut what: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    loop {
        if what().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(s: &TestServer, user: &str, pw: &str) -> u16 {
    s.get(&own(user), Some((user, pw))).await.status
}

/// A server on `db` with `users` (password `pw-USER`), each signed in twice so
/// the second sign-in is a credential-cache hit checked at the generation, and
/// the listener up.
async fn warm_server(db: &TestDb, users: &[&str]) -> TestServer {
    let s = server(db, "").await;
    for u in users {
        s.add_user(u, &format!("pw-{u}"), &[]).await;
    }
    assert!(
        within(Duration::from_secs(20), || listening(&s)).await,
        "the generation listener never came up"
    );
    for u in users {
        for _ in 0..2 {
            assert_eq!(status(&s, u, &format!("pw-{u}")).await, 200, "{u}");
        }
    }
    s
}

/// A connection of the test's own to the server's database.
async fn sql(db: &TestDb) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&db.url).await.expect("connect")
}

async fn disable_by_sql(conn: &mut sqlx::PgConnection, user: &str) {
    let done = sqlx::query("UPDATE users SET disabled = 1, epoch = epoch + 1 WHERE username = $1")
        .bind(user)
        .execute(&mut *conn)
        .await
        .expect("disable");
    assert_eq!(done.rows_affected(), 1);
}

/// `berth user disable USER` as its own process on `db`.
async fn disable_by_cli(db: &TestDb, user: &str) {
    crate::machine::cli_ok(&db.url, &["user", "disable", user]).await;
}

#[tokio::test]
async fn another_process_revokes_a_cached_password() {
    let Some(db) = TestDb::postgres("another_process_revokes_a_cached_password") else {
        return;
    };
    let s = warm_server(&db, &["alice", "bob", "carol"]).await;
    // While the listener is up, warm requests read nothing from the database.
    let reads = metric(&s, "generation_reads_total").await.expect("reads");
    for _ in 0..50 {
        assert_eq!(status(&s, "alice", "pw-alice").await, 200);
    }
    assert!(listening(&s).await);
    assert_eq!(
        metric(&s, "generation_reads_total").await,
        Some(reads),
        "warm requests read the generation although the listener was up"
    );

    disable_by_cli(&db, "alice").await;
    assert!(
        within(Duration::from_secs(5), || async {
            status(&s, "alice", "pw-alice").await == 401
        })
        .await,
        "a disable by the CLI was never honoured"
    );
    let mut conn = sql(&db).await;
    disable_by_sql(&mut conn, "bob").await;
    assert!(
        within(Duration::from_secs(5), || async {
            status(&s, "bob", "pw-bob").await == 401
        })
        .await,
        "a disable by another connection was never honoured"
    );
    // Honoured by the listener, which stayed up throughout, and warm requests
    // again read nothing (only requests in the moment between a notification
    // and the listener's new reading read for themselves).
    assert!(listening(&s).await);
    let reads = metric(&s, "generation_reads_total").await.expect("reads");
    for _ in 0..20 {
        assert_eq!(status(&s, "carol", "pw-carol").await, 200);
    }
    assert_eq!(metric(&s, "generation_reads_total").await, Some(reads));
    assert_eq!(status(&s, "alice", "pw-alice").await, 401);
}

#[tokio::test]
async fn a_lost_listener_falls_back_and_comes_back() {
    let Some(db) = TestDb::postgres("a_lost_listener_falls_back_and_comes_back") else {
        return;
    };
    let s = warm_server(&db, &["alice", "bob", "carol"]).await;
    // Open a few pool connections now: new ones are refused below.
    let parallel = (0..8).map(|_| status(&s, "carol", "pw-carol"));
    for code in futures::future::join_all(parallel).await {
        assert_eq!(code, 200);
    }
    let mut conn = sql(&db).await;
    let name = db.url.rsplit_once('/').expect("db name").1.to_owned();
    let admin = std::env::var("BERTH_TEST_POSTGRES_URL").expect("admin URL");
    let mut admin = sqlx::PgConnection::connect(&admin).await.expect("admin");
    // The listener cannot come back while connections are refused.
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'berth-generation' AND datname = current_database()",
    )
    .fetch_all(&mut conn)
    .await
    .expect("terminate");
    assert_eq!(killed, vec![true], "exactly one listener connection");
    assert!(
        within(Duration::from_secs(10), || async { !listening(&s).await }).await,
        "the server never noticed its listener was gone"
    );
    let reads = metric(&s, "generation_reads_total").await.expect("reads");

    // Down: a disable is honoured by the very next request, others still pass.
    disable_by_sql(&mut conn, "alice").await;
    assert_eq!(status(&s, "alice", "pw-alice").await, 401);
    assert_eq!(status(&s, "bob", "pw-bob").await, 200);
    assert!(metric(&s, "generation_reads_total").await.expect("reads") > reads);
    assert!(!listening(&s).await);

    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("allow connections");
    assert!(
        within(Duration::from_secs(60), || listening(&s)).await,
        "the listener never came back"
    );
    assert_eq!(status(&s, "bob", "pw-bob").await, 200);
    disable_by_sql(&mut conn, "bob").await;
    assert!(
        within(Duration::from_secs(5), || async {
            status(&s, "bob", "pw-bob").await == 401
        })
        .await,
        "a disable after the listener came back was never honoured"
    );
    assert_eq!(status(&s, "carol", "pw-carol").await, 200);
    assert_eq!(status(&s, "alice", "pw-alice").await, 401);
}

/// One request of a worker: when it started and ended, and its status.
struct Outcome {
    started: Instant,
    ended: Instant,
    status: u16,
}

/// Runs 64 workers asking for `user`'s warm token, one request after another,
/// while `change` runs (starting 300 ms in) and for 500 ms after it; their
/// outcomes, and what `change` returned.
async fn under_load<T>(
    s: &TestServer,
    user: &str,
    change: impl std::future::Future<Output = T>,
) -> (Vec<Outcome>, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/token?{}", s.base, own(user));
    let pw = format!("pw-{user}");
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, stop) = (s.client.clone(), url.clone(), stop.clone());
            let (user, pw) = (user.to_owned(), pw.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                // Bounded: the main task stops them long before this.
                for _ in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    let res = client
                        .get(&url)
                        .basic_auth(&user, Some(&pw))
                        .send()
                        .await
                        .expect("send");
                    let status = res.status().as_u16();
                    let _ = res.bytes().await;
                    seen.push(Outcome {
                        started,
                        ended: Instant::now(),
                        status,
                    });
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed = change.await;
    // Let requests that start after the change run for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (all, changed)
}

/// After a disable every request checks the password again: beyond the
/// sign-in limits some are answered 429, beyond the hashing slots 503 (try
/// again); none with a token, and nothing else. Tokens went out before
/// `cutoff`, and none to a request started after it.
fn none_served_after(all: &[Outcome], cutoff: Instant) {
    let mut counts = std::collections::BTreeMap::new();
    for o in all {
        *counts.entry(o.status).or_insert(0u32) += 1;
    }
    assert!(
        all.iter()
            .all(|o| matches!(o.status, 200 | 401 | 429 | 503)),
        "{counts:?}"
    );
    assert!(all.iter().any(|o| o.status == 200 && o.started < cutoff));
    let late: Vec<_> = all.iter().filter(|o| o.started > cutoff).collect();
    assert!(
        late.iter().all(|o| o.status != 200),
        "{} of {} requests started after the revocation got a token ({counts:?})",
        late.iter().filter(|o| o.status == 200).count(),
        late.len()
    );
    assert!(!late.is_empty(), "no request started after the revocation");
}

#[tokio::test]
async fn no_token_after_an_observed_revocation_under_parallel_load() {
    let Some(db) = TestDb::postgres("no_token_after_an_observed_revocation_under_parallel_load")
    else {
        return;
    };
    let s = warm_server(&db, &["alice"]).await;
    let (all, observed) = under_load(&s, "alice", async {
        disable_by_cli(&db, "alice").await;
        // Observed: the first refusal answered after the change was committed.
        within(Duration::from_secs(10), || async {
            status(&s, "alice", "pw-alice").await == 401
        })
        .await
    })
    .await;
    assert!(observed, "the disable was never honoured");
    let first_refusal = all
        .iter()
        .filter(|o| o.status == 401)
        .map(|o| o.ended)
        .min()
        .expect("the workers saw the disable");
    none_served_after(&all, first_refusal);
    assert!(listening(&s).await);
}

/// A server on SQLite with `users` (password `pw-USER`), each signed in twice
/// so the second sign-in is a credential-cache hit checked at the generation.
async fn warm_sqlite(db: &TestDb, users: &[&str]) -> TestServer {
    let s = server(db, "").await;
    for u in users {
        s.add_user(u, &format!("pw-{u}"), &[]).await;
        for _ in 0..2 {
            assert_eq!(status(&s, u, &format!("pw-{u}")).await, 200, "{u}");
        }
    }
    s
}

#[tokio::test]
async fn sqlite_another_process_revokes_at_the_next_request() {
    let db = TestDb::sqlite();
    let s = warm_sqlite(&db, &["alice", "bob", "carol"]).await;
    // Warm requests query nothing while nothing is committed (the first
    // grants' audit rows may still land: a reading each).
    let made = readings_over(&s, "alice", 50).await;
    assert!(made <= 5.0, "50 warm requests made {made} readings");

    refused_right_after_cli_disable(&s, &db, "alice").await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.url))
        .await
        .expect("connect");
    let done =
        sqlx::query("UPDATE users SET disabled = 1, epoch = epoch + 1 WHERE username = 'bob'")
            .execute(&mut conn)
            .await
            .expect("disable");
    assert_eq!(done.rows_affected(), 1);
    assert_eq!(
        status(&s, "bob", "pw-bob").await,
        401,
        "the request right after a disable by another connection still got a token"
    );
    assert_eq!(status(&s, "carol", "pw-carol").await, 200);
    crate::machine::cli_ok(&db.url, &["user", "enable", "alice"]).await;
    assert_eq!(status(&s, "alice", "pw-alice").await, 200);
}

#[tokio::test]
async fn sqlite_no_token_after_a_committed_revocation_under_parallel_load() {
    let db = TestDb::sqlite();
    let s = warm_sqlite(&db, &["alice"]).await;
    let (all, committed) = under_load(&s, "alice", async {
        disable_by_cli(&db, "alice").await;
        // The CLI has exited: the change is committed.
        Instant::now()
    })
    .await;
    none_served_after(&all, committed);
}

/// `generation_listener = false` (for a pooler that cannot pass `LISTEN`
/// through): no listener ever comes up, every warm request reads the
/// generation from the database, and a disable by another process is
/// honoured by the very next request.
#[tokio::test]
async fn with_the_listener_off_every_request_reads_the_database() {
    let Some(db) = TestDb::postgres("with_the_listener_off_every_request_reads_the_database")
    else {
        return;
    };
    let s = server(&db, "generation_listener = false").await;
    s.add_user("alice", "pw-alice", &[]).await;
    for _ in 0..2 {
        assert_eq!(status(&s, "alice", "pw-alice").await, 200);
    }
    assert!(
        !within(Duration::from_secs(2), || listening(&s)).await,
        "a listener came up although generation_listener = false"
    );
    assert_eq!(metric(&s, "generation_listener_up").await, Some(0.0));
    let made = readings_over(&s, "alice", 10).await;
    assert!(
        made >= 10.0,
        "ten sequential warm requests made {made} readings"
    );
    refused_right_after_cli_disable(&s, &db, "alice").await;
}

/// The generation readings `n` warm requests of `user` made.
async fn readings_over(s: &TestServer, user: &str, n: usize) -> f64 {
    let reads = metric(s, "generation_reads_total").await.expect("reads");
    for _ in 0..n {
        assert_eq!(status(s, user, &format!("pw-{user}")).await, 200);
    }
    metric(s, "generation_reads_total").await.expect("reads") - reads
}

/// `berth user disable USER` by the CLI, and the very next request refused.
async fn refused_right_after_cli_disable(s: &TestServer, db: &TestDb, user: &str) {
    disable_by_cli(db, user).await;
    assert_eq!(
        status(s, user, &format!("pw-{user}")).await,
        401,
        "the request right after a disable by the CLI still got a token"
    );
}
