//! The audit log over HTTP: one row per decision with its request id, client,
//! kind, source, grant, refusal and rule; no secret (nor its hash) in a row;
//! and `berth audit` (the real binary) filtering by user, time, refusal and
//! repository. Each runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`,
//! PostgreSQL.

use std::time::{Duration, Instant};

use berth::authn::machine::{new_secret, ROBOT_SECRET_PREFIX};
use berth::store::{AuditQuery, AuditRecord};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::machine::{
    assert_no_leak, cli, leak_forms, ok, on_both_databases, query, refused, server, shown_once,
    TestDb, NO_THROTTLE, SVC,
};
use crate::support::{now, Resp, TestServer};

/// Polls the audit table until it holds `n` rows (the writer batches off the
/// request path), at most 2 s.
async fn audit_rows(s: &TestServer, n: usize) -> Vec<AuditRecord> {
    let start = Instant::now();
    loop {
        let rows = s
            .store()
            .query_audit(&AuditQuery {
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        if rows.len() >= n || start.elapsed() > Duration::from_secs(2) {
            assert_eq!(
                rows.len(),
                n,
                "audit rows after {:?}: {rows:#?}",
                start.elapsed()
            );
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row<'a>(rows: &'a [AuditRecord], account: &str, requested: &str) -> &'a AuditRecord {
    rows.iter()
        .find(|r| r.account == account && r.requested == requested)
        .unwrap_or_else(|| panic!("no audit row for {account:?} asking {requested:?} in {rows:#?}"))
}

/// Eleven decisions on a fresh server, and every text form of the secrets
/// they were made with.
struct Decisions {
    /// The server, kept running until the test ends.
    server: TestServer,
    rows: Vec<AuditRecord>,
    forms: Vec<String>,
}

/// Makes the decisions: an old one written directly (to check `--since`), then
/// 1 issued, 2 partial, 3 refused, 4 wrong password, 5 robot, 6 token,
/// 7 anonymous, 8 docker login + 9 refresh grant, 10 underscore repository.
async fn decisions(db: &TestDb) -> Decisions {
    let s = server(db, NO_THROTTLE).await;
    s.add_user("alice", "alice-pw", &[]).await;
    let store = s.store();
    let (robot, hash) = new_secret(ROBOT_SECRET_PREFIX).unwrap();
    let robot = robot.expose_secret().to_owned();
    store
        .create_robot("ci", &hash, &[], "", None, now())
        .await
        .unwrap();
    let pat = shown_once(&ok(
        cli(
            &db.url,
            &[
                "token",
                "create",
                "--user",
                "alice",
                "--name",
                "t",
                "--limit",
                "repository:team-a/**:pull",
            ],
        )
        .run_async()
        .await,
        "berth token create",
    ));
    // An old decision, to check `--since`.
    store
        .insert_audit(&[AuditRecord {
            at: now() - 7200,
            request_id: "0123456789abcdef".into(),
            client: "192.0.2.1".into(),
            account: "alice".into(),
            kind: "user".into(),
            via: "local".into(),
            service: SVC.into(),
            requested: "repository:alice/old:pull".into(),
            granted: "repository:alice/old:pull".into(),
            denied: String::new(),
            rules: "own-namespace".into(),
            outcome: "issued".into(),
            error: String::new(),
            latency_us: 5,
            ..AuditRecord::default()
        }])
        .await
        .unwrap();

    let alice = Some(("alice", "alice-pw"));
    let mut tokens: Vec<String> = Vec::new();
    let mut keep = |r: Resp| {
        if let Some(t) = r.json()["token"].as_str() {
            tokens.push(t.to_owned());
        }
        if let Some(t) = r.json()["refresh_token"].as_str() {
            tokens.push(t.to_owned());
        }
        r
    };
    // 1 issued, 2 partial, 3 refused, 4 wrong password, 5 robot, 6 token,
    // 7 anonymous, 8 docker login + 9 refresh grant, 10 underscore repository.
    keep(
        s.get(&query("alice", &["repository:alice/app:pull,push"]), alice)
            .await,
    )
    .ok();
    keep(
        s.get(
            &query(
                "alice",
                &["repository:alice/app:pull", "repository:bob/app:pull,push"],
            ),
            alice,
        )
        .await,
    )
    .ok();
    keep(
        s.get(&query("alice", &["repository:bob/app:pull"]), alice)
            .await,
    )
    .ok();
    let r = s
        .get(
            &query("alice", &["repository:alice/secret:pull"]),
            Some(("alice", "wrong-Passw0rd")),
        )
        .await;
    refused(&r, "wrong password");
    keep(
        s.get(
            &query("robot$ci", &["repository:ci/app:push"]),
            Some(("robot$ci", &robot)),
        )
        .await,
    )
    .ok();
    keep(
        s.get(
            &query("alice", &["repository:team-a/app:pull,push"]),
            Some(("alice", &pat)),
        )
        .await,
    )
    .ok();
    keep(
        s.get(
            &format!("service={SVC}&scope=repository:alice/app:pull"),
            None,
        )
        .await,
    )
    .ok();
    let login = keep(
        s.get(
            &format!("account=alice&client_id=docker&offline_token=true&service={SVC}"),
            alice,
        )
        .await,
    );
    let refresh = login.json()["refresh_token"].as_str().unwrap().to_owned();
    keep(
        s.post(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "docker"),
            ("service", SVC),
            ("scope", "repository:alice/app:pull"),
        ])
        .await,
    )
    .ok();
    keep(
        s.get(&query("alice", &["repository:alice/my_app:pull"]), alice)
            .await,
    )
    .ok();

    let rows = audit_rows(&s, 11).await;
    let forms = leak_forms(
        &[
            vec![
                "alice-pw".to_owned(),
                "wrong-Passw0rd".to_owned(),
                robot.clone(),
                pat.clone(),
            ],
            tokens,
        ]
        .concat(),
    );
    Decisions {
        server: s,
        rows,
        forms,
    }
}

/// `berth audit --json ARGS`, the real binary on the same database.
async fn audit_json(db: &TestDb, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend(args);
    let out = ok(
        cli(&db.url, &all).run_async().await,
        &format!("berth {all:?}"),
    );
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect::<Vec<Value>>()
}

/// Every row has its own request id; recent ones a well-formed id, the
/// client's address, the service and a latency.
async fn request_ids(db: TestDb) {
    let Decisions {
        server: _running,
        rows,
        ..
    } = decisions(&db).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "request ids repeat: {rows:#?}");
    for r in rows.iter().filter(|r| r.at > now() - 600) {
        assert!(
            r.request_id.len() == 16 && r.request_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r:?}"
        );
        assert_eq!(r.client, "127.0.0.1", "{r:?}");
        assert_eq!(r.service, SVC, "{r:?}");
        assert!(r.latency_us > 0, "{r:?}");
    }
}

