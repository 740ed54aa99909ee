//! What federated (OIDC) users hold, listed and revoked from the CLI: `oidc
//! tokens` with its filters, `oidc revoke` by id, and `oidc revoke-user`. Each
//! runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use crate::machine::{cli, cli_ok, server, TestDb};
use crate::support::now;

async fn federated_holdings(db: TestDb) {
    use berth::store::oidc::{FederatedOwner, OidcSessionRecord, OidcTokenRecord};
    let s = server(&db, "").await;
    let store = s.store();
    let owner = |provider: &str, name: &str| FederatedOwner {
        provider: provider.into(),
        subject: format!("sub-{name}"),
        username: name.into(),
        groups: vec!["team-a".into()],
    };
    let t = now();
    let mut ids = Vec::new();
    for (i, (provider, name)) in [("kc", "frank"), ("gl", "frank"), ("kc", "gina")]
        .into_iter()
        .enumerate()
    {
        let rec = OidcTokenRecord {
            id: 0,
            owner: owner(provider, name),
            description: format!("laptop-{i}"),
            actions: vec!["pull".into(), "push".into()],
            limits: Vec::new(),
            idp_refresh: vec![0xAB; 48],
            created_at: t - 100 + i64::try_from(i).unwrap(),
            expires_at: t + 86_400,
            checked_at: t,
            last_used_at: None,
        };
        ids.push(
            store
                .insert_oidc_token(&[u8::try_from(i).unwrap(); 32], &rec)
                .await
                .unwrap(),
        );
    }
    for (i, name) in ["frank", "gina"].into_iter().enumerate() {
        let rec = OidcSessionRecord {
            owner: owner("kc", name),
            service: "registry.test".into(),
            idp_refresh: vec![0xCD; 48],
            created_at: t,
            last_used_at: t,
            checked_at: t,
            expires_at: t + 86_400,
        };
        store
            .insert_oidc_session(&[100 + u8::try_from(i).unwrap(); 32], &rec)
            .await
            .unwrap();
    }

    let all = cli_ok(&db.url, &["oidc", "tokens"]).await;
    let rows: Vec<&str> = all.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{all}");
    assert!(
        rows[0].starts_with(&ids[2].to_string()),
        "newest first:\n{all}"
    );
    assert!(rows.iter().all(|r| r.contains("pull,push")), "{all}");
    let one = cli_ok(
        &db.url,
        &["oidc", "tokens", "--provider", "kc", "--user", "frank"],
    )
    .await;
    let rows: Vec<&str> = one.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{one}");
    assert!(rows[0].contains("laptop-0"), "{one}");

    // Revoke by id; an unknown id is an error that names it.
    let id = ids[0].to_string();
    cli_ok(&db.url, &["oidc", "revoke", &id]).await;
    assert!(store.find_oidc_token(&[0u8; 32]).await.unwrap().is_none());
    let again = cli(&db.url, &["oidc", "revoke", &id]).run_async().await;
    assert!(!again.success() && again.stderr.contains(&id), "{again}");

    // Everything gina holds goes; frank keeps his.
    let out = cli_ok(
        &db.url,
        &["oidc", "revoke-user", "gina", "--provider", "kc"],
    )
    .await;
    assert!(out.stdout.contains("revoked 2 "), "{out}");
    assert!(store.find_oidc_token(&[2u8; 32]).await.unwrap().is_none());
    assert!(store
        .find_oidc_session(&[101u8; 32])
        .await
        .unwrap()
        .is_none());
    assert!(store
        .find_oidc_session(&[100u8; 32])
        .await
        .unwrap()
        .is_some());
    assert!(store.find_oidc_token(&[1u8; 32]).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_holdings_sqlite() {
    federated_holdings(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_holdings_postgres() {
    if let Some(db) = TestDb::postgres("federated_holdings_postgres") {
        federated_holdings(db).await;
    }
}
