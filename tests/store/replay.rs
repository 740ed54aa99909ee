//! The audit log's identity snapshot and its replay stream, on both databases:
//! what is recorded comes back as recorded, by id, weighted by its repeats;
//! rows without a snapshot (an older berth, a refused sign-in, a damaged value)
//! come back as not replayable.

use berth::config::Database;
use berth::store::{AuditRecord, RecordedIdentity, ReplayRow, Store};
use futures::StreamExt;

use super::store_pool;

fn row(at: i64, request_id: &str, account: &str, identity: Option<(&str, &[&str])>) -> AuditRecord {
    AuditRecord {
        at,
        request_id: request_id.into(),
        client: "192.0.2.7".into(),
        account: account.into(),
        kind: if identity.is_some() { "user" } else { "" }.into(),
        via: if identity.is_some() { "local" } else { "" }.into(),
        service: "reg".into(),
        requested: "repository:team/app:pull,push".into(),
        granted: if identity.is_some() {
            "repository:team/app:pull"
        } else {
            ""
        }
        .into(),
        denied: "repository:team/app:push".into(),
        rules: "team-read".into(),
        outcome: if identity.is_some() {
            "issued"
        } else {
            "unauthorized"
        }
        .into(),
        subject: identity.map(|(s, _)| s.to_owned()),
        groups: identity.map(|(_, g)| g.iter().map(|s| (*s).to_owned()).collect()),
        ..AuditRecord::default()
    }
}

async fn replay_all(store: &Store, since: i64) -> Vec<ReplayRow> {
    store
        .audit_replay(since)
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .await
}

pub async fn replay(store: &Store, db: &Database) {
    // Written by an older berth: no snapshot columns at all.
    let mut old = store_pool(db).await;
    sqlx::query(
        "INSERT INTO audit_log (at, request_id, client, account, kind, via, service, requested,
             granted, denied, rules, outcome, error, latency_us)
         VALUES (500, 'old', '192.0.2.1', 'alice', 'user', 'local', 'reg',
             'repository:a/b:pull', 'repository:a/b:pull', '', 'r', 'issued', '', 3)",
    )
    .execute(old.as_mut())
    .await
    .unwrap();
    // Newer rows, recorded out of time order: replay follows ids.
    let mut folded = row(
        400,
        "folded",
        "robot$ci",
        Some(("robot$ci", &["ci", "builders"])),
    );
    folded.kind = "robot".into();
    folded.repeats = 64;
    folded.last_at = Some(459);
    let mut anonymous = row(450, "anon", "", Some(("", &[])));
    anonymous.kind = "anonymous".into();
    anonymous.via = "anonymous".into();
    store
        .insert_audit(&[
            row(
                600,
                "alice-1",
                "alice",
                Some(("alice", &["zeta", "Alpha", "mid"])),
            ),
            row(300, "refused", "mallory", None),
            folded,
            anonymous,
        ])
        .await
        .unwrap();
    // A snapshot whose groups were damaged after the fact is never guessed.
    store
        .insert_audit(&[row(700, "damaged", "dave", Some(("dave", &["g"])))])
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET groups = 'not json' WHERE request_id = 'damaged'")
        .execute(old.as_mut())
        .await
        .unwrap();

    let rows = replay_all(store, 0).await;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "ordered by id, each once");
    let ats: Vec<i64> = rows.iter().map(|r| r.at).collect();
    assert_eq!(ats, [500, 600, 300, 400, 450, 700], "by id, not by time");

    assert_eq!(
        rows[0].identity, None,
        "an older berth's row is not replayable"
    );
    assert_eq!((rows[0].repeats, rows[0].last_at), (1, 500));
    assert_eq!(rows[0].requested, "repository:a/b:pull");

    assert_eq!(
        rows[1].identity,
        Some(RecordedIdentity {
            subject: "alice".into(),
            kind: "user".into(),
            groups: vec!["Alpha".into(), "mid".into(), "zeta".into()],
            via: "local".into(),
        }),
        "groups come back sorted, as recorded"
    );
    assert_eq!(
        rows[1].requested, "repository:team/app:pull,push",
        "unchanged"
    );
    assert_eq!(rows[1].granted, "repository:team/app:pull");
    assert_eq!(
        (
            rows[1].service.as_str(),
            rows[1].client.as_str(),
            rows[1].outcome.as_str()
        ),
        ("reg", "192.0.2.7", "issued")
    );

    assert_eq!(
        rows[2].identity, None,
        "a refused sign-in established no identity"
    );
    assert_eq!(rows[2].account, "mallory");
    assert_eq!(rows[2].outcome, "unauthorized");

    assert_eq!(
        (rows[3].repeats, rows[3].at, rows[3].last_at),
        (64, 400, 459)
    );
    let robot = rows[3].identity.as_ref().unwrap();
    assert_eq!(
        (robot.kind.as_str(), robot.subject.as_str()),
        ("robot", "robot$ci")
    );
    assert_eq!(robot.groups, ["builders", "ci"]);

    let anon = rows[4].identity.as_ref().unwrap();
    assert_eq!(
        (anon.subject.as_str(), anon.kind.as_str(), anon.groups.len()),
        ("", "anonymous", 0),
        "anonymous is replayable: it has an (empty) identity"
    );
    assert_eq!(rows[5].identity, None, "damaged groups are not guessed");

    // `since` counts from each row's first decision.
    let recent = replay_all(store, 450).await;
    assert_eq!(
        recent.iter().map(|r| r.at).collect::<Vec<_>>(),
        [500, 600, 450, 700]
    );
    assert!(replay_all(store, 10_000).await.is_empty());

    // The query side shows the same snapshot.
    let shown = store
        .query_audit(&berth::store::AuditQuery {
            limit: 10,
            account: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(shown.len(), 2);
    let newest = &shown[0];
    assert_eq!(newest.groups.as_deref().unwrap(), ["Alpha", "mid", "zeta"]);
    assert!(newest.snapshot());
    assert!(!shown[1].snapshot(), "the older berth's row");

    // A stream is read row by row: a few thousand rows, read while another
    // connection writes, stopping part way.
    let batch: Vec<AuditRecord> = (0..3000)
        .map(|i| row(10_000 + i, &format!("b{i}"), "bulk", Some(("bulk", &["g"]))))
        .collect();
    store.insert_audit(&batch).await.unwrap();
    let mut stream = store.audit_replay(10_000);
    let mut seen = 0;
    let mut last = 0;
    while let Some(r) = stream.next().await {
        let r = r.unwrap();
        assert!(r.id > last);
        last = r.id;
        seen += 1;
        if seen == 1000 {
            break;
        }
    }
    drop(stream);
    assert_eq!(seen, 1000);
    assert_eq!(replay_all(store, 10_000).await.len(), 3000);
    drop(old);
}
