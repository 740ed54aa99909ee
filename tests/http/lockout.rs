//! Password-guessing limits under attack, on SQLite and PostgreSQL: a burst of
//! 64 parallel guesses gets exactly `login_failure_limit` password checks;
//! failures from one address never lock the same account out from another
//! address, nor a robot or an access token out from anywhere; a success clears
//! that address's counter; the account-wide and address-wide thresholds hold;
//! `berth user unlock` lifts a lockout; replicas share the counts; and a full
//! hashing queue answers 503 with `Retry-After` instead of growing.

use std::net::IpAddr;

use serde_json::Value;

use crate::machine::{add_robot, add_token, cli_ok, on_both_databases, query, server, TestDb};
use crate::support::TestServer;

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is
/// loopback), so the server sees different client addresses.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse::<IpAddr>().unwrap()))
        .build()
        .unwrap()
}

async fn login_from(
    c: &reqwest::Client,
    s: &TestServer,
    user: &str,
    password: &str,
) -> (u16, Option<String>, Value) {
    let r = c
        .get(format!(
            "{}/token?{}",
            s.base,
            query(user, &["repository:x/y:pull"])
        ))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

#[track_caller]
fn throttled(got: (u16, Option<String>, Value), what: &str) {
    let (status, retry, body) = got;
    assert_eq!(status, 429, "{what}: expected 429, got {status}: {body}");
    let secs: u64 = retry
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: 429 without a numeric Retry-After: {retry:?}"));
    assert!((1..=300).contains(&secs), "{what}: Retry-After {secs}");
    assert_eq!(body["error"], "slow_down", "{what}: {body}");
}

/// `n` sign-ins at once, each with its own wrong password; statuses, sorted.
async fn burst(servers: &[&TestServer], from: &str, user: &str, n: usize) -> Vec<u16> {
    burst_with(servers, from, user, n, |i| format!("guess-{i}")).await
}

/// `n` sign-ins at once from `from`, the i-th with `password(i)`, spread over
/// `servers`; statuses, sorted.
async fn burst_with(
    servers: &[&TestServer],
    from: &str,
    user: &str,
    n: usize,
    password: fn(usize) -> String,
) -> Vec<u16> {
    let c = client_from(from);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (c, base, user) = (
            c.clone(),
            servers[i % servers.len()].base.clone(),
            user.to_owned(),
        );
        tasks.spawn(async move {
            c.get(format!(
                "{base}/token?{}",
                query(&user, &["repository:x/y:pull"])
            ))
            .basic_auth(&user, Some(password(i)))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = tasks.join_next().await {
        statuses.push(r.unwrap());
    }
    statuses.sort_unstable();
    statuses
}

/// Every key of the sign-in counters, read from the database itself.
async fn counter_keys(db: &TestDb) -> Vec<String> {
    use sqlx::Connection;
    let sql = "SELECT key FROM login_failures ORDER BY key";
    if db.url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query_scalar(sql)
            .fetch_all(&mut c)
            .await
            .expect("keys")
    } else {
        let url = format!("sqlite://{}", db.url);
        let mut c = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::query_scalar(sql)
            .fetch_all(&mut c)
            .await
            .expect("keys")
    }
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn parallel_burst_and_isolation(db: TestDb) {
    let s = server(&db, "").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let robot = add_robot(&s, "ci", &[], None).await;
    let pat = add_token(
        &s,
        "laptop",
        "repository:alice/**:pull",
        crate::support::now() + 3600,
    )
    .await;

    // 64 wrong passwords at once from one address: exactly 10 password checks
    // (401), the rest refused before any check (429).
    let statuses = burst(&[&s], "127.0.0.1", "alice", 64).await;
    assert_eq!(count(&statuses, 401), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 54, "{statuses:?}");
    // The counters name neither the account nor the address.
    let keys = counter_keys(&db).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| !k.contains("alice") && !k.contains("127.0.0")),
        "{keys:?}"
    );

    let (c1, c2) = (client_from("127.0.0.1"), client_from("127.0.0.2"));
    // That address stays locked for alice, even with her password …
    throttled(
        login_from(&c1, &s, "alice", "alice-pw").await,
        "alice's right password from the address that guessed",
    );
    // … but not from another address, and a case variant is the same account.
    throttled(
        login_from(&c1, &s, "ALICE", "alice-pw").await,
        "ALICE from the address that guessed",
    );
    assert_eq!(login_from(&c2, &s, "alice", "alice-pw").await.0, 200);
    // Robots and access tokens are never refused by password counters, from
    // the same address, right or wrong.
    assert_eq!(login_from(&c1, &s, "robot$ci", &robot).await.0, 200);
    for _ in 0..15 {
        let wrong = format!("{}x", &robot[..robot.len() - 1]);
        assert_eq!(login_from(&c1, &s, "robot$ci", &wrong).await.0, 401);
        assert_eq!(login_from(&c1, &s, "alice", "berth_pat_wrong").await.0, 401);
    }
    assert_eq!(login_from(&c1, &s, "robot$ci", &robot).await.0, 200);
    assert_eq!(login_from(&c1, &s, "alice", &pat).await.0, 200);

    // An admin lifts the lockout.
    let out = cli_ok(&db.url, &["user", "unlock", "Alice"]).await;
    assert!(out.stdout.contains("unlocked Alice"), "{out}");
    assert_eq!(login_from(&c1, &s, "alice", "alice-pw").await.0, 200);
}

async fn thresholds_and_success(db: TestDb) {
    let s = server(
        &db,
        "login_failure_limit = 3\nlogin_failure_account_limit = 6\nlogin_failure_address_limit = 8",
    )
    .await;
    for u in ["alice", "bob", "carol", "dave", "erin"] {
        s.add_user(u, &format!("{u}-pw"), &[]).await;
    }
    let c = |n: u8| client_from(&format!("127.0.0.{n}"));

    // A success clears that address's counter for the account.
    for _ in 0..2 {
        assert_eq!(login_from(&c(1), &s, "bob", "guess").await.0, 401);
    }
    assert_eq!(login_from(&c(1), &s, "bob", "bob-pw").await.0, 200);
    for i in 0..3 {
        let (st, _, body) = login_from(&c(1), &s, "bob", &format!("guess{i}")).await;
        assert_eq!(st, 401, "bob's counter restarted after his success: {body}");
    }
    throttled(
        login_from(&c(1), &s, "bob", "guess9").await,
        "bob, 4th guess",
    );

    // Account-wide: guesses spread over addresses (3 + 3 = 6) lock alice out
    // everywhere, which is what that threshold is for.
    for n in [2, 3] {
        for _ in 0..3 {
            assert_eq!(login_from(&c(n), &s, "alice", "guess").await.0, 401);
        }
    }
    throttled(
        login_from(&c(4), &s, "alice", "alice-pw").await,
        "alice after 6 guesses from two addresses",
    );

    // Address-wide: one address trying many accounts (3 + 3 + 2 = 8).
    for (user, n) in [("carol", 3), ("dave", 3), ("erin", 2)] {
        for _ in 0..n {
            assert_eq!(login_from(&c(5), &s, user, "guess").await.0, 401);
        }
    }
    throttled(
        login_from(&c(5), &s, "erin", "erin-pw").await,
        "an address after 8 guesses over three accounts",
    );
    assert_eq!(login_from(&c(6), &s, "erin", "erin-pw").await.0, 200);
}

on_both_databases!(
    parallel_burst_and_isolation =>
    parallel_guessing_burst_sqlite,
    parallel_guessing_burst_postgres
);

on_both_databases!(
    thresholds_and_success =>
    lockout_thresholds_sqlite,
    lockout_thresholds_postgres
);

/// Two replicas on one PostgreSQL database: a burst split between them still
/// gets 10 password checks in all, and the lockout is the same on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_across_replicas_gets_the_limit_in_all() {
    let Some(db) = TestDb::postgres("burst_across_replicas_gets_the_limit_in_all") else {
        return;
    };
    let a = server(&db, "").await;
    let b = server(&db, "").await;
    a.add_user("alice", "alice-pw", &[]).await;
    let statuses = burst(&[&a, &b], "127.0.0.7", "alice", 64).await;
    assert_eq!(count(&statuses, 401), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 54, "{statuses:?}");
    let c = client_from("127.0.0.7");
    throttled(login_from(&c, &a, "alice", "alice-pw").await, "on A");
    throttled(login_from(&c, &b, "alice", "alice-pw").await, "on B");
    assert_eq!(
        login_from(&client_from("127.0.0.8"), &b, "alice", "alice-pw")
            .await
            .0,
        200
    );
}

