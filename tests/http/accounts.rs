//! Account changes seen at once: the credential cache never hides a disabled,
//! regrouped, re-passworded or recreated account; imported bcrypt hashes verify
//! and are upgraded to argon2id.

use secrecy::SecretString;
use serde_json::json;

use crate::support::{entry, now, uname, Opts, TestServer, SVC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_cache_never_hides_account_changes() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let alice = Some(("alice", "wonderland"));
    let catalog = format!("service={SVC}&scope=registry:catalog:*");
    let store = s.store();

    assert_eq!(
        entry(&s.access(&catalog, alice).await, "catalog")["actions"],
        json!([])
    );
    s.get(&catalog, alice).await.ok();
    assert!(
        s.state.auth.cached_credentials() >= 1,
        "the cache should hold the login"
    );

    // Disabled from "another process": the very next request fails.
    store
        .set_disabled(&uname("alice"), true, now())
        .await
        .unwrap();
    let r = s.get(&catalog, alice).await;
    assert_eq!(
        r.status,
        401,
        "disabled user still served from cache: {}",
        r.text()
    );
    store
        .set_disabled(&uname("alice"), false, now())
        .await
        .unwrap();
    s.get(&catalog, alice).await.ok();

    // Groups take effect at the next request, both ways.
    store
        .set_groups(&uname("alice"), &["admins".to_owned()], now())
        .await
        .unwrap();
    assert_eq!(
        entry(&s.access(&catalog, alice).await, "catalog")["actions"],
        json!(["*"])
    );
    store.set_groups(&uname("alice"), &[], now()).await.unwrap();
    assert_eq!(
        entry(&s.access(&catalog, alice).await, "catalog")["actions"],
        json!([])
    );

    // A password change invalidates the cached old password.
    s.get(&catalog, alice).await.ok();
    let hash = berth::authn::password::hash(&SecretString::from("new-pw")).unwrap();
    store
        .set_password(&uname("alice"), &hash, now())
        .await
        .unwrap();
    assert_eq!(s.get(&catalog, alice).await.status, 401);
    s.get(&catalog, Some(("alice", "new-pw"))).await.ok();

    // Deleted and recreated with the same password: a new account, new groups.
    store.delete_user(&uname("alice")).await.unwrap();
    assert_eq!(s.get(&catalog, Some(("alice", "new-pw"))).await.status, 401);
    s.add_user("alice", "new-pw", &["admins"]).await;
    assert_eq!(
        entry(
            &s.access(&catalog, Some(("alice", "new-pw"))).await,
            "catalog"
        )["actions"],
        json!(["*"])
    );
}

// ---------------------------------------------------------------------------
// bcrypt import

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcrypt_hashes_verify_and_upgrade() {
    // No cache, so the second login checks the upgraded hash.
    let s = TestServer::start(Opts {
        cache_ttl: "0",
        ..Opts::default()
    })
    .await;
    let h2b = bcrypt::hash("pw-b", 4).unwrap();
    assert!(h2b.starts_with("$2b$"));
    let h2y = bcrypt::hash("pw-y", 4).unwrap().replacen("$2b$", "$2y$", 1);
    s.add_user_hash("bee", &h2b, &[]).await;
    s.add_user_hash("why", &h2y, &[]).await;
    let store = s.store();

    for (name, pw, old) in [("bee", "pw-b", &h2b), ("why", "pw-y", &h2y)] {
        // Wrong password: 401 and the hash is left alone.
        assert_eq!(s.get("", Some((name, "wrong"))).await.status, 401);
        assert_eq!(
            &store
                .find_user(&uname(name))
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            old
        );

        let access = s
            .access(
                &format!("service={SVC}&scope=repository:{name}/app:pull"),
                Some((name, pw)),
            )
            .await;
        assert_eq!(
            entry(&access, &format!("{name}/app"))["actions"],
            json!(["pull"])
        );
        let user = store.find_user(&uname(name)).await.unwrap().unwrap();
        assert!(
            user.password_hash.starts_with("$argon2id$"),
            "{name}: hash not upgraded: {}",
            &user.password_hash[..7]
        );
        // Same password still works against the new hash; a wrong one does not.
        s.get("", Some((name, pw))).await.ok();
        assert_eq!(s.get("", Some((name, "wrong"))).await.status, 401);
    }
}
