//! What the machine-credential tests share (robots, access tokens, the audit
//! log, federated holdings, lockout, audit folding and erasure): the policy
//! they run under, a test server on a [`TestDb`] (SQLite, or PostgreSQL when
//! `BERTH_TEST_POSTGRES_URL` is set), the real `berth` CLI on the server's
//! database, request and assertion helpers, robots and tokens made the way the
//! CLI makes them, a secret-leak check, and `berth serve` logging JSON.

use std::time::Duration;

use berth::authn::machine::{new_secret, secret_hash, ACCESS_TOKEN_PREFIX, ROBOT_SECRET_PREFIX};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::common::cli::{berth, Cli};
pub use crate::common::db::TestDb;
use crate::common::proc::Out;
use crate::common::server::{BerthProcess, Serve};
use crate::support::{enc, now, uname, Opts, Resp, TestServer};

pub use crate::support::SVC;

/// Users own their namespace; alice may also write team-a/**; robots may write
/// ci/**, and robots in group `builders` may read base/**.
pub const POLICY: &str = r#"
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
pub const NO_THROTTLE: &str = "login_failure_limit = 1000";

// ---------------------------------------------------------------------------
// Databases and the CLI

/// Two tests of one scenario `async fn(TestDb)`: `$sqlite` on an SQLite file
/// and `$postgres` on a fresh PostgreSQL database (skipped with the reason
/// printed without `BERTH_TEST_POSTGRES_URL`, failed under `BERTH_E2E=require`).
macro_rules! on_both_databases {
    ($(#[$doc:meta])* $scenario:ident => $sqlite:ident, $postgres:ident) => {
        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $scenario($crate::common::db::TestDb::sqlite()).await;
        }

        $(#[$doc])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            if let Some(db) = $crate::common::db::TestDb::postgres(stringify!($postgres)) {
                $scenario(db).await;
            }
        }
    };
}
pub(crate) use on_both_databases;

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
pub fn ok(out: Out, what: &str) -> Out {
    assert!(out.success(), "{what} failed:\n{out}");
    out
}

/// The secret after `(shown once): ` in CLI output.
pub fn shown_once(out: &Out) -> String {
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
pub async fn granted(s: &TestServer, user: &str, secret: &str, scopes: &[&str]) -> Value {
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
pub fn actions(access: &Value, name: &str) -> Vec<String> {
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
pub fn refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: expected 401, got {}", r.text());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic")),
        "{what}: 401 without a Basic challenge: {:?}",
        r.headers
    );
}

pub async fn status_of(s: &TestServer, user: &str, secret: &str, scope: &str) -> Resp {
    s.get(&query(user, &[scope]), Some((user, secret))).await
}

/// Asserts what `GET /token` answers `user` with `secret` for `scope`: 200, or
/// 401 with a Basic challenge.
pub async fn expect(
    s: &TestServer,
    status: u16,
    user: &str,
    secret: &str,
    scope: &str,
    what: &str,
) {
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

/// Every text form a secret could be recorded in: itself, and its SHA-256 in
/// hex and base64.
pub fn leak_forms(secrets: &[String]) -> Vec<String> {
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
pub fn assert_no_leak(text: &str, forms: &[String], where_: &str) {
    for f in forms {
        assert!(
            !text.contains(f.as_str()),
            "{where_} holds a secret or its hash ({}…):\n{text}",
            &f[..8.min(f.len())]
        );
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
