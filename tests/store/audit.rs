//! The audit log and failed sign-in counting: rows written, queried,
//! compacted; failures counted per account and address, also concurrently.

use super::*;

pub fn record(at: i64, account: &str, requested: &str, denied: &str, outcome: &str) -> AuditRecord {
    AuditRecord {
        at,
        request_id: format!("r{at}"),
        client: "127.0.0.1".into(),
        account: account.into(),
        kind: "user".into(),
        via: "local".into(),
        service: "reg".into(),
        requested: requested.into(),
        granted: String::new(),
        denied: denied.into(),
        rules: "own-namespace".into(),
        outcome: outcome.into(),
        error: String::new(),
        latency_us: 42,
        ..AuditRecord::default()
    }
}

pub async fn audit(store: &Store) {
    store
        .insert_audit(&[
            record(100, "alice", "repository:alice/app:pull", "", "issued"),
            record(
                200,
                "bob",
                "repository:alice/app:push",
                "repository:alice/app:push",
                "issued",
            ),
            record(300, "alice", "repository:other/x:pull", "", "invalid_grant"),
            record(
                400,
                "carol",
                "repository:alice/application:pull",
                "",
                "issued",
            ),
        ])
        .await
        .unwrap();
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let all = store.query_audit(&q(|_| {})).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.at).collect::<Vec<_>>(),
        [400, 300, 200, 100]
    );
    assert_eq!(
        all[3],
        record(100, "alice", "repository:alice/app:pull", "", "issued")
    );
    let alice = store
        .query_audit(&q(|q| q.account = Some("alice".into())))
        .await
        .unwrap();
    assert_eq!(alice.len(), 2);
    let repo = store
        .query_audit(&q(|q| q.repository = Some("alice/app".into())))
        .await
        .unwrap();
    assert_eq!(
        repo.iter().map(|r| r.at).collect::<Vec<_>>(),
        [200, 100],
        "exact repository, not a prefix"
    );
    let denied = store
        .query_audit(&q(|q| q.denied_only = true))
        .await
        .unwrap();
    assert_eq!(denied.iter().map(|r| r.at).collect::<Vec<_>>(), [300, 200]);
    let since = store
        .query_audit(&q(|q| q.since = Some(250)))
        .await
        .unwrap();
    assert_eq!(since.len(), 2);
    let hostile = store
        .query_audit(&q(|q| q.account = Some("' OR 1=1 --".into())))
        .await
        .unwrap();
    assert!(hostile.is_empty());
    assert_eq!(store.purge_audit(250).await.unwrap(), 2);
    assert_eq!(store.query_audit(&q(|_| {})).await.unwrap().len(), 2);

    // A batch of 77 rows (several multi-row statements) keeps every field of
    // every row, each in its own row.
    let batch: Vec<AuditRecord> = (0..77)
        .map(|i| {
            let mut r = record(
                1000 + i,
                &format!("user{i}"),
                &format!("repository:r{i}:pull"),
                "",
                "issued",
            );
            r.request_id = format!("batch-{i}");
            r.latency_us = i;
            r
        })
        .collect();
    store.insert_audit(&batch).await.unwrap();
    let mut stored = store
        .query_audit(&q(|q| q.since = Some(1000)))
        .await
        .unwrap();
    stored.reverse();
    assert_eq!(stored, batch);
}

pub async fn login_failures(store: &Store) {
    use berth::store::Take;
    let key = "account:alice";
    // Three attempts of a limit of three are taken; the fourth is refused and
    // says when the window (from the first attempt) ends.
    for t in 0..3 {
        assert_eq!(
            store
                .take_login_attempt(key, 1000 + t, 300, 3)
                .await
                .unwrap(),
            Take::Taken { window_start: 1000 }
        );
    }
    assert_eq!(
        store.take_login_attempt(key, 1010, 300, 3).await.unwrap(),
        Take::Full { window_end: 1300 }
    );
    // A refund makes room for one more, in the same window only.
    store.refund_login_attempt(key, 1000).await.unwrap();
    assert!(matches!(
        store.take_login_attempt(key, 1011, 300, 3).await.unwrap(),
        Take::Taken { .. }
    ));
    store.refund_login_attempt(key, 999).await.unwrap();
    assert!(matches!(
        store.take_login_attempt(key, 1012, 300, 3).await.unwrap(),
        Take::Full { .. }
    ));
    // The next window starts over.
    assert_eq!(
        store.take_login_attempt(key, 1300, 300, 3).await.unwrap(),
        Take::Taken { window_start: 1300 }
    );
    store.clear_login_failures(key).await.unwrap();
    assert!(matches!(
        store.take_login_attempt(key, 1301, 300, 1).await.unwrap(),
        Take::Taken { .. }
    ));

    // 64 concurrent takers of a limit of 10: exactly 10 get through.
    let results = futures_join_all((0..64).map(|_| {
        let store = store.clone();
        async move {
            store
                .take_login_attempt("pair:race", 2000, 300, 10)
                .await
                .unwrap()
        }
    }))
    .await;
    let taken = results
        .iter()
        .filter(|r| matches!(r, Take::Taken { .. }))
        .count();
    assert_eq!(taken, 10, "{results:?}");

    // Unlock removes the account's counter and every key with its prefix, and
    // nothing else.
    for k in [
        "account:bob",
        "pair:bob:1.2.3.4",
        "pair:bob:5.6.7.8",
        "pair:bobby:1.2.3.4",
    ] {
        store.take_login_attempt(k, 3000, 300, 5).await.unwrap();
    }
    assert_eq!(
        store
            .clear_login_keys("account:bob", "pair:bob:")
            .await
            .unwrap(),
        3
    );
    assert!(matches!(
        store
            .take_login_attempt("pair:bobby:1.2.3.4", 3001, 300, 1)
            .await
            .unwrap(),
        Take::Full { .. }
    ));
    assert!(store.purge_login_failures(10_000, 300).await.unwrap() >= 1);
}

/// Runs the futures concurrently (spawned on the runtime), in order.
pub async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
