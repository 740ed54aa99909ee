//! The store's test suite, run against both databases berth supports: an SQLite
//! file and a real PostgreSQL (Debian's, started by `scripts/start-postgres.sh`;
//! its admin URL comes in `BERTH_TEST_POSTGRES_URL`). Each PostgreSQL test makes
//! its own database and drops it afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth::authn::Username;
use berth::config::Database;
use berth::store::{AuditQuery, AuditRecord, Store, StoreError};
use sqlx::Connection;

#[path = "store/replay.rs"]
mod replay;

#[path = "store/erase.rs"]
mod erase;

/// A database for one test; PostgreSQL ones are dropped on `finish`.
struct TestDb {
    db: Database,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        TestDb {
            db: Database::Sqlite(dir.path().join("nested/dir/berth.db")),
            _dir: Some(dir),
            pg_admin: None,
        }
    }

    /// `None` (with a printed reason) when no PostgreSQL is configured, unless
    /// `BERTH_E2E=require`, where that is a failure.
    async fn postgres() -> Option<Self> {
        let Ok(admin) = std::env::var("BERTH_TEST_POSTGRES_URL") else {
            if std::env::var("BERTH_E2E").as_deref() == Ok("require") {
                panic!("BERTH_TEST_POSTGRES_URL is not set (scripts/start-postgres.sh prints it)");
            }
            eprintln!("skipping PostgreSQL store tests: BERTH_TEST_POSTGRES_URL not set");
            return None;
        };
        let mut raw = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).unwrap();
        let name = format!("berth_t_{}", data_encoding::HEXLOWER.encode(&raw));
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        Some(TestDb {
            db: Database::Postgres(format!("{base}/{name}")),
            _dir: None,
            pg_admin: Some((admin, name)),
        })
    }

    async fn finish(self, store: Store) {
        store.close().await;
        if let Some((admin, name)) = &self.pg_admin {
            let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

fn user(s: &str) -> Username {
    s.parse().unwrap()
}

async fn users_and_refresh_tokens(store: &Store) {
    let alice = user("alice");
    store
        .create_user(&alice, "$argon2id$x", &["g1".into()], 100)
        .await
        .unwrap();
    assert!(matches!(
        store.create_user(&alice, "h", &[], 100).await,
        Err(StoreError::UserExists(_))
    ));
    let rec = store.find_user(&alice).await.unwrap().unwrap();
    assert_eq!(rec.groups, ["g1"]);
    assert!(!rec.disabled);
    let e0 = rec.epoch;
    assert_eq!(store.user_state(rec.id).await.unwrap(), Some((e0, false)));

    store
        .set_groups(&alice, &["g2".into(), "g3".into()], 101)
        .await
        .unwrap();
    let rec = store.find_user(&alice).await.unwrap().unwrap();
    assert_eq!(rec.groups, ["g2", "g3"]);
    assert!(rec.epoch > e0, "group changes bump the epoch");

    // Refresh tokens: stored by hash, found with their user, revoked by password change.
    store
        .insert_refresh(b"hash-1", rec.id, "reg", 100, 1000)
        .await
        .unwrap();
    let r = store.find_refresh(b"hash-1").await.unwrap().unwrap();
    assert_eq!(
        (r.service.as_str(), r.expires_at, r.user.username.as_str()),
        ("reg", 1000, "alice")
    );
    store.touch_refresh(b"hash-1", 150).await.unwrap();
    assert_eq!(
        store
            .find_refresh(b"hash-1")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        150
    );
    store
        .set_password(&alice, "$argon2id$y", 102)
        .await
        .unwrap();
    assert!(store.find_refresh(b"hash-1").await.unwrap().is_none());

    store
        .insert_refresh(b"hash-2", rec.id, "reg", 100, 1000)
        .await
        .unwrap();
    store.set_disabled(&alice, true, 103).await.unwrap();
    assert!(
        store.find_refresh(b"hash-2").await.unwrap().is_none(),
        "disable revokes"
    );
    assert!(store.user_state(rec.id).await.unwrap().unwrap().1);
    store.set_disabled(&alice, false, 104).await.unwrap();

    store
        .insert_refresh(b"hash-3", rec.id, "reg", 100, 1000)
        .await
        .unwrap();
    assert_eq!(store.revoke_sessions(&alice).await.unwrap(), 1);
    store
        .insert_refresh(b"hash-4", rec.id, "reg", 100, 1000)
        .await
        .unwrap();
    store
        .insert_refresh(b"hash-5", rec.id, "reg", 100, 120)
        .await
        .unwrap();
    assert_eq!(
        store.purge_refresh(130, 10_000).await.unwrap(),
        1,
        "absolute expiry"
    );

    // Hash upgrade only replaces the hash it read.
    store
        .upgrade_hash(rec.id, "not-current", "$argon2id$z")
        .await
        .unwrap();
    assert_eq!(
        store
            .find_user(&alice)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$y"
    );
    store
        .upgrade_hash(rec.id, "$argon2id$y", "$argon2id$z")
        .await
        .unwrap();
    assert_eq!(
        store
            .find_user(&alice)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "$argon2id$z"
    );

    // Names are data, never SQL.
    let tricky = user("o.r-1_1");
    store
        .create_user(
            &tricky,
            "h'); DROP TABLE users; --",
            &["' OR 1=1 --".into()],
            1,
        )
        .await
        .unwrap();
    let t = store.find_user(&tricky).await.unwrap().unwrap();
    assert_eq!(t.password_hash, "h'); DROP TABLE users; --");
    assert_eq!(t.groups, ["' OR 1=1 --"]);
    assert_eq!(store.user_count().await.unwrap(), 2);
    assert_eq!(store.list_users().await.unwrap().len(), 2);

    store.delete_user(&alice).await.unwrap();
    assert!(
        store.find_refresh(b"hash-4").await.unwrap().is_none(),
        "delete cascades"
    );
    assert!(matches!(
        store.delete_user(&alice).await,
        Err(StoreError::NoSuchUser(_))
    ));
    assert!(matches!(
        store.set_disabled(&alice, true, 1).await,
        Err(StoreError::NoSuchUser(_))
    ));
}

async fn robots(store: &Store) {
    store
        .create_robot(
            "ci",
            b"secret-hash",
            &["builders".into()],
            "CI robot",
            Some(500),
            100,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.create_robot("ci", b"x", &[], "", None, 100).await,
        Err(StoreError::Exists(_))
    ));
    let r = store.find_robot("ci").await.unwrap().unwrap();
    assert_eq!(
        (r.groups.clone(), r.expires_at, r.description.as_str()),
        (vec!["builders".to_owned()], Some(500), "CI robot")
    );
    assert_eq!(r.secret_hash, b"secret-hash");
    store
        .set_robot_secret("ci", b"new-hash", 101)
        .await
        .unwrap();
    let r2 = store.find_robot("ci").await.unwrap().unwrap();
    assert_eq!(r2.secret_hash, b"new-hash");
    assert!(r2.epoch > r.epoch);
    store.set_robot_disabled("ci", true, 102).await.unwrap();
    assert!(store.robot_state(r.id).await.unwrap().unwrap().1);
    store.touch_robot(r.id, 200).await.unwrap();
    assert_eq!(
        store.find_robot("ci").await.unwrap().unwrap().last_used_at,
        Some(200)
    );
    assert_eq!(store.list_robots().await.unwrap().len(), 1);
    store.delete_robot("ci").await.unwrap();
    assert!(store.find_robot("ci").await.unwrap().is_none());
    assert!(matches!(
        store.delete_robot("ci").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_robot_secret("nope", b"x", 1).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn access_tokens(store: &Store) {
    let bob = user("bob");
    assert!(matches!(
        store
            .create_access_token(&bob, "t", b"h", &[], None, 1)
            .await,
        Err(StoreError::NoSuchUser(_))
    ));
    store
        .create_user(&bob, "h", &["team".into()], 1)
        .await
        .unwrap();
    let limits = vec!["repository:team-a/**:pull".to_owned()];
    store
        .create_access_token(&bob, "ci", b"tok-hash", &limits, Some(900), 10)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_access_token(&bob, "ci", b"other", &[], None, 10)
            .await,
        Err(StoreError::Exists(_))
    ));
    let (t, u) = store.find_access_token(b"tok-hash").await.unwrap().unwrap();
    assert_eq!(
        (t.name.as_str(), t.limits.clone(), t.expires_at),
        ("ci", limits.clone(), Some(900))
    );
    assert_eq!(u.username, "bob");
    assert!(store.find_access_token(b"unknown").await.unwrap().is_none());
    store.touch_access_token(t.id, 50).await.unwrap();
    let listed = store.list_access_tokens(&bob).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(50));
    store.revoke_access_token(&bob, "ci").await.unwrap();
    assert!(store
        .find_access_token(b"tok-hash")
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store.revoke_access_token(&bob, "ci").await,
        Err(StoreError::NotFound(_))
    ));
    store
        .create_access_token(&bob, "ci2", b"tok-2", &limits, None, 10)
        .await
        .unwrap();
    store.delete_user(&bob).await.unwrap();
    assert!(
        store.find_access_token(b"tok-2").await.unwrap().is_none(),
        "delete cascades"
    );
}

