//! The audit record over HTTP: every decision carries the identity as policy
//! saw it (the snapshot `berth policy diff` replays), and repeated grants fold
//! into their first row: counted exactly under parallel load, never a refusal
//! or an error, never across identities, services, grants or addresses, and
//! the counts survive shutdown.
//! Each test runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use std::time::{Duration, Instant};

use berth::store::{AuditQuery, AuditRecord};

use crate::machine::{add_robot, on_both_databases, query, server, TestDb};

/// Every row, newest first, once the writer has written at least `n` rows.
async fn rows_at_least(s: &crate::support::TestServer, n: usize) -> Vec<AuditRecord> {
    let start = Instant::now();
    loop {
        let rows = s
            .store()
            .query_audit(&AuditQuery {
                limit: 10_000,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "only {} of {n} audit rows: {rows:#?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn by_account<'a>(rows: &'a [AuditRecord], account: &str) -> Vec<&'a AuditRecord> {
    rows.iter().filter(|r| r.account == account).collect()
}

async fn snapshot(db: TestDb) {
    let s = server(&db, "").await;
    s.add_user("alice", "alice-pw", &["zeta", "Admins", "mid"])
        .await;
    let robot = add_robot(&s, "ci", &["builders"], None).await;
    s.get(
        &query("alice", &["repository:alice/app:pull"]),
        Some(("alice", "alice-pw")),
    )
    .await
    .ok();
    s.get(
        &query("robot$ci", &["repository:base/img:pull"]),
        Some(("robot$ci", &robot)),
    )
    .await
    .ok();
    let refused = s
        .get(
            &query("mallory", &["repository:alice/app:pull"]),
            Some(("mallory", "nope-nope-1")),
        )
        .await;
    assert_eq!(refused.status, 401);
    s.get(
        "service=registry.test&scope=repository:alice/app:pull",
        None,
    )
    .await
    .ok();
    let rows = rows_at_least(&s, 4).await;

    let alice = by_account(&rows, "alice");
    assert_eq!(alice.len(), 1, "{rows:#?}");
    assert_eq!(alice[0].subject.as_deref(), Some("alice"));
    assert_eq!(
        alice[0].groups.as_deref().unwrap(),
        ["Admins", "mid", "zeta"],
        "groups as policy saw them, sorted"
    );
    assert!(alice[0].snapshot());
    assert_eq!(alice[0].repeats, 1);

    let robot = by_account(&rows, "robot$ci");
    assert_eq!(robot.len(), 1, "{rows:#?}");
    assert_eq!(
        (robot[0].kind.as_str(), robot[0].subject.as_deref()),
        ("robot", Some("robot$ci"))
    );
    assert_eq!(robot[0].groups.as_deref().unwrap(), ["builders"]);

    let mallory = by_account(&rows, "mallory");
    assert_eq!(mallory.len(), 1, "{rows:#?}");
    assert!(
        !mallory[0].snapshot() && mallory[0].subject.is_none() && mallory[0].groups.is_none(),
        "a refused sign-in established no identity: {:?}",
        mallory[0]
    );

    let anonymous = by_account(&rows, "");
    assert_eq!(anonymous.len(), 1, "{rows:#?}");
    assert_eq!(anonymous[0].kind, "anonymous");
    assert_eq!(anonymous[0].subject.as_deref(), Some(""));
    assert_eq!(anonymous[0].groups.as_deref(), Some(&[][..]));

    // Replay reads the same rows back, oldest first, each replayable but the
    // refused sign-in.
    let replay: Vec<_> = futures::StreamExt::collect::<Vec<_>>(s.store().audit_replay(0)).await;
    let replay: Vec<_> = replay.into_iter().map(Result::unwrap).collect();
    assert_eq!(replay.len(), 4);
    assert_eq!(
        replay
            .iter()
            .map(|r| r.identity.is_some())
            .collect::<Vec<_>>(),
        [true, true, false, true]
    );
    assert_eq!(
        replay[0].identity.as_ref().unwrap().groups,
        ["Admins", "mid", "zeta"]
    );
}

on_both_databases!(snapshot => snapshot_sqlite, snapshot_postgres);

async fn pull(s: &crate::support::TestServer, user: &str, pw: &str, scope: &str, svc: &str) -> u16 {
    let q = query(user, &[scope]).replace("service=registry.test", &format!("service={svc}"));
    s.get(&q, Some((user, pw))).await.status
}

/// Sends `n` identical requests at once; returns their statuses.
async fn burst(
    s: &crate::support::TestServer,
    n: usize,
    user: &str,
    pw: &str,
    scope: &str,
) -> Vec<u16> {
    futures::future::join_all((0..n).map(|_| pull(s, user, pw, scope, "registry.test"))).await
}

fn rows_for<'a>(rows: &'a [AuditRecord], account: &str, requested: &str) -> Vec<&'a AuditRecord> {
    rows.iter()
        .filter(|r| r.account == account && r.requested == requested)
        .collect()
}

async fn folding(db: TestDb) {
    let s = server(&db, "audit_fold_window = \"1h\"").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let app = "repository:alice/app:pull";
    // Warm the credential cache, so the burst is all repeats of one grant.
    assert_eq!(
        pull(&s, "alice", "alice-pw", app, "registry.test").await,
        200
    );
    let statuses = burst(&s, 64, "alice", "alice-pw", app).await;
    assert!(statuses.iter().all(|c| *c == 200), "{statuses:?}");

    // The first grant is written at once, alone; the repeats wait for the window.
    let rows = rows_at_least(&s, 1).await;
    let first = rows_for(&rows, "alice", app);
    assert_eq!(first.len(), 1, "{rows:#?}");
    assert_eq!(
        first[0].repeats, 1,
        "counts are added when the window closes"
    );
    // /metrics counts the folded repeats and the open window.
    let (text, _) = berth::http::metrics::render(&s.state, false).unwrap();
    for want in ["berth_audit_folded_total 64", "berth_audit_fold_windows 1"] {
        assert!(
            text.lines().any(|l| l == want),
            "no {want:?} in /metrics:\n{text}"
        );
    }

    // Refusals are never folded: each gets its own row.
    for _ in 0..5 {
        assert_eq!(
            pull(
                &s,
                "alice",
                "alice-pw",
                "repository:bob/app:pull",
                "registry.test"
            )
            .await,
            200
        );
    }
    for _ in 0..3 {
        assert_eq!(
            pull(&s, "alice", "wrong-pw-1", app, "registry.test").await,
            401
        );
    }
    // A different service, grant, or group set is a new combination.
    assert_eq!(pull(&s, "alice", "alice-pw", app, "other.test").await, 200);
    assert_eq!(pull(&s, "alice", "alice-pw", app, "other.test").await, 200);
    assert_eq!(
        pull(
            &s,
            "alice",
            "alice-pw",
            "repository:alice/app:pull,push",
            "registry.test"
        )
        .await,
        200
    );
    s.store()
        .set_groups(
            &crate::support::uname("alice"),
            &["builders".into()],
            crate::support::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        pull(&s, "alice", "alice-pw", app, "registry.test").await,
        200
    );
    assert_eq!(
        pull(&s, "alice", "alice-pw", app, "registry.test").await,
        200
    );

    // Shutdown closes every window and writes its count.
    s.state.audit.shutdown().await;
    let rows = rows_at_least(&s, 1).await;
    let (open, folded) = s.state.audit.fold_stats();
    assert_eq!(open, 0, "shutdown closed every window");

    let same: Vec<_> = rows_for(&rows, "alice", app)
        .into_iter()
        .filter(|r| r.service == "registry.test" && r.outcome == "issued")
        .collect();
    assert_eq!(same.len(), 2, "one row per group set: {same:#?}");
    let before = same
        .iter()
        .find(|r| r.groups.as_deref() == Some(&[][..]))
        .unwrap();
    assert_eq!(
        before.repeats, 65,
        "the first grant and its 64 repeats: {before:?}"
    );
    assert!(before.last_at.is_some_and(|l| l >= before.at), "{before:?}");
    let after = same
        .iter()
        .find(|r| r.groups.as_deref() == Some(&["builders".to_owned()][..]))
        .unwrap();
    assert_eq!(after.repeats, 2);

    let refused = rows_for(&rows, "alice", "repository:bob/app:pull");
    assert_eq!(refused.len(), 5, "a refusal is never folded: {refused:#?}");
    assert!(refused
        .iter()
        .all(|r| r.repeats == 1 && !r.denied.is_empty()));
    let wrong: Vec<_> = rows_for(&rows, "alice", app)
        .into_iter()
        .filter(|r| r.outcome != "issued")
        .collect();
    assert_eq!(wrong.len(), 3, "an error is never folded: {wrong:#?}");
    assert!(wrong.iter().all(|r| r.repeats == 1));

    let other: Vec<_> = rows_for(&rows, "alice", app)
        .into_iter()
        .filter(|r| r.service == "other.test")
        .collect();
    assert_eq!((other.len(), other[0].repeats), (1, 2), "{other:#?}");
    let push = rows_for(&rows, "alice", "repository:alice/app:pull,push");
    assert_eq!((push.len(), push[0].repeats), (1, 1));

    // Every decision is accounted for, exactly once.
    let total: i64 = rows.iter().map(|r| r.repeats).sum();
    assert_eq!(total, 1 + 64 + 5 + 3 + 2 + 1 + 2);
    assert_eq!(folded, 64 + 1 + 1);

    // `--denied` still finds every refusal, each once.
    let denied = s
        .store()
        .query_audit(&AuditQuery {
            denied_only: true,
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 8);
}

on_both_databases!(folding => folding_sqlite, folding_postgres);

/// A window closes by itself: its count is written while berth runs, and the
/// next repeat opens a new row.
async fn window_closes(db: TestDb) {
    let s = server(&db, "audit_fold_window = \"300ms\"").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let app = "repository:alice/app:pull";
    for _ in 0..4 {
        assert_eq!(
            pull(&s, "alice", "alice-pw", app, "registry.test").await,
            200
        );
    }
    let start = Instant::now();
    let rows = loop {
        let rows = rows_at_least(&s, 1).await;
        if rows.iter().map(|r| r.repeats).sum::<i64>() >= 4 {
            break rows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "count not written: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.iter().map(|r| r.repeats).sum::<i64>(), 4, "{rows:#?}");
    // After the window: a new first row.
    assert_eq!(
        pull(&s, "alice", "alice-pw", app, "registry.test").await,
        200
    );
    let rows = rows_at_least(&s, rows.len() + 1).await;
    assert_eq!(rows[0].repeats, 1);
    s.state.audit.shutdown().await;
}

on_both_databases!(window_closes => window_closes_sqlite, window_closes_postgres);

/// `audit_fold_window = 0`: every decision gets its own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folding_off() {
    let db = TestDb::sqlite();
    let s = server(&db, "audit_fold_window = \"0\"").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let statuses = burst(&s, 16, "alice", "alice-pw", "repository:alice/app:pull").await;
    assert!(statuses.iter().all(|c| *c == 200));
    s.state.audit.shutdown().await;
    let rows = rows_at_least(&s, 16).await;
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().all(|r| r.repeats == 1 && r.last_at.is_none()));
}

/// `audit_fold_window`: 60 s by default, milliseconds allowed, at most 1 h.
#[test]
fn fold_window_setting_is_checked() {
    struct NoEnv;
    impl berth::config::Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }
    let parse = |line: &str| {
        berth::config::Config::from_toml(
            std::path::Path::new("fold.toml"),
            &format!("{line}\n[[service]]\nname = 'registry.test'\n"),
            &NoEnv,
        )
    };
    assert_eq!(
        parse("").unwrap().audit_fold_window,
        Duration::from_secs(60)
    );
    let ms = parse("audit_fold_window = \"250ms\"").unwrap();
    assert_eq!(ms.audit_fold_window, Duration::from_millis(250));
    let off = parse("audit_fold_window = \"0\"").unwrap();
    assert_eq!(off.audit_fold_window, Duration::ZERO);
    for bad in ["\"2h\"", "\"soon\"", "\"-1s\"", "60"] {
        let err = parse(&format!("audit_fold_window = {bad}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("audit_fold_window"), "{bad}: {err}");
    }
}

/// The same grant from another client address (here through a trusted proxy)
/// is never folded into the first address's row: a stolen credential used
/// elsewhere shows up with its own address.
async fn addresses(db: TestDb) {
    let s = server(&db, "trusted_proxies = [\"127.0.0.1/32\"]").await;
    s.add_user("alice", "alice-pw", &[]).await;
    let url = format!(
        "{}/token?{}",
        s.base,
        query("alice", &["repository:alice/app:pull"])
    );
    let from = |addr: &'static str| {
        s.client
            .get(&url)
            .basic_auth("alice", Some("alice-pw"))
            .header("x-forwarded-for", addr)
            .send()
    };
    let sent = futures::future::join_all(
        [
            "203.0.113.5",
            "198.51.100.7",
            "203.0.113.5",
            "198.51.100.7",
            "203.0.113.5",
        ]
        .into_iter()
        .map(from),
    )
    .await;
    assert!(sent.iter().all(|r| r.as_ref().unwrap().status() == 200));
    s.state.audit.shutdown().await;
    let rows = rows_at_least(&s, 2).await;
    let mut seen: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r.client.as_str(), r.repeats))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [("198.51.100.7", 2), ("203.0.113.5", 3)], "{rows:#?}");
}

on_both_databases!(addresses => addresses_sqlite, addresses_postgres);