on_both_databases!(request_ids => audit_request_ids_sqlite, audit_request_ids_postgres);

/// Each decision's row: kind, source, grant, refusal, rule and outcome.
async fn decision_rows(db: TestDb) {
    let Decisions {
        server: _running,
        rows,
        ..
    } = decisions(&db).await;
    let r = row(&rows, "alice", "repository:alice/app:pull,push");
    assert_eq!(
        (r.kind.as_str(), r.via.as_str(), r.outcome.as_str()),
        ("user", "local", "issued")
    );
    assert_eq!(r.granted, "repository:alice/app:pull,push");
    assert_eq!((r.denied.as_str(), r.rules.as_str()), ("", "own-namespace"));
    let r = row(
        &rows,
        "alice",
        "repository:alice/app:pull repository:bob/app:pull,push",
    );
    assert_eq!(r.granted, "repository:alice/app:pull", "{r:?}");
    assert_eq!(r.denied, "repository:bob/app:pull,push", "{r:?}");
    assert_eq!(r.outcome, "issued", "partial access is not an error: {r:?}");
    let r = row(&rows, "alice", "repository:bob/app:pull");
    assert_eq!(
        (r.granted.as_str(), r.denied.as_str(), r.rules.as_str()),
        ("", "repository:bob/app:pull", ""),
        "{r:?}"
    );
    let failed: Vec<_> = rows.iter().filter(|r| r.outcome != "issued").collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let r = failed[0];
    assert_eq!(r.account, "alice", "the claimed account: {r:?}");
    assert_eq!(r.outcome, "invalid_grant", "{r:?}");
    assert!(r.granted.is_empty() && r.kind.is_empty(), "{r:?}");
    assert!(r.error.contains("invalid username or password"), "{r:?}");
    let r = row(&rows, "robot$ci", "repository:ci/app:push");
    assert_eq!(
        (
            r.kind.as_str(),
            r.via.as_str(),
            r.granted.as_str(),
            r.rules.as_str()
        ),
        ("robot", "robot", "repository:ci/app:push", "ci-robots"),
        "{r:?}"
    );
    let r = row(&rows, "alice", "repository:team-a/app:pull,push");
    assert_eq!(
        (r.kind.as_str(), r.via.as_str()),
        ("user", "token"),
        "{r:?}"
    );
    assert_eq!(
        (r.granted.as_str(), r.denied.as_str()),
        ("repository:team-a/app:pull", "repository:team-a/app:push"),
        "the token's limit refused push: {r:?}"
    );
    let r = row(&rows, "", "repository:alice/app:pull");
    assert_eq!(
        (r.kind.as_str(), r.granted.as_str(), r.denied.as_str()),
        ("anonymous", "", "repository:alice/app:pull"),
        "{r:?}"
    );
    let r = row(&rows, "alice", "repository:alice/app:pull");
    assert_eq!(r.via, "refresh", "{r:?}");
    assert_eq!(row(&rows, "alice", "").outcome, "issued");
}