/// Four hashing slots (the harness' setting) and a 1 ms wait for one: a burst of distinct sign-ins is
/// answered 401 or 503 with `Retry-After`, never queued without bound, never a
/// 500; the refused ones are not counted as failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_hash_queue_answers_503() {
    let db = TestDb::sqlite();
    let s = server(
        &db,
        "hash_queue_timeout = \"1ms\"\nlogin_failure_limit = 1000",
    )
    .await;
    s.add_user("alice", "alice-pw", &[]).await;
    let c = client_from("127.0.0.9");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48 {
        let (c, base) = (c.clone(), s.base.clone());
        tasks.spawn(async move {
            let r = c
                .get(format!(
                    "{base}/token?{}",
                    query("alice", &["repository:x/y:pull"])
                ))
                .basic_auth("alice", Some(format!("guess-{i}")))
                .send()
                .await
                .unwrap();
            let retry = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry)
        });
    }
    let mut busy = 0;
    while let Some(r) = tasks.join_next().await {
        let (status, retry) = r.unwrap();
        assert!(status == 401 || status == 503, "status {status}");
        if status == 503 {
            assert!(retry, "503 without Retry-After");
            busy += 1;
        }
    }
    assert!(busy > 0, "48 sign-ins at once never found every slot busy");
    assert_eq!(login_from(&c, &s, "alice", "alice-pw").await.0, 200);
}

