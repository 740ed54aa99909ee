//! Users, refresh tokens (and their per-user cap), robots and access tokens:
//! made, found, updated, listed and revoked alike on both databases.

use super::*;

pub async fn users_and_refresh_tokens(store: &Store) {
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

pub async fn robots(store: &Store) {
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

pub async fn access_tokens(store: &Store) {
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

/// A user's refresh tokens are capped: the newest one revokes the oldest.
pub async fn refresh_cap(store: &Store) {
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
