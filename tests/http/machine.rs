//! Machine credentials and their bookkeeping over HTTP: robot accounts, personal
//! access tokens, the audit log and failed sign-in throttling. Each runs against
//! an SQLite file and, when `BERTH_TEST_POSTGRES_URL` is set, a fresh PostgreSQL
//! database. Robots and tokens are made the way the CLI makes them, and the CLI
//! itself (`robot`, `token`, `audit`, `user`) runs as the real binary on the
//! server's database.

use std::time::{Duration, Instant};

use berth::authn::machine::{new_secret, secret_hash, ACCESS_TOKEN_PREFIX, ROBOT_SECRET_PREFIX};
use berth::store::{AuditQuery, AuditRecord};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::common::cli::{berth, Cli};
pub use crate::common::db::TestDb;
use crate::common::proc::Out;
use crate::common::server::{BerthProcess, Serve};
use crate::support::{enc, now, uname, Opts, Resp, TestServer};

const SVC: &str = "registry.test";

/// Users own their namespace; alice may also write team-a/**; robots may write
/// ci/**, and robots in group `builders` may read base/**.
const POLICY: &str = r#"
[[rule]]
id = "own-namespace"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push"]

[[rule]]
id = "team-a-alice"
account = "alice"
type = "repository"
name = "team-a/**"
allow = ["pull", "push"]

[[rule]]
id = "ci-robots"
kind = "robot"
type = "repository"
name = "ci/**"
allow = ["pull", "push"]

[[rule]]
id = "builders-base"
kind = "robot"
group = "builders"
type = "repository"
name = "base/**"
allow = ["pull"]
"#;

/// Tests that make many failed sign-ins on purpose raise the limit (all
/// requests come from 127.0.0.1, which has one shared per-address counter).
const NO_THROTTLE: &str = "login_failure_limit = 1000";

// ---------------------------------------------------------------------------
// Databases and the CLI

pub async fn server(db: &TestDb, extra: &str) -> TestServer {
    TestServer::start(Opts {
        policy: Some(POLICY),
        database: Some(db.database()),
        extra: extra.to_owned(),
        ..Opts::default()
    })
    .await
}

/// The real `berth` binary with `BERTH_DATABASE=database` and `RUST_LOG=warn`,
/// from a temp dir.
pub fn cli(database: &str, args: &[&str]) -> Cli {
    berth(args).database(database).env("RUST_LOG", "warn")
}

#[track_caller]
fn ok(out: Out, what: &str) -> Out {
    assert!(out.success(), "{what} failed:\n{out}");
    out
}

/// The secret after `(shown once): ` in CLI output.
fn shown_once(out: &Out) -> String {
    out.stdout
        .lines()
        .find_map(|l| {
            l.split_once("(shown once): ")
                .map(|(_, s)| s.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no secret shown in:\n{out}"))
}

// ---------------------------------------------------------------------------
// Requests

/// The verified `access` claim of a 200 answer (panics on anything else).
async fn granted(s: &TestServer, user: &str, secret: &str, scopes: &[&str]) -> Value {
    let r = s.get(&query(user, scopes), Some((user, secret))).await;
    assert_eq!(r.status, 200, "{user} asking {scopes:?}: {}", r.text());
    let (_, claims) = s.verify(r.json()["token"].as_str().unwrap(), SVC).await;
    assert_eq!(claims["sub"], user);
    claims["access"].clone()
}

pub fn query(user: &str, scopes: &[&str]) -> String {
    let mut q = format!("service={SVC}&account={}", enc(user));
    for sc in scopes {
        q.push_str(&format!("&scope={}", enc(sc)));
    }
    q
}

/// Actions granted on `name`, from an `access` claim.
fn actions(access: &Value, name: &str) -> Vec<String> {
    access
        .as_array()
        .unwrap_or_else(|| panic!("access is not a list: {access}"))
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no entry for {name} in {access}"))["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: expected 401, got {}", r.text());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic")),
        "{what}: 401 without a Basic challenge: {:?}",
        r.headers
    );
}