on_both_databases!(decision_rows => audit_decision_rows_sqlite, audit_decision_rows_postgres);

/// No password, robot secret, access token, refresh token or issued token (nor
/// a hash of one) in any row.
async fn no_secret_in_rows(db: TestDb) {
    let Decisions {
        server: _running,
        rows,
        forms,
        ..
    } = decisions(&db).await;
    for r in &rows {
        assert_no_leak(&serde_json::to_string(r).unwrap(), &forms, "an audit row");
    }
}

on_both_databases!(
    no_secret_in_rows =>
    audit_no_secret_in_rows_sqlite,
    audit_no_secret_in_rows_postgres
);

/// `berth audit` lists every row without a secret, and filters by user and
/// by time.
async fn cli_by_user_and_time(db: TestDb) {
    let Decisions {
        server: _running,
        forms,
        ..
    } = decisions(&db).await;
    let all = audit_json(&db, &[]).await;
    assert_eq!(all.len(), 11, "{all:#?}");
    assert_no_leak(&format!("{all:?}"), &forms, "berth audit --json");
    let mine = audit_json(&db, &["--user", "alice"]).await;
    assert_eq!(mine.len(), 9, "{mine:#?}");
    assert!(mine.iter().all(|r| r["account"] == "alice"));
    let recent = audit_json(&db, &["--user", "alice", "--since", "1h"]).await;
    assert_eq!(
        recent.len(),
        8,
        "--since 1h leaves out the old row: {recent:#?}"
    );
    assert!(recent
        .iter()
        .all(|r| r["requested"] != "repository:alice/old:pull"));
}

on_both_databases!(
    cli_by_user_and_time =>
    audit_cli_by_user_and_time_sqlite,
    audit_cli_by_user_and_time_postgres
);

/// `berth audit --denied`: refusals, partial grants and the failed sign-in.
async fn cli_denied(db: TestDb) {
    let _running = decisions(&db).await;
    let denied = audit_json(&db, &["--denied"]).await;
    let mut got: Vec<String> = denied
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["account"].as_str().unwrap(),
                r["requested"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            " repository:alice/app:pull",
            "alice repository:alice/app:pull repository:bob/app:pull,push",
            "alice repository:alice/secret:pull",
            "alice repository:bob/app:pull",
            "alice repository:team-a/app:pull,push",
        ],
        "--denied: refusals, partial grants and the failed sign-in: {denied:#?}"
    );
    assert!(denied.iter().any(|r| r["outcome"] == "invalid_grant"));
}

on_both_databases!(cli_denied => audit_cli_denied_sqlite, audit_cli_denied_postgres);

/// `berth audit --repo` matches a whole repository name, `_` included.
async fn cli_by_repository(db: TestDb) {
    let _running = decisions(&db).await;
    let bob = audit_json(&db, &["--repo", "bob/app"]).await;
    assert_eq!(bob.len(), 2, "--repo bob/app: {bob:#?}");
    assert!(bob
        .iter()
        .all(|r| r["requested"].as_str().unwrap().contains(":bob/app:")));
    let none = audit_json(&db, &["--repo", "bob"]).await;
    assert!(
        none.is_empty(),
        "--repo is a repository, not a substring: {none:#?}"
    );
    let underscore = audit_json(&db, &["--repo", "alice/my_app"]).await;
    assert_eq!(
        underscore.len(),
        1,
        "--repo alice/my_app (repository names may hold '_'): {underscore:#?}"
    );
}

on_both_databases!(
    cli_by_repository =>
    audit_cli_by_repository_sqlite,
    audit_cli_by_repository_postgres
);

/// `berth audit` without `--json`: one line per row, with its request id.
async fn cli_text(db: TestDb) {
    let Decisions {
        server: _running,
        rows,
        ..
    } = decisions(&db).await;
    let text = ok(
        cli(&db.url, &["audit", "--user", "robot$ci"])
            .run_async()
            .await,
        "berth audit",
    );
    let robot_row = row(&rows, "robot$ci", "repository:ci/app:push");
    assert!(
        text.stdout.contains(&robot_row.request_id) && text.stdout.lines().count() == 1,
        "{text}"
    );
}

on_both_databases!(cli_text => audit_cli_text_sqlite, audit_cli_text_postgres);
