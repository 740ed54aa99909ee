//! `GET /token`, docker's flow: the response's shape and the refresh token of
//! a login, scopes and partial grants, `*` and the catalog, anonymous access,
//! a custom policy, and bad credentials answered 401 with a Basic challenge.

use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::support::{entry, now, refresh_of, uname, Opts, TestServer, ADMIN_PW, SVC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_login_and_response_shape() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let alice = Some(("alice", "wonderland"));

    // docker login: no scope, offline_token=true → refresh token.
    let r = s
        .get(
            &format!("account=alice&client_id=docker&offline_token=true&service={SVC}"),
            alice,
        )
        .await;
    let j = r.ok();
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    assert!(j["token"].is_string());
    assert_eq!(j["token"], j["access_token"]);
    assert_eq!(j["expires_in"], 300);
    let issued = time::OffsetDateTime::parse(j["issued_at"].as_str().unwrap(), &Rfc3339)
        .expect("RFC 3339 issued_at");
    assert!((issued.unix_timestamp() - now()).abs() < 30);
    assert!(!refresh_of(&r).is_empty());
    let (_, claims) = s.verify(j["token"].as_str().unwrap(), SVC).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["access"], json!([]));

    // Without offline_token (or with anything but true) → no refresh token.
    for q in [
        format!("account=alice&service={SVC}"),
        format!("account=alice&service={SVC}&offline_token=false"),
    ] {
        let j = s.get(&q, alice).await.ok();
        assert!(j.get("refresh_token").is_none(), "{q}: {j}");
        assert!(j["expires_in"].as_u64().unwrap() >= 60);
    }

    // Default service when none is named; account may be omitted.
    let access = s.access("scope=repository:alice/app:pull", alice).await;
    assert_eq!(
        access,
        json!([{"type":"repository","name":"alice/app","actions":["pull"]}])
    );

    // account must be the authenticated user.
    let r = s.get(&format!("account=bob&service={SVC}"), alice).await;
    r.err(400, "invalid_request");
    let r = s
        .get(
            &format!("account=admin&service={SVC}&scope=registry:catalog:*"),
            alice,
        )
        .await;
    r.err(400, "invalid_request");

    // Unknown service → 400, authenticated or not.
    s.get("service=nope.test", alice)
        .await
        .err(400, "invalid_request");
    s.get("service=nope.test&scope=repository:a/b:pull", None)
        .await
        .err(400, "invalid_request");
}

/// A default server with alice.
async fn with_alice() -> TestServer {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    s
}

const ALICE: Option<(&str, &str)> = Some(("alice", "wonderland"));
const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_PW));

/// Repeated scope; a partial grant is the intersection, never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_partial_grants() {
    let s = with_alice().await;
    let alice = ALICE;
    let access = s
        .access(
            &format!("account=alice&service={SVC}&scope=repository:alice/app:pull,push&scope=repository:bob/app:pull"),
            alice,
        )
        .await;
    assert_eq!(access.as_array().unwrap().len(), 2, "{access}");
    assert_eq!(
        entry(&access, "alice/app")["actions"],
        json!(["pull", "push"])
    );
    assert_eq!(entry(&access, "bob/app")["type"], "repository");
    assert_eq!(entry(&access, "bob/app")["actions"], json!([]));
}

/// Actions come back sorted; the same repository twice is merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_actions_sorted_and_merged() {
    let s = with_alice().await;
    let alice = ALICE;
    let access = s
        .access(
            &format!("service={SVC}&scope=repository:alice/x/y:push,delete&scope=repository:alice/x/y:pull"),
            alice,
        )
        .await;
    assert_eq!(
        access,
        json!([{"type":"repository","name":"alice/x/y","actions":["delete","pull","push"]}])
    );
}

/// `*` only when requested, and only to whom it is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_star_only_when_requested() {
    let s = with_alice().await;
    let (alice, admin) = (ALICE, ADMIN);
    let access = s
        .access(
            &format!("service={SVC}&scope=repository:bob/app:pull"),
            admin,
        )
        .await;
    assert_eq!(entry(&access, "bob/app")["actions"], json!(["pull"]));
    let access = s
        .access(&format!("service={SVC}&scope=repository:bob/app:*"), admin)
        .await;
    assert_eq!(entry(&access, "bob/app")["actions"], json!(["*"]));
    // A user allowed pull/push/delete but not `*` does not get `*`.
    let access = s
        .access(
            &format!("service={SVC}&scope=repository:alice/app:*"),
            alice,
        )
        .await;
    assert_eq!(entry(&access, "alice/app")["actions"], json!([]));
}