async fn status_of(s: &TestServer, user: &str, secret: &str, scope: &str) -> Resp {
    s.get(&query(user, &[scope]), Some((user, secret))).await
}

/// Asserts what `GET /token` answers `user` with `secret` for `scope`: 200, or
/// 401 with a Basic challenge.
async fn expect(s: &TestServer, status: u16, user: &str, secret: &str, scope: &str, what: &str) {
    let r = status_of(s, user, secret, scope).await;
    if status == 401 {
        refused(&r, what);
    } else {
        assert_eq!(r.status, status, "{what}: {}", r.text());
    }
}

/// Runs the CLI on `db` and asserts it succeeded.
pub async fn cli_ok(db: &str, args: &[&str]) -> Out {
    ok(
        cli(db, args).run_async().await,
        &format!("berth {}", args.join(" ")),
    )
}

/// A robot made as `berth robot create` makes it; returns its secret.
pub async fn add_robot(
    s: &TestServer,
    name: &str,
    groups: &[&str],
    expires_at: Option<i64>,
) -> String {
    let (secret, hash) = new_secret(ROBOT_SECRET_PREFIX).unwrap();
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    s.store()
        .create_robot(name, &hash, &groups, "", expires_at, now() - 100)
        .await
        .unwrap();
    secret.expose_secret().to_owned()
}

/// A personal access token made through the store; returns it.
pub async fn add_token(s: &TestServer, name: &str, limit: &str, expires_at: i64) -> String {
    let (secret, hash) = new_secret(ACCESS_TOKEN_PREFIX).unwrap();
    s.store()
        .create_access_token(
            &uname("alice"),
            name,
            &hash,
            &[limit.to_owned()],
            Some(expires_at),
            now() - 100,
        )
        .await
        .unwrap();
    secret.expose_secret().to_owned()
}

// ---------------------------------------------------------------------------
// Robots