fn record(at: i64, account: &str, requested: &str, denied: &str, outcome: &str) -> AuditRecord {
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

async fn audit(store: &Store) {
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

async fn login_failures(store: &Store) {
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
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
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

/// A user's refresh tokens are capped: the newest one revokes the oldest.
async fn refresh_cap(store: &Store) {
    use berth::store::MAX_REFRESH_PER_USER;
    let name = user("looper");
    store
        .create_user(&name, "$argon2id$x", &[], 100)
        .await
        .unwrap();
    let id = store.find_user(&name).await.unwrap().unwrap().id;
    let total = MAX_REFRESH_PER_USER + 5;
    for i in 0..total {
        let hash = format!("loop-{i:04}");
        store
            .insert_refresh(hash.as_bytes(), id, "reg", 1000 + i, 100_000)
            .await
            .unwrap();
    }
    for i in 0..total {
        let found = store
            .find_refresh(format!("loop-{i:04}").as_bytes())
            .await
            .unwrap()
            .is_some();
        assert_eq!(found, i >= 5, "refresh token {i} of {total}");
    }
}

async fn suite(t: TestDb) {
    let store = Store::open(&t.db).await.unwrap();
    store.ping().await.unwrap();
    // Opening again is a no-op migration.
    Store::open(&t.db).await.unwrap().close().await;
    users_and_refresh_tokens(&store).await;
    robots(&store).await;
    access_tokens(&store).await;
    audit(&store).await;
    login_failures(&store).await;
    refresh_cap(&store).await;
    generation(&store, &t.db).await;
    federated(&store).await;
    t.finish(store).await;
}

/// Federated sessions and sign-in page tokens: stored, found, updated, listed,
/// owned, purged and revoked alike on both databases.
async fn federated(store: &Store) {
    use berth::store::oidc::{FederatedOwner, OidcSessionRecord, OidcTokenRecord};
    let owner = |subject: &str, groups: &[&str]| FederatedOwner {
        provider: "kc".into(),
        subject: subject.into(),
        username: format!("name-{subject}"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    let session = OidcSessionRecord {
        owner: owner("sub-1", &["team-a"]),
        service: "reg".into(),
        idp_refresh: vec![1, 2, 3, 0, 255],
        created_at: 100,
        last_used_at: 100,
        checked_at: 100,
        expires_at: 10_000,
    };
    store
        .insert_oidc_session(&[1u8; 32], &session)
        .await
        .unwrap();
    let found = store.find_oidc_session(&[1u8; 32]).await.unwrap().unwrap();
    assert_eq!(found.owner, session.owner);
    assert_eq!(
        found.idp_refresh, session.idp_refresh,
        "sealed bytes kept exactly"
    );
    assert_eq!(
        (found.service.as_str(), found.created_at, found.expires_at),
        ("reg", 100, 10_000)
    );
    assert!(store.find_oidc_session(&[2u8; 32]).await.unwrap().is_none());

    let renamed = owner("sub-1", &["team-b", "role:x"]);
    store
        .update_oidc_session(&[1u8; 32], &renamed, &[9, 9], 200)
        .await
        .unwrap();
    let found = store.find_oidc_session(&[1u8; 32]).await.unwrap().unwrap();
    assert_eq!(found.owner, renamed);
    assert_eq!(found.idp_refresh, vec![9, 9]);
    assert_eq!((found.checked_at, found.last_used_at), (200, 200));
    store.touch_oidc_session(&[1u8; 32], 300).await.unwrap();
    let found = store.find_oidc_session(&[1u8; 32]).await.unwrap().unwrap();
    assert_eq!((found.checked_at, found.last_used_at), (200, 300));

    let token = |subject: &str, created: i64, expires: i64| OidcTokenRecord {
        id: 0,
        owner: owner(subject, &["team-a"]),
        description: format!("laptop {subject} {created}"),
        actions: vec!["pull".into()],
        limits: if created == 200 {
            vec!["repository:team-a/app:pull".into()]
        } else {
            Vec::new()
        },
        idp_refresh: vec![7; 40],
        created_at: created,
        expires_at: expires,
        checked_at: created,
        last_used_at: None,
    };
    let t1 = store
        .insert_oidc_token(&[11u8; 32], &token("sub-1", 100, 5_000))
        .await
        .unwrap();
    let t2 = store
        .insert_oidc_token(&[12u8; 32], &token("sub-1", 200, 400))
        .await
        .unwrap();
    let other = store
        .insert_oidc_token(&[13u8; 32], &token("sub-2", 150, 5_000))
        .await
        .unwrap();
    assert!(t1 != t2 && t2 != other);
    let found = store.find_oidc_token(&[11u8; 32]).await.unwrap().unwrap();
    assert_eq!(found.id, t1);
    assert_eq!(found.actions, ["pull"]);
    assert_eq!(found.description, "laptop sub-1 100");
    assert_eq!(found.last_used_at, None);
    assert!(found.limits.is_empty());
    let limited = store.find_oidc_token(&[12u8; 32]).await.unwrap().unwrap();
    assert_eq!(limited.limits, ["repository:team-a/app:pull"]);
    let listed: Vec<i64> = store
        .list_oidc_tokens("kc", "sub-1")
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, [t2, t1], "newest first, only the owner's");

    store.update_oidc_token(t1, None, 250).await.unwrap();
    let found = store.find_oidc_token(&[11u8; 32]).await.unwrap().unwrap();
    assert_eq!((found.last_used_at, found.checked_at), (Some(250), 100));
    store
        .update_oidc_token(t1, Some((&renamed, &[5, 5][..])), 260)
        .await
        .unwrap();
    let found = store.find_oidc_token(&[11u8; 32]).await.unwrap().unwrap();
    assert_eq!(found.owner, renamed);
    assert_eq!((found.last_used_at, found.checked_at), (Some(260), 260));
    assert_eq!(found.idp_refresh, vec![5, 5]);

    // Deleting someone else's token through the owner check does nothing.
    assert!(!store
        .delete_oidc_token(other, Some(("kc", "sub-1")))
        .await
        .unwrap());
    assert!(store.find_oidc_token(&[13u8; 32]).await.unwrap().is_some());

    // Purge: the session idle since 300 and the token expired at 400 go.
    assert_eq!(store.purge_oidc(500, 150).await.unwrap(), 2);
    assert!(store.find_oidc_session(&[1u8; 32]).await.unwrap().is_none());
    assert!(store.find_oidc_token(&[12u8; 32]).await.unwrap().is_none());
    assert!(store.find_oidc_token(&[11u8; 32]).await.unwrap().is_some());

    assert_eq!(store.revoke_oidc_user("kc", "sub-1").await.unwrap(), 1);
    assert!(store.find_oidc_token(&[11u8; 32]).await.unwrap().is_none());
    assert!(store
        .delete_oidc_token(other, Some(("kc", "sub-2")))
        .await
        .unwrap());
    assert!(store
        .list_oidc_tokens("kc", "sub-2")
        .await
        .unwrap()
        .is_empty());
    browser_flows(store).await;
}

/// Browser sessions are found, touched, resealed after a check with the
/// provider, purged when idle or old, and deleted.
async fn browser_flows(store: &Store) {
    let find = |h: u8| async move { store.find_browser_session(&[h; 32]).await.unwrap() };
    for h in [31, 32, 33] {
        store
            .insert_browser_session(&[h; 32], &[h], 100)
            .await
            .unwrap();
    }
    assert_eq!(find(31).await, Some((vec![31], 100, 100)));
    store.touch_browser_session(&[31u8; 32], 500).await.unwrap();
    store.touch_browser_session(&[33u8; 32], 500).await.unwrap();
    store
        .update_browser_session(&[33u8; 32], &[3, 3], 520)
        .await
        .unwrap();
    assert_eq!(find(33).await, Some((vec![3, 3], 100, 520)));
    // At 600, idle 200, max 1000: session 32 (idle since 100) goes.
    assert_eq!(store.purge_browser_flows(600, 200, 1_000).await.unwrap(), 1);
    assert_eq!(find(32).await, None);
    assert_eq!(find(31).await, Some((vec![31], 100, 500)));
    store.delete_browser_session(&[31u8; 32]).await.unwrap();
    assert_eq!(find(31).await, None);
    // At 1200 session 33 is older than the maximum, however recently used.
    assert_eq!(
        store
            .purge_browser_flows(1_200, 5_000, 1_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(find(33).await, None);
}

/// Every change that can revoke access moves the authentication generation, in
/// the same transaction, whoever makes it; uses and unrelated writes do not.
async fn generation(store: &Store, db: &Database) {
    let g = berth::store::Generation::new(store.clone());
    let other = Store::open(db).await.unwrap();
    let name = user("gen-user");
    other
        .create_user(&name, "$argon2id$x", &[], 10)
        .await
        .unwrap();
    let id = other.find_user(&name).await.unwrap().unwrap().id;
    other
        .insert_refresh(&[7u8; 32], id, "reg", 10, 1_000_000)
        .await
        .unwrap();
    let mut last = g.current().await.unwrap();
    assert_eq!(
        g.current().await.unwrap(),
        last,
        "a reading changes nothing"
    );

    // Writes that revoke nothing leave it alone.
    other.touch_refresh(&[7u8; 32], 20).await.unwrap();
    other
        .upgrade_hash(id, "$argon2id$x", "$argon2id$y")
        .await
        .unwrap();
    other
        .insert_audit(&[record(5, "gen-user", "", "", "issued")])
        .await
        .unwrap();
    other.purge_refresh(0, -1).await.unwrap();
    assert_eq!(g.current().await.unwrap(), last, "unrelated writes");

    let mut moved = |what: &str, now: i64| {
        assert!(
            now > last,
            "{what} did not move the generation ({last} -> {now})"
        );
        last = now;
    };
    assert!(other.find_refresh(&[7u8; 32]).await.unwrap().is_some());
    other.delete_refresh(&[7u8; 32]).await.unwrap();
    assert!(other.find_refresh(&[7u8; 32]).await.unwrap().is_none());
    moved("a deleted refresh token", g.current().await.unwrap());
    other.set_password(&name, "$argon2id$z", 30).await.unwrap();
    moved("a password change", g.current().await.unwrap());
    other.set_groups(&name, &["g".into()], 31).await.unwrap();
    moved("a group change", g.current().await.unwrap());
    other.set_disabled(&name, true, 32).await.unwrap();
    moved("disabling", g.current().await.unwrap());
    other.set_disabled(&name, false, 33).await.unwrap();
    moved("enabling", g.current().await.unwrap());
    other
        .insert_refresh(&[8u8; 32], id, "reg", 40, 1_000_000)
        .await
        .unwrap();
    assert_eq!(other.revoke_sessions(&name).await.unwrap(), 1);
    moved("revoked sessions", g.current().await.unwrap());
    other.delete_user(&name).await.unwrap();
    moved("a deleted user", g.current().await.unwrap());

    // Under concurrency, every answer is at least the generation committed
    // before the call began, however readings are shared between callers.
    let g = std::sync::Arc::new(g);
    let writer_store = other.clone();
    let writer = tokio::spawn(async move {
        let name = user("gen-writer");
        writer_store
            .create_user(&name, "$argon2id$x", &[], 50)
            .await
            .unwrap();
        for i in 0..60 {
            writer_store
                .set_groups(&name, &[format!("g{i}")], 51 + i)
                .await
                .unwrap();
        }
    });
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let g = g.clone();
            let store = other.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    let before = store.auth_generation().await.unwrap();
                    let seen = g.current().await.unwrap();
                    assert!(
                        seen >= before,
                        "a reading older than the call: {seen} < {before}"
                    );
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    other.close().await;
}

async fn newer_database_is_refused(t: TestDb) {
    let store = Store::open(&t.db).await.unwrap();
    let insert =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                  VALUES (99999, 'from a newer berth', TRUE, $1, 0)";
    sqlx::query(insert)
        .bind(vec![0u8; 48])
        .execute(store_pool(&t.db).await.as_mut())
        .await
        .unwrap();
    let err = Store::open(&t.db).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate(_)), "{err}");
    assert!(err.to_string().contains("99999"), "{err}");
    t.finish(store).await;
}

/// A plain connection to the same database, to tamper with it.
async fn store_pool(db: &Database) -> Box<sqlx::AnyConnection> {
    sqlx::any::install_default_drivers();
    let url = match db {
        Database::Sqlite(p) => format!("sqlite://{}", p.display()),
        Database::Postgres(u) => u.clone(),
    };
    Box::new(sqlx::AnyConnection::connect(&url).await.unwrap())
}

#[tokio::test]
async fn sqlite_suite() {
    suite(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_suite() {
    if let Some(t) = TestDb::postgres().await {
        suite(t).await;
    }
}

#[tokio::test]
async fn sqlite_refuses_a_newer_database() {
    newer_database_is_refused(TestDb::sqlite()).await;
}

#[tokio::test]
async fn postgres_refuses_a_newer_database() {
    if let Some(t) = TestDb::postgres().await {
        newer_database_is_refused(t).await;
    }
}

#[tokio::test]
async fn wrong_database_url_is_a_clear_error() {
    let db = Database::Postgres("postgres://nobody:wrong@127.0.0.1:1/none".into());
    let err = Store::open(&db).await.unwrap_err();
    assert!(err.is_unavailable());
    assert!(
        !err.to_string().contains("wrong"),
        "no password in errors: {err}"
    );
}

/// An unusable PostgreSQL is named once, with its cause, the way `psql` says
/// it: a port nothing listens on, a wrong password, a missing database.
#[tokio::test]
async fn unreachable_postgres_says_where_and_why() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let Database::Postgres(good) = &t.db else {
        panic!("not PostgreSQL")
    };
    let good = good.clone();
    let (_, after_scheme) = good.split_once("://").unwrap();
    let (userinfo, host_db) = after_scheme.rsplit_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let (hostport, _db) = host_db.split_once('/').unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases = [
        (
            format!("postgres://{user}:{password}@127.0.0.1:{closed_port}/berth"),
            format!("127.0.0.1:{closed_port}"),
            "connection refused",
        ),
        (
            format!("postgres://{user}:wrong-pw-x@{hostport}/postgres"),
            hostport.to_owned(),
            "password authentication failed",
        ),
        (
            format!("postgres://{user}:{password}@{hostport}/berth_no_such_db"),
            hostport.to_owned(),
            "database \"berth_no_such_db\" does not exist",
        ),
    ];
    for (url, at, cause) in cases {
        let started = std::time::Instant::now();
        let err = Store::open(&Database::Postgres(url)).await.unwrap_err();
        let e = err.to_string();
        assert!(err.is_unavailable(), "{e}");
        assert!(e.contains(&at) && e.contains(cause), "{cause}: {e}");
        assert_eq!(e.matches(cause).count(), 1, "said once: {e}");
        assert!(!e.contains("pool timed out"), "{e}");
        // (The test role's password equals its name, which the message names.)
        assert!(!e.contains("wrong-pw-x"), "no password: {e}");
        // Said at once, not after the pool's timeout.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{e}");
    }
    // The good URL still works.
    let store = Store::open(&t.db).await.unwrap();
    t.finish(store).await;
}
