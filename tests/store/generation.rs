//! The authentication generation, moved by every change that can revoke
//! access.

use super::*;

/// Every change that can revoke access moves the authentication generation, in
/// the same transaction, whoever makes it; uses and unrelated writes do not.
pub async fn generation(store: &Store, db: &Database) {
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
        .insert_audit(&[super::audit::record(5, "gen-user", "", "", "issued")])
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
