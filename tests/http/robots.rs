//! Robot accounts over HTTP: what their kind grants, no refresh tokens, wrong
//! or borrowed secrets, expiry, disabling, rotation and deletion through the
//! store and through the real CLI; and the CLI refusing bad robot and token
//! names. Each runs on SQLite and, with `BERTH_TEST_POSTGRES_URL`, PostgreSQL.

use std::time::Duration;

use berth::authn::machine::{new_secret, secret_hash, ROBOT_SECRET_PREFIX};
use secrecy::ExposeSecret;

use crate::common::proc::Out;
use crate::machine::{
    actions, add_robot, cli, cli_ok, expect, granted, on_both_databases, server, shown_once,
    TestDb, NO_THROTTLE, SVC,
};
use crate::support::{now, TestServer};

/// A server with alice (group `builders`) and robot `ci` (also in
/// `builders`); returns the server and ci's secret.
async fn with_ci(db: &TestDb) -> (TestServer, String) {
    let s = server(db, NO_THROTTLE).await;
    s.add_user("alice", "alice-pw", &["builders"]).await;
    let ci = add_robot(&s, "ci", &["builders"], None).await;
    assert!(ci.starts_with(ROBOT_SECRET_PREFIX));
    (s, ci)
}

/// Policy rules for robots apply to robots only, whatever the groups; a
/// sign-in is recorded and the secret is stored as its SHA-256.
async fn kind_decides(db: TestDb) {
    let (s, ci) = with_ci(&db).await;
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
}

on_both_databases!(kind_decides => robot_kind_decides_sqlite, robot_kind_decides_postgres);

/// Robots get no refresh token, by GET or by password grant.
async fn no_refresh_token(db: TestDb) {
    let (s, ci) = with_ci(&db).await;
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
}

on_both_databases!(
    no_refresh_token =>
    robot_no_refresh_token_sqlite,
    robot_no_refresh_token_postgres
);

/// Wrong secrets, and a secret used as another robot or as a user.
async fn borrowed_secrets(db: TestDb) {
    let (s, ci) = with_ci(&db).await;
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
}

on_both_databases!(
    borrowed_secrets =>
    robot_borrowed_secrets_sqlite,
    robot_borrowed_secrets_postgres
);

/// Expiry: in the past, and passing while the robot is in use.
async fn expiry(db: TestDb) {
    let (s, _) = with_ci(&db).await;
    let scope = "repository:ci/app:pull";
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
}

on_both_databases!(expiry => robot_expiry_sqlite, robot_expiry_postgres);

/// Disabled, enabled, rotated, deleted through the store.
async fn lifecycle(db: TestDb) {
    let (s, ci) = with_ci(&db).await;
    let scope = "repository:ci/app:pull";
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
}

on_both_databases!(lifecycle => robot_lifecycle_sqlite, robot_lifecycle_postgres);

/// Created, listed, rotated and disabled through the real CLI, on the
/// server's database.
async fn lifecycle_in_cli(db: TestDb) {
    let (s, _) = with_ci(&db).await;
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

on_both_databases!(lifecycle_in_cli => robot_cli_lifecycle_sqlite, robot_cli_lifecycle_postgres);

/// Asserts that a refused command left no database behind.
#[track_caller]
fn untouched(db: &str) {
    assert!(
        !std::path::Path::new(db).exists(),
        "a refused command touched the database"
    );
}

/// Robot names with path or shell metacharacters never reach the database:
/// the CLI refuses them with a message naming the problem and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_bad_robot_names() {
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
    untouched(db);
}

/// Token names likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_bad_token_names() {
    let db = TestDb::sqlite();
    let db = db.url.as_str();
    let long = "a".repeat(65);
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
    untouched(db);
}

/// A bad owner name or token limit likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_bad_token_owners_and_limits() {
    let db = TestDb::sqlite();
    let db = db.url.as_str();
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
    untouched(db);
}