/// Thirty-two parallel sign-ins with the same right password and a cold cache
/// (one CI job's pulls) share one check, so a limit of 3 refuses none of them;
/// thirty-two identical wrong ones are one guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_parallel_sign_ins_share_one_check() {
    let db = TestDb::sqlite();
    let s = server(&db, "login_failure_limit = 3").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let wrong = burst_with(&[&s], "127.0.0.10", "alice", 32, |_| "guess".into()).await;
    assert_eq!(count(&wrong, 401), 32, "{wrong:?}");
    // The identical guesses were one failure: two distinct ones still get a
    // password check each, and only the next is refused (limit 3).
    let c = client_from("127.0.0.10");
    assert_eq!(login_from(&c, &s, "alice", "guess-a").await.0, 401);
    assert_eq!(login_from(&c, &s, "alice", "guess-b").await.0, 401);
    throttled(
        login_from(&c, &s, "alice", "guess-c").await,
        "a 4th distinct guess",
    );
    let right = burst_with(&[&s], "127.0.0.11", "alice", 32, |_| "alice-pw".into()).await;
    assert_eq!(count(&right, 200), 32, "{right:?}");
}

/// Case variants and Unicode look-alikes of an account, with its right
/// password, are other names: refused with 401 (a name over 256 bytes with
/// 400), never served as the account, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_names_are_refused() {
    let db = TestDb::sqlite();
    let s = server(&db, "login_failure_limit = 1000").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let c = client_from("127.0.0.12");
    for name in [
        "Alice",
        "ALICE",
        "\u{0430}lice",  // Cyrillic a
        "alice\u{200b}", // zero-width space
        "\u{ff41}lice",  // fullwidth a
        "alice ",
        " alice",
    ] {
        let (status, _, body) = login_from(&c, &s, name, "alice-pw").await;
        assert_eq!(status, 401, "{name:?}: {body}");
    }
    let long = "\u{0430}".repeat(200);
    let (status, _, body) = login_from(&c, &s, &long, "alice-pw").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(login_from(&c, &s, "alice", "alice-pw").await.0, 200);
}
