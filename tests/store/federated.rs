//! Federated sessions, sign-in page tokens and browser flows on both
//! databases.

use super::*;

/// Federated sessions and sign-in page tokens: stored, found, updated, listed,
/// owned, purged and revoked alike on both databases.
pub async fn federated(store: &Store) {
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
pub async fn browser_flows(store: &Store) {
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
