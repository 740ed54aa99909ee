//! The audit record over HTTP: every decision carries the identity as policy
//! saw it (the snapshot `berth policy diff` replays).
//! Each test runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use std::time::{Duration, Instant};

use berth::store::{AuditQuery, AuditRecord};

use crate::machine::{add_robot, query, server, TestDb};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_sqlite() {
    snapshot(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_postgres() {
    if let Some(db) = TestDb::postgres("snapshot_postgres").await {
        snapshot(db).await;
    }
}
