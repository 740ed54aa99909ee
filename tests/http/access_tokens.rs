//! Personal access tokens over HTTP: the intersection of the owner's policy and
//! the token's limit, use by the owner only, no refresh tokens, `token list`
//! never showing a secret, the owner disabled and enabled, revocation and
//! expiry. Each runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use std::time::Duration;

use berth::authn::machine::ACCESS_TOKEN_PREFIX;

use crate::machine::{
    actions, add_token, cli_ok, expect, granted, on_both_databases, server, shown_once, TestDb,
    NO_THROTTLE, SVC,
};
use crate::support::{now, uname, TestServer};

/// `berth token create` for alice; returns the token.
async fn create(db: &TestDb, name: &str, limit: &str) -> String {
    let args = [
        "token", "create", "--user", "alice", "--name", name, "--limit", limit,
    ];
    let out = cli_ok(&db.url, &args).await;
    let token = shown_once(&out);
    assert!(token.starts_with(ACCESS_TOKEN_PREFIX), "{out}");
    token
}

/// A server with alice and bob, and two tokens of alice's made by the CLI:
/// `ci-pull` (pull on team-a/**) and `wide` (everything everywhere).
async fn with_tokens(db: &TestDb) -> (TestServer, String, String) {
    let s = server(db, NO_THROTTLE).await;
    s.add_user("alice", "alice-pw", &[]).await;
    s.add_user("bob", "bob-pw", &[]).await;
    let pat = create(db, "ci-pull", "repository:team-a/**:pull").await;
    let wide = create(db, "wide", "repository:**:pull,push,delete").await;
    (s, pat, wide)
}

const SCOPE: &str = "repository:team-a/app:pull";

/// The intersection of alice's policy (pull, push on team-a and alice) and the
/// limit (pull on team-a); the password is not limited, and a wide limit never
/// widens the policy.
async fn limit_meets_policy(db: TestDb) {
    let (s, pat, wide) = with_tokens(&db).await;
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
    let access = granted(&s, "alice", &wide, &scopes).await;
    assert_eq!(actions(&access, "team-a/app"), both, "{access}");
    assert_eq!(actions(&access, "alice/app"), both, "{access}");
    assert!(actions(&access, "bob/app").is_empty(), "{access}");
}

on_both_databases!(
    limit_meets_policy =>
    token_limit_meets_policy_sqlite,
    token_limit_meets_policy_postgres
);

/// A token is only for its owner, under the owner's exact name.
async fn owner_only(db: TestDb) {
    let (s, pat, _) = with_tokens(&db).await;
    let scope = SCOPE;
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
}

on_both_databases!(owner_only => token_owner_only_sqlite, token_owner_only_postgres);

/// No refresh token for a token login, by GET or by password grant.
async fn no_refresh_token(db: TestDb) {
    let (s, pat, _) = with_tokens(&db).await;
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
}

on_both_databases!(
    no_refresh_token =>
    token_no_refresh_token_sqlite,
    token_no_refresh_token_postgres
);

/// `token list`: names, dates and limits, never the secret; a use is recorded.
async fn listed(db: TestDb) {
    let (s, pat, _) = with_tokens(&db).await;
    expect(&s, 200, "alice", &pat, SCOPE, "a token sign-in").await;
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
}

on_both_databases!(listed => token_list_sqlite, token_list_postgres);

/// Owner disabled, then enabled again; revoked, while another token survives.
async fn disabled_and_revoked(db: TestDb) {
    let (s, pat, wide) = with_tokens(&db).await;
    let scope = SCOPE;
    cli_ok(&db.url, &["user", "disable", "alice"]).await;
    expect(&s, 401, "alice", &pat, scope, "token of a disabled owner").await;
    cli_ok(&db.url, &["user", "enable", "alice"]).await;
    expect(&s, 200, "alice", &pat, scope, "token after re-enabling").await;
    cli_ok(&db.url, &["token", "revoke", "--user", "alice", "ci-pull"]).await;
    expect(&s, 401, "alice", &pat, scope, "revoked token").await;
    expect(&s, 200, "alice", &wide, scope, "another token survives").await;
}

on_both_databases!(
    disabled_and_revoked =>
    token_disabled_and_revoked_sqlite,
    token_disabled_and_revoked_postgres
);

/// Expired: in the past, and passing while in use.
async fn expiry(db: TestDb) {
    let (s, _, _) = with_tokens(&db).await;
    let scope = SCOPE;
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

on_both_databases!(expiry => token_expiry_sqlite, token_expiry_postgres);