async fn robots(db: TestDb) {
    let s = server(&db, NO_THROTTLE).await;
    s.add_user("alice", "alice-pw", &["builders"]).await;
    let ci = add_robot(&s, "ci", &["builders"], None).await;
    assert!(ci.starts_with(ROBOT_SECRET_PREFIX));
    let scopes = [
        "repository:ci/app:pull,push",
        "repository:base/img:pull,push",
        "repository:alice/app:pull",
    ];
    let access = granted(&s, "robot$ci", &ci, &scopes).await;
    assert_eq!(actions(&access, "ci/app"), ["pull", "push"], "{access}");
    assert_eq!(actions(&access, "base/img"), ["pull"], "{access}");
    assert!(
        actions(&access, "alice/app").is_empty(),
        "a robot is no user: {access}"
    );
    // A user in the same group is not a robot: kind decides.
    let access = granted(&s, "alice", "alice-pw", &scopes).await;
    assert!(actions(&access, "ci/app").is_empty(), "{access}");
    assert!(actions(&access, "base/img").is_empty(), "{access}");
    let rec = s.store().find_robot("ci").await.unwrap().unwrap();
    assert!(rec.last_used_at.is_some(), "sign-in not recorded: {rec:?}");
    assert_eq!(rec.secret_hash, secret_hash(&ci), "stored as SHA-256");

    // Robots get no refresh token, by GET or by password grant.
    let q = format!("service={SVC}&offline_token=true");
    let j = s.get(&q, Some(("robot$ci", &ci))).await.ok();
    assert!(j.get("refresh_token").is_none(), "{j}");
    let r = s
        .post(&[
            ("grant_type", "password"),
            ("username", "robot$ci"),
            ("password", &ci),
            ("service", SVC),
            ("client_id", "ci"),
            ("access_type", "offline"),
            ("scope", "repository:ci/app:push"),
        ])
        .await;
    assert!(r.ok().get("refresh_token").is_none(), "{}", r.text());

    // Wrong secrets, and a secret used as another robot or as a user.
    let other = add_robot(&s, "other", &[], None).await;
    let scope = "repository:ci/app:pull";
    expect(
        &s,
        401,
        "robot$other",
        &ci,
        scope,
        "ci's secret as robot$other",
    )
    .await;
    expect(
        &s,
        401,
        "robot$ci",
        &other,
        scope,
        "other's secret as robot$ci",
    )
    .await;
    expect(
        &s,
        401,
        "alice",
        &ci,
        scope,
        "a robot secret as alice's password",
    )
    .await;
    expect(&s, 401, "ci", &ci, scope, "robot name without the prefix").await;
    expect(&s, 401, "robot$nosuch", &ci, scope, "unknown robot").await;
    for bad in [
        "robot$",
        "robot$../x",
        "robot$ci/../ci",
        "robot$CI",
        "robot$ci;id",
    ] {
        expect(&s, 401, bad, &ci, scope, bad).await;
    }
    expect(
        &s,
        200,
        "robot$other",
        &other,
        scope,
        "robot$other, own secret",
    )
    .await;

    // Expiry: in the past, and passing while the robot is in use.
    let old = add_robot(&s, "old", &[], Some(now() - 10)).await;
    expect(&s, 401, "robot$old", &old, scope, "expired robot").await;
    let soon = add_robot(&s, "soon", &[], Some(now() + 2)).await;
    expect(&s, 200, "robot$soon", &soon, scope, "robot before expiry").await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    expect(
        &s,
        401,
        "robot$soon",
        &soon,
        scope,
        "robot after its expiry passed",
    )
    .await;

    // Disabled, enabled, rotated, deleted.
    let store = s.store();
    store.set_robot_disabled("ci", true, now()).await.unwrap();
    expect(&s, 401, "robot$ci", &ci, scope, "disabled robot").await;
    store.set_robot_disabled("ci", false, now()).await.unwrap();
    expect(&s, 200, "robot$ci", &ci, scope, "re-enabled robot").await;
    let (new, new_hash) = new_secret(ROBOT_SECRET_PREFIX).unwrap();
    store
        .set_robot_secret("ci", &new_hash, now())
        .await
        .unwrap();
    let new = new.expose_secret();
    expect(&s, 401, "robot$ci", &ci, scope, "old secret after rotation").await;
    expect(&s, 200, "robot$ci", new, scope, "new secret after rotation").await;
    store.delete_robot("ci").await.unwrap();
    expect(&s, 401, "robot$ci", new, scope, "deleted robot").await;

    // The same through the real CLI, on the server's database.
    let out = cli_ok(
        &db.url,
        &[
            "robot",
            "create",
            "deploy",
            "--group",
            "builders",
            "--expires",
            "90d",
            "--description",
            "deploys",
        ],
    )
    .await;
    let deploy = shown_once(&out);
    assert!(out.stdout.contains("robot$deploy"), "{out}");
    let scope = "repository:base/x:pull";
    let access = granted(&s, "robot$deploy", &deploy, &[scope]).await;
    assert_eq!(actions(&access, "base/x"), ["pull"]);
    let listed = |out: Out| {
        assert!(
            !out.stdout.contains(ROBOT_SECRET_PREFIX),
            "robot list shows a secret:\n{out}"
        );
        out.stdout
            .lines()
            .find(|l| l.starts_with("robot$deploy "))
            .unwrap_or_else(|| panic!("robot$deploy not listed:\n{out}"))
            .to_owned()
    };
    let line = listed(cli_ok(&db.url, &["robot", "list"]).await);
    assert!(
        line.contains("active") && line.contains("builders"),
        "{line}"
    );
    let rotated = shown_once(&cli_ok(&db.url, &["robot", "rotate-secret", "deploy"]).await);
    expect(
        &s,
        401,
        "robot$deploy",
        &deploy,
        scope,
        "secret before `rotate-secret`",
    )
    .await;
    expect(
        &s,
        200,
        "robot$deploy",
        &rotated,
        scope,
        "secret from `rotate-secret`",
    )
    .await;
    cli_ok(&db.url, &["robot", "disable", "deploy"]).await;
    expect(
        &s,
        401,
        "robot$deploy",
        &rotated,
        scope,
        "robot disabled by the CLI",
    )
    .await;
    let line = listed(cli_ok(&db.url, &["robot", "list"]).await);
    assert!(line.contains("disabled"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_sqlite() {
    robots(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_postgres() {
    if let Some(db) = TestDb::postgres("robots_postgres") {
        robots(db).await;
    }
}

/// Names with path or shell metacharacters never reach the database: the CLI
/// refuses them with a message naming the problem and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_bad_robot_and_token_names() {
    let db = TestDb::sqlite();
    let db = db.url.as_str();
    let long = "a".repeat(65);
    for name in [
        "x;rm -rf /",
        "../x",
        "a/b",
        "$(id)",
        "`id`",
        "a b",
        "CI",
        "-x",
        "",
        "x\ny",
        long.as_str(),
    ] {
        for sub in [&["robot", "create"][..], &["robot", "rotate-secret"][..]] {
            let mut args = sub.to_vec();
            // `--` so a leading dash is a name, not an option.
            args.extend(["--", name]);
            let out = cli(db, &args).run_async().await;
            assert!(!out.success(), "berth {args:?} succeeded:\n{out}");
            assert!(
                out.stderr.contains("invalid robot name"),
                "berth {args:?}: no clear error:\n{out}"
            );
        }
    }
    for name in [
        "../x",
        "a/b",
        "x;rm -rf /",
        "$(id)",
        "a b",
        "",
        long.as_str(),
    ] {
        let out = cli(
            db,
            &[
                "token",
                "create",
                "--user",
                "alice",
                "--name",
                name,
                "--limit",
                "repository:a/**:pull",
            ],
        )
        .run_async()
        .await;
        assert!(
            !out.success(),
            "token create --name {name:?} succeeded:\n{out}"
        );
        assert!(
            out.stderr.contains("invalid token name"),
            "token create --name {name:?}: no clear error:\n{out}"
        );
    }
    let out = cli(
        db,
        &[
            "token",
            "create",
            "--user",
            "../alice",
            "--limit",
            "repository:a/**:pull",
        ],
    )
    .run_async()
    .await;
    assert!(
        !out.success() && out.stderr.contains("invalid username"),
        "{out}"
    );
    for limit in [
        "bogus",
        "repository:a/**",
        "repository:a/**:PULL",
        ":a:pull",
    ] {
        let out = cli(
            db,
            &["token", "create", "--user", "alice", "--limit", limit],
        )
        .run_async()
        .await;
        assert!(
            !out.success() && out.stderr.contains("limit"),
            "--limit {limit:?}:\n{out}"
        );
    }
    assert!(
        !std::path::Path::new(db).exists(),
        "a refused command touched the database"
    );
}

// ---------------------------------------------------------------------------
// Personal access tokens

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

// ---------------------------------------------------------------------------
// What federated users hold, seen and revoked from the CLI

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

// ---------------------------------------------------------------------------
// Audit log

/// Polls the audit table until it holds `n` rows (the writer batches off the
/// request path), at most 2 s.
async fn audit_rows(s: &TestServer, n: usize) -> Vec<AuditRecord> {
    let start = Instant::now();
    loop {
        let rows = s
            .store()
            .query_audit(&AuditQuery {
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        if rows.len() >= n || start.elapsed() > Duration::from_secs(2) {
            assert_eq!(
                rows.len(),
                n,
                "audit rows after {:?}: {rows:#?}",
                start.elapsed()
            );
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row<'a>(rows: &'a [AuditRecord], account: &str, requested: &str) -> &'a AuditRecord {
    rows.iter()
        .find(|r| r.account == account && r.requested == requested)
        .unwrap_or_else(|| panic!("no audit row for {account:?} asking {requested:?} in {rows:#?}"))
}

/// Every text form a secret could be recorded in: itself, and its SHA-256 in
/// hex and base64.
fn leak_forms(secrets: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let h = secret_hash(s);
        out.push(s.clone());
        out.push(data_encoding::HEXLOWER.encode(&h));
        out.push(data_encoding::BASE64.encode(&h));
        out.push(data_encoding::BASE64URL_NOPAD.encode(&h));
    }
    out
}

#[track_caller]
fn assert_no_leak(text: &str, forms: &[String], where_: &str) {
    for f in forms {
        assert!(
            !text.contains(f.as_str()),
            "{where_} holds a secret or its hash ({}…):\n{text}",
            &f[..8.min(f.len())]
        );
    }
}

async fn audit(db: TestDb) {
    let s = server(&db, NO_THROTTLE).await;
    s.add_user("alice", "alice-pw", &[]).await;
    let store = s.store();
    let (robot, hash) = new_secret(ROBOT_SECRET_PREFIX).unwrap();
    let robot = robot.expose_secret().to_owned();
    store
        .create_robot("ci", &hash, &[], "", None, now())
        .await
        .unwrap();
    let pat = shown_once(&ok(
        cli(
            &db.url,
            &[
                "token",
                "create",
                "--user",
                "alice",
                "--name",
                "t",
                "--limit",
                "repository:team-a/**:pull",
            ],
        )
        .run_async()
        .await,
        "berth token create",
    ));
    // An old decision, to check `--since`.
    store
        .insert_audit(&[AuditRecord {
            at: now() - 7200,
            request_id: "0123456789abcdef".into(),
            client: "192.0.2.1".into(),
            account: "alice".into(),
            kind: "user".into(),
            via: "local".into(),
            service: SVC.into(),
            requested: "repository:alice/old:pull".into(),
            granted: "repository:alice/old:pull".into(),
            denied: String::new(),
            rules: "own-namespace".into(),
            outcome: "issued".into(),
            error: String::new(),
            latency_us: 5,
            ..AuditRecord::default()
        }])
        .await
        .unwrap();

    let alice = Some(("alice", "alice-pw"));
    let mut tokens: Vec<String> = Vec::new();
    let mut keep = |r: Resp| {
        if let Some(t) = r.json()["token"].as_str() {
            tokens.push(t.to_owned());
        }
        if let Some(t) = r.json()["refresh_token"].as_str() {
            tokens.push(t.to_owned());
        }
        r
    };
    // 1 issued, 2 partial, 3 refused, 4 wrong password, 5 robot, 6 token,
    // 7 anonymous, 8 docker login + 9 refresh grant, 10 underscore repository.
    keep(
        s.get(&query("alice", &["repository:alice/app:pull,push"]), alice)
            .await,
    )
    .ok();
    keep(
        s.get(
            &query(
                "alice",
                &["repository:alice/app:pull", "repository:bob/app:pull,push"],
            ),
            alice,
        )
        .await,
    )
    .ok();
    keep(
        s.get(&query("alice", &["repository:bob/app:pull"]), alice)
            .await,
    )
    .ok();
    let r = s
        .get(
            &query("alice", &["repository:alice/secret:pull"]),
            Some(("alice", "wrong-Passw0rd")),
        )
        .await;
    refused(&r, "wrong password");
    keep(
        s.get(
            &query("robot$ci", &["repository:ci/app:push"]),
            Some(("robot$ci", &robot)),
        )
        .await,
    )
    .ok();
    keep(
        s.get(
            &query("alice", &["repository:team-a/app:pull,push"]),
            Some(("alice", &pat)),
        )
        .await,
    )
    .ok();
    keep(
        s.get(
            &format!("service={SVC}&scope=repository:alice/app:pull"),
            None,
        )
        .await,
    )
    .ok();
    let login = keep(
        s.get(
            &format!("account=alice&client_id=docker&offline_token=true&service={SVC}"),
            alice,
        )
        .await,
    );
    let refresh = login.json()["refresh_token"].as_str().unwrap().to_owned();
    keep(
        s.post(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "docker"),
            ("service", SVC),
            ("scope", "repository:alice/app:pull"),
        ])
        .await,
    )
    .ok();
    keep(
        s.get(&query("alice", &["repository:alice/my_app:pull"]), alice)
            .await,
    )
    .ok();

    let rows = audit_rows(&s, 11).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), rows.len(), "request ids repeat: {rows:#?}");
    for r in rows.iter().filter(|r| r.at > now() - 600) {
        assert!(
            r.request_id.len() == 16 && r.request_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r:?}"
        );
        assert_eq!(r.client, "127.0.0.1", "{r:?}");
        assert_eq!(r.service, SVC, "{r:?}");
        assert!(r.latency_us > 0, "{r:?}");
    }
    let r = row(&rows, "alice", "repository:alice/app:pull,push");
    assert_eq!(
        (r.kind.as_str(), r.via.as_str(), r.outcome.as_str()),
        ("user", "local", "issued")
    );
    assert_eq!(r.granted, "repository:alice/app:pull,push");
    assert_eq!((r.denied.as_str(), r.rules.as_str()), ("", "own-namespace"));
    let r = row(
        &rows,
        "alice",
        "repository:alice/app:pull repository:bob/app:pull,push",
    );
    assert_eq!(r.granted, "repository:alice/app:pull", "{r:?}");
    assert_eq!(r.denied, "repository:bob/app:pull,push", "{r:?}");
    assert_eq!(r.outcome, "issued", "partial access is not an error: {r:?}");
    let r = row(&rows, "alice", "repository:bob/app:pull");
    assert_eq!(
        (r.granted.as_str(), r.denied.as_str(), r.rules.as_str()),
        ("", "repository:bob/app:pull", ""),
        "{r:?}"
    );
    let failed: Vec<_> = rows.iter().filter(|r| r.outcome != "issued").collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let r = failed[0];
    assert_eq!(r.account, "alice", "the claimed account: {r:?}");
    assert_eq!(r.outcome, "invalid_grant", "{r:?}");
    assert!(r.granted.is_empty() && r.kind.is_empty(), "{r:?}");
    assert!(r.error.contains("invalid username or password"), "{r:?}");
    let r = row(&rows, "robot$ci", "repository:ci/app:push");
    assert_eq!(
        (
            r.kind.as_str(),
            r.via.as_str(),
            r.granted.as_str(),
            r.rules.as_str()
        ),
        ("robot", "robot", "repository:ci/app:push", "ci-robots"),
        "{r:?}"
    );
    let r = row(&rows, "alice", "repository:team-a/app:pull,push");
    assert_eq!(
        (r.kind.as_str(), r.via.as_str()),
        ("user", "token"),
        "{r:?}"
    );
    assert_eq!(
        (r.granted.as_str(), r.denied.as_str()),
        ("repository:team-a/app:pull", "repository:team-a/app:push"),
        "the token's limit refused push: {r:?}"
    );
    let r = row(&rows, "", "repository:alice/app:pull");
    assert_eq!(
        (r.kind.as_str(), r.granted.as_str(), r.denied.as_str()),
        ("anonymous", "", "repository:alice/app:pull"),
        "{r:?}"
    );
    let r = row(&rows, "alice", "repository:alice/app:pull");
    assert_eq!(r.via, "refresh", "{r:?}");
    assert_eq!(row(&rows, "alice", "").outcome, "issued");

    let forms = leak_forms(
        &[
            vec![
                "alice-pw".to_owned(),
                "wrong-Passw0rd".to_owned(),
                robot.clone(),
                pat.clone(),
            ],
            tokens,
        ]
        .concat(),
    );
    for r in &rows {
        assert_no_leak(&serde_json::to_string(r).unwrap(), &forms, "an audit row");
    }

    // `berth audit`, the real binary on the same database.
    let query_cli = |args: &'static [&'static str]| {
        let url = db.url.clone();
        async move {
            let mut all = vec!["audit", "--json"];
            all.extend(args);
            let out = ok(cli(&url, &all).run_async().await, &format!("berth {all:?}"));
            out.stdout
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<Value>>()
        }
    };
    let all = query_cli(&[]).await;
    assert_eq!(all.len(), 11, "{all:#?}");
    assert_no_leak(&format!("{all:?}"), &forms, "berth audit --json");
    let mine = query_cli(&["--user", "alice"]).await;
    assert_eq!(mine.len(), 9, "{mine:#?}");
    assert!(mine.iter().all(|r| r["account"] == "alice"));
    let recent = query_cli(&["--user", "alice", "--since", "1h"]).await;
    assert_eq!(
        recent.len(),
        8,
        "--since 1h leaves out the old row: {recent:#?}"
    );
    assert!(recent
        .iter()
        .all(|r| r["requested"] != "repository:alice/old:pull"));
    let denied = query_cli(&["--denied"]).await;
    let mut got: Vec<String> = denied
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["account"].as_str().unwrap(),
                r["requested"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            " repository:alice/app:pull",
            "alice repository:alice/app:pull repository:bob/app:pull,push",
            "alice repository:alice/secret:pull",
            "alice repository:bob/app:pull",
            "alice repository:team-a/app:pull,push",
        ],
        "--denied: refusals, partial grants and the failed sign-in: {denied:#?}"
    );
    assert!(denied.iter().any(|r| r["outcome"] == "invalid_grant"));
    let bob = query_cli(&["--repo", "bob/app"]).await;
    assert_eq!(bob.len(), 2, "--repo bob/app: {bob:#?}");
    assert!(bob
        .iter()
        .all(|r| r["requested"].as_str().unwrap().contains(":bob/app:")));
    let none = query_cli(&["--repo", "bob"]).await;
    assert!(
        none.is_empty(),
        "--repo is a repository, not a substring: {none:#?}"
    );
    let underscore = query_cli(&["--repo", "alice/my_app"]).await;
    assert_eq!(
        underscore.len(),
        1,
        "--repo alice/my_app (repository names may hold '_'): {underscore:#?}"
    );
    let text = ok(
        cli(&db.url, &["audit", "--user", "robot$ci"])
            .run_async()
            .await,
        "berth audit",
    );
    let robot_row = row(&rows, "robot$ci", "repository:ci/app:push");
    assert!(
        text.stdout.contains(&robot_row.request_id) && text.stdout.lines().count() == 1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_sqlite() {
    audit(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_postgres() {
    if let Some(db) = TestDb::postgres("audit_log_postgres") {
        audit(db).await;
    }
}

// ---------------------------------------------------------------------------
// What `berth serve` logs

/// `berth serve` as a child process with [`POLICY`], logging JSON at debug
/// level: everything berth and its libraries say, not only the default.
pub(crate) fn serve_debug_json(admin_pw: &str) -> BerthProcess {
    Serve::new(SVC, "berth-test", admin_pw)
        .policy(POLICY)
        .env("BERTH_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .start()
}

/// What the server logged (stderr) and printed (stdout).
pub(crate) fn logs(srv: &BerthProcess) -> String {
    format!("{}{}", srv.log(), srv.stdout())
}

/// SIGTERM and wait, so every log line is written.
#[track_caller]
pub(crate) fn stop(srv: &mut BerthProcess) {
    assert!(
        srv.stop(Duration::from_secs(15)).is_some(),
        "berth serve still runs 15 s after SIGTERM:\n{}",
        srv.log_tail(40)
    );
}

/// No password, robot secret, access token, refresh token or issued token (nor
/// a hash of one) appears in what `berth serve` logs at debug level, nor in the
/// audit rows; every decision's log line carries the request id of its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_and_audit_hold_no_secrets() {
    let admin_pw = "Admin-Secret-4711";
    let mut srv = serve_debug_json(admin_pw);
    let db = srv.setting("BERTH_DATABASE").unwrap().to_owned();
    ok(
        cli(&db, &["user", "add", "alice", "--password-stdin"])
            .stdin("Alice-Secret-0815\n")
            .run_async()
            .await,
        "berth user add",
    );
    let robot = shown_once(&ok(
        cli(&db, &["robot", "create", "ci"]).run_async().await,
        "berth robot create",
    ));
    let pat = shown_once(&ok(
        cli(
            &db,
            &[
                "token",
                "create",
                "--user",
                "alice",
                "--limit",
                "repository:team-a/**:pull",
            ],
        )
        .run_async()
        .await,
        "berth token create",
    ));
    let c = reqwest::Client::new();
    let url = srv.realm();
    let mut secrets = vec![
        admin_pw.to_owned(),
        "Alice-Secret-0815".to_owned(),
        "Wrong-Secret-1234".to_owned(),
        robot.clone(),
        pat.clone(),
    ];
    let basic: Vec<(&str, &str, &str)> = vec![
        (
            "alice",
            "Alice-Secret-0815",
            "repository:alice/app:pull,push",
        ),
        ("alice", "Wrong-Secret-1234", "repository:alice/app:pull"),
        ("robot$ci", &robot, "repository:ci/app:push"),
        ("robot$nope", &robot, "repository:ci/app:push"),
        ("alice", &pat, "repository:team-a/app:pull,push"),
        ("admin", &pat, "repository:team-a/app:pull"),
        ("admin", admin_pw, "registry:catalog:*"),
    ];
    for (user, pw, scope) in &basic {
        let r = c
            .get(&url)
            .query(&[
                ("service", SVC),
                ("scope", scope),
                ("offline_token", "true"),
            ])
            .basic_auth(user, Some(pw))
            .send()
            .await
            .unwrap();
        let j: Value = r.json().await.unwrap_or(Value::Null);
        for k in ["token", "refresh_token"] {
            if let Some(t) = j[k].as_str() {
                secrets.push(t.to_owned());
            }
        }
    }
    let refresh = secrets.last().unwrap().clone();
    for (grant, secret) in [
        ("refresh_token", refresh.as_str()),
        ("password", "Wrong-Secret-5678"),
    ] {
        secrets.push(secret.to_owned());
        let r = c
            .post(&url)
            .form(&[
                ("grant_type", grant),
                ("refresh_token", secret),
                ("username", "alice"),
                ("password", secret),
                ("service", SVC),
                ("client_id", "docker"),
                ("scope", "repository:alice/app:pull"),
            ])
            .send()
            .await
            .unwrap();
        let j: Value = r.json().await.unwrap_or(Value::Null);
        if let Some(t) = j["token"].as_str() {
            secrets.push(t.to_owned());
        }
    }
    let n = basic.len() + 2;
    let start = Instant::now();
    let rows = loop {
        let out = ok(
            cli(&db, &["audit", "--json"]).run_async().await,
            "berth audit",
        );
        let rows: Vec<Value> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if rows.len() >= n || start.elapsed() > Duration::from_secs(2) {
            assert_eq!(rows.len(), n, "audit rows: {rows:#?}");
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop(&mut srv);
    let logs = logs(&srv);
    let forms = leak_forms(&secrets);
    assert_no_leak(&logs, &forms, "berth serve's log");
    assert_no_leak(&format!("{rows:?}"), &forms, "the audit log");
    let decisions: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "berth::decision")
        .collect();
    assert_eq!(decisions.len(), n, "decision log lines:\n{logs}");
    for r in &rows {
        let line = decisions
            .iter()
            .find(|d| d["request_id"] == r["request_id"])
            .unwrap_or_else(|| panic!("no log line for audit row {r}:\n{logs}"));
        for k in [
            "account",
            "outcome",
            "requested",
            "granted",
            "denied",
            "via",
            "kind",
        ] {
            assert_eq!(line[k], r[k], "{k}: log {line} vs row {r}");
        }
    }
}
