//! Personal access tokens over HTTP: the intersection of the owner's policy and
//! the token's limit, use by the owner only, no refresh tokens, `token list`
//! never showing a secret, the owner disabled and enabled, revocation and
//! expiry. Each runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use std::time::Duration;

use berth::authn::machine::ACCESS_TOKEN_PREFIX;

use crate::machine::{
    actions, add_token, cli_ok, expect, granted, server, shown_once, TestDb, NO_THROTTLE, SVC,
};
use crate::support::{now, uname};

async fn access_tokens(db: TestDb) {
    let s = server(&db, NO_THROTTLE).await;
    s.add_user("alice", "alice-pw", &[]).await;
    s.add_user("bob", "bob-pw", &[]).await;
    let create = |name: &'static str, limit: &'static str| {
        let url = db.url.clone();
        async move {
            let args = [
                "token", "create", "--user", "alice", "--name", name, "--limit", limit,
            ];
            let out = cli_ok(&url, &args).await;
            let token = shown_once(&out);
            assert!(token.starts_with(ACCESS_TOKEN_PREFIX), "{out}");
            token
        }
    };
    let pat = create("ci-pull", "repository:team-a/**:pull").await;

    // The intersection of alice's policy (pull, push on team-a and alice) and the
    // limit (pull on team-a).
    let scopes = [
        "repository:team-a/app:pull,push",
        "repository:alice/app:pull,push",
        "repository:team-b/app:pull",
        "repository:bob/app:pull",
    ];
    let access = granted(&s, "alice", &pat, &scopes).await;
    assert_eq!(actions(&access, "team-a/app"), ["pull"], "{access}");
    for name in ["alice/app", "team-b/app", "bob/app"] {
        assert!(actions(&access, name).is_empty(), "{name}: {access}");
    }
    let access = granted(&s, "alice", "alice-pw", &scopes).await;
    let both = ["pull", "push"];
    assert_eq!(
        actions(&access, "team-a/app"),
        both,
        "the password is not limited: {access}"
    );
    // A wide limit never widens the policy.
    let wide = create("wide", "repository:**:pull,push,delete").await;
    let access = granted(&s, "alice", &wide, &scopes).await;
    assert_eq!(actions(&access, "team-a/app"), both, "{access}");
    assert_eq!(actions(&access, "alice/app"), both, "{access}");
    assert!(actions(&access, "bob/app").is_empty(), "{access}");

    // Only for its owner, under the owner's exact name.
    let scope = "repository:team-a/app:pull";
    for user in ["bob", "Alice", "alice ", "robot$alice"] {
        expect(
            &s,
            401,
            user,
            &pat,
            scope,
            &format!("alice's token as {user:?}"),
        )
        .await;
    }
    expect(
        &s,
        401,
        "alice",
        &format!("{pat}x"),
        scope,
        "one character more",
    )
    .await;
    expect(
        &s,
        401,
        "alice",
        ACCESS_TOKEN_PREFIX,
        scope,
        "the bare prefix",
    )
    .await;

    // No refresh token for a token login, by GET or by password grant.
    let q = format!("account=alice&client_id=docker&offline_token=true&service={SVC}");
    let j = s.get(&q, Some(("alice", &pat))).await.ok();
    assert!(
        j.get("refresh_token").is_none(),
        "a token login got a refresh token: {j}"
    );
    let r = s
        .post(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", &pat),
            ("service", SVC),
            ("client_id", "docker"),
            ("access_type", "offline"),
            ("scope", "repository:team-a/app:pull,push"),
        ])
        .await;
    let j = r.ok();
    assert!(j.get("refresh_token").is_none(), "{j}");
    let (_, claims) = s.verify(j["token"].as_str().unwrap(), SVC).await;
    assert_eq!(actions(&claims["access"], "team-a/app"), ["pull"]);

    // `token list`: names, dates and limits, never the secret.
    let out = cli_ok(&db.url, &["token", "list", "--user", "alice"]).await;
    let body = pat.trim_start_matches(ACCESS_TOKEN_PREFIX);
    assert!(
        !out.stdout.contains(body) && !out.stdout.contains(ACCESS_TOKEN_PREFIX),
        "token list shows a secret:\n{out}"
    );
    let line = out.stdout.lines().find(|l| l.starts_with("ci-pull "));
    let line = line.unwrap_or_else(|| panic!("ci-pull not listed:\n{out}"));
    assert!(line.contains("repository:team-a/**:pull"), "{line}");
    let listed = s.store().list_access_tokens(&uname("alice")).await.unwrap();
    let rec = listed.iter().find(|t| t.name == "ci-pull").unwrap();
    assert!(rec.last_used_at.is_some(), "use not recorded: {rec:?}");

    // Owner disabled, then enabled again; revoked.
    cli_ok(&db.url, &["user", "disable", "alice"]).await;
    expect(&s, 401, "alice", &pat, scope, "token of a disabled owner").await;
    cli_ok(&db.url, &["user", "enable", "alice"]).await;
    expect(&s, 200, "alice", &pat, scope, "token after re-enabling").await;
    cli_ok(&db.url, &["token", "revoke", "--user", "alice", "ci-pull"]).await;
    expect(&s, 401, "alice", &pat, scope, "revoked token").await;
    expect(&s, 200, "alice", &wide, scope, "another token survives").await;

    // Expired (in the past, and passing while in use).
    let limit = "repository:team-a/**:pull";
    let old = add_token(&s, "old", limit, now() - 1).await;
    expect(&s, 401, "alice", &old, scope, "expired token").await;
    let soon = add_token(&s, "soon", limit, now() + 2).await;
    expect(&s, 200, "alice", &soon, scope, "token before expiry").await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    expect(
        &s,
        401,
        "alice",
        &soon,
        scope,
        "token after its expiry passed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_sqlite() {
    access_tokens(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_postgres() {
    if let Some(db) = TestDb::postgres("access_tokens_postgres") {
        access_tokens(db).await;
    }
}