/// The catalog: admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_catalog_for_admins_only() {
    let s = with_alice().await;
    let (alice, admin) = (ALICE, ADMIN);
    let access = s
        .access(&format!("service={SVC}&scope=registry:catalog:*"), admin)
        .await;
    assert_eq!(
        access,
        json!([{"type":"registry","name":"catalog","actions":["*"]}])
    );
    let access = s
        .access(&format!("service={SVC}&scope=registry:catalog:*"), alice)
        .await;
    assert_eq!(
        access,
        json!([{"type":"registry","name":"catalog","actions":[]}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_scope_with_host_and_port() {
    let s = with_alice().await;
    let admin = ADMIN;
    // Scope with a host:port prefix component parses (split on first and last colon).
    let access = s
        .access(
            &format!("service={SVC}&scope=repository:localhost:5000/alice/app:pull"),
            admin,
        )
        .await;
    assert_eq!(
        entry(&access, "localhost:5000/alice/app")["actions"],
        json!(["pull"])
    );
}

/// Anonymous: 200, nothing granted under the default policy, no refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_anonymous() {
    let s = with_alice().await;
    let r = s
        .get(
            &format!("service={SVC}&offline_token=true&scope=repository:alice/app:pull"),
            None,
        )
        .await;
    let j = r.ok();
    assert!(j.get("refresh_token").is_none(), "{j}");
    let (_, claims) = s.verify(j["token"].as_str().unwrap(), SVC).await;
    assert_eq!(
        claims["access"],
        json!([{"type":"repository","name":"alice/app","actions":[]}])
    );
    assert_eq!(claims["sub"], "");
    // Anonymous with no scope at all.
    let access = s.access(&format!("service={SVC}"), None).await;
    assert_eq!(access, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policy_anonymous_pull() {
    const POLICY: &str = r#"
[[rule]]
id = "public-pull"
kind = "anonymous"
type = "repository"
name = "public/**"
allow = ["pull"]

[[rule]]
id = "team"
group = "team-*"
type = "repository"
name = "team/**"
allow = ["pull", "push"]
deny = ["delete"]
"#;
    let s = TestServer::start(Opts {
        policy: Some(POLICY),
        ..Opts::default()
    })
    .await;
    s.add_user("carol", "pw-carol", &["team-a"]).await;
    let access = s
        .access(
            &format!("service={SVC}&scope=repository:public/img:pull,push"),
            None,
        )
        .await;
    assert_eq!(
        access,
        json!([{"type":"repository","name":"public/img","actions":["pull"]}])
    );
    let access = s
        .access(
            &format!("service={SVC}&scope=repository:team/app:pull,push,delete&scope=repository:public/img:pull"),
            Some(("carol", "pw-carol")),
        )
        .await;
    assert_eq!(
        entry(&access, "team/app")["actions"],
        json!(["pull", "push"])
    );
    // The anonymous rule does not apply to users.
    assert_eq!(entry(&access, "public/img")["actions"], json!([]));
}

// ---------------------------------------------------------------------------
// Bad credentials

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_401_with_basic_challenge() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    s.add_user("dave", "pw-dave", &[]).await;
    s.store()
        .set_disabled(&uname("dave"), true, now())
        .await
        .unwrap();

    let q = format!("service={SVC}&scope=repository:alice/app:pull");
    let wrong = s.get(&q, Some(("alice", "nope"))).await;
    let unknown = s.get(&q, Some(("mallory", "nope"))).await;
    let disabled = s.get(&q, Some(("dave", "pw-dave"))).await;
    let empty_pw = s.get(&q, Some(("alice", ""))).await;
    for (what, r) in [
        ("wrong", &wrong),
        ("unknown", &unknown),
        ("disabled", &disabled),
        ("empty", &empty_pw),
    ] {
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        let challenge = r
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{what}: no challenge"));
        assert!(challenge.starts_with("Basic realm="), "{what}: {challenge}");
        assert!(r.json()["error"].is_string(), "{what}: {}", r.text());
        assert!(r.json().get("token").is_none());
    }
    // Same answer whether or not the account exists, or is disabled.
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, disabled.body);

    // POST password grant, wrong password: an error, never a token.
    let r = s
        .post(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope"),
            ("client_id", "t"),
            ("service", SVC),
        ])
        .await;
    assert!(r.status == 400 || r.status == 401, "{}", r.status);
    assert_eq!(r.json()["error"], "invalid_grant");
}
