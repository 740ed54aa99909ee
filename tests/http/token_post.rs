//! `POST /token`, the OAuth2 form: the password and refresh grants, refresh
//! tokens bound to their service and revoked with their account, idle refresh
//! tokens expiring, unknown grant types and missing fields.

use secrecy::SecretString;
use serde_json::json;

use crate::support::{entry, now, refresh_form, refresh_of, uname, Opts, TestServer, SVC};

/// podman's password grant for alice (`service` is field 4).
const BASE: [(&str, &str); 6] = [
    ("grant_type", "password"),
    ("username", "alice"),
    ("password", "wonderland"),
    ("client_id", "podman"),
    ("service", SVC),
    (
        "scope",
        "repository:alice/app:pull,push repository:bob/app:pull",
    ),
];

/// [`BASE`] with `access_type=offline`, which asks for a refresh token.
fn offline() -> Vec<(&'static str, &'static str)> {
    let mut offline = BASE.to_vec();
    offline.push(("access_type", "offline"));
    offline
}

/// A default server with alice, and a refresh token of hers for [`SVC`].
async fn with_refresh_token() -> (TestServer, String) {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let refresh = refresh_of(&s.post(&offline()).await);
    (s, refresh)
}

/// Without `access_type=offline`: a token, no refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant() {
    let (s, _) = with_refresh_token().await;
    let base = BASE;
    let r = s.post(&base).await;
    let j = r.ok();
    assert_eq!(j["token"], j["access_token"]);
    assert!(j.get("refresh_token").is_none(), "{j}");
    let (_, claims) = s.verify(j["token"].as_str().unwrap(), SVC).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        entry(&claims["access"], "alice/app")["actions"],
        json!(["pull", "push"])
    );
    assert_eq!(entry(&claims["access"], "bob/app")["actions"], json!([]));
}

/// With `access_type=offline` a refresh token, whose grant gives a token for
/// the same user, with space-separated scopes, and no more refresh tokens; it
/// stays good for every token (docker reuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_grant() {
    let (s, refresh) = with_refresh_token().await;
    let r = s
        .post(&refresh_form(
            &refresh,
            SVC,
            "repository:alice/app:pull repository:alice/other:push",
        ))
        .await;
    let j = r.ok();
    assert!(
        j.get("refresh_token").is_none(),
        "refresh grant must not mint more refresh tokens: {j}"
    );
    let (_, claims) = s.verify(j["token"].as_str().unwrap(), SVC).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        entry(&claims["access"], "alice/app")["actions"],
        json!(["pull"])
    );
    assert_eq!(
        entry(&claims["access"], "alice/other")["actions"],
        json!(["push"])
    );
    // Used again: still good (docker reuses it for every token).
    s.post(&refresh_form(&refresh, SVC, "")).await.ok();
}

/// A refresh token from a GET login works with POST too (docker's flow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_from_get_login() {
    let (s, _) = with_refresh_token().await;
    let r = s
        .get(
            &format!("account=alice&client_id=docker&offline_token=true&service={SVC}"),
            Some(("alice", "wonderland")),
        )
        .await;
    let docker_refresh = refresh_of(&r);
    let j = s
        .post(&refresh_form(
            &docker_refresh,
            SVC,
            "repository:alice/app:pull",
        ))
        .await
        .ok();
    let (_, claims) = s.verify(j["token"].as_str().unwrap(), SVC).await;
    assert_eq!(claims["sub"], "alice");
}

/// A refresh token is bound to its service: not valid for another configured
/// service, and still valid for its own afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_bound_to_its_service() {
    let (s, refresh) = with_refresh_token().await;
    let offline = offline();
    s.post(&refresh_form(
        &refresh,
        "other.test",
        "repository:alice/app:pull",
    ))
    .await
    .err(400, "invalid_grant");
    // …and still valid for its own afterwards.
    s.post(&refresh_form(&refresh, SVC, "")).await.ok();
    // A refresh token issued for other.test works there.
    let mut other = offline.clone();
    other[4] = ("service", "other.test");
    let other_refresh = refresh_of(&s.post(&other).await);
    let j = s
        .post(&refresh_form(&other_refresh, "other.test", ""))
        .await
        .ok();
    s.verify(j["token"].as_str().unwrap(), "other.test").await;
    s.post(&refresh_form(&other_refresh, SVC, ""))
        .await
        .err(400, "invalid_grant");
}

/// Bogus refresh tokens are an `invalid_grant`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_refresh_tokens() {
    let (s, _) = with_refresh_token().await;
    for bogus in [
        "bogus",
        &"A".repeat(43),
        &"x".repeat(5000),
        "../../etc/passwd",
        "' OR 1=1 --",
    ] {
        s.post(&refresh_form(bogus, SVC, ""))
            .await
            .err(400, "invalid_grant");
    }
}

/// Unknown grant types are an `unsupported_grant_type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_grant_types() {
    let (s, _) = with_refresh_token().await;
    for g in [
        "client_credentials",
        "authorization_code",
        "implicit",
        "PASSWORD",
        "x",
    ] {
        s.post(&[("grant_type", g), ("client_id", "t"), ("service", SVC)])
            .await
            .err(400, "unsupported_grant_type");
    }
}

/// Missing fields are an `invalid_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields() {
    let (s, refresh) = with_refresh_token().await;
    let missing: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("client_id", "t"), ("service", SVC)],
        vec![("grant_type", ""), ("client_id", "t"), ("service", SVC)],
        vec![
            ("grant_type", "password"),
            ("password", "wonderland"),
            ("client_id", "t"),
            ("service", SVC),
        ],
        vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
            ("service", SVC),
        ],
        vec![
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
            ("client_id", "t"),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("client_id", "t"),
            ("service", SVC),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", ""),
            ("client_id", "t"),
            ("service", SVC),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", SVC),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", "t"),
        ],
    ];
    for form in missing {
        let r = s.post(&form).await;
        assert_eq!(r.status, 400, "{form:?}: {}", r.text());
        assert_eq!(
            r.json()["error"],
            "invalid_request",
            "{form:?}: {}",
            r.text()
        );
    }
}

/// An unknown service on POST is an `invalid_request`, for both grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service() {
    let (s, refresh) = with_refresh_token().await;
    let mut unknown = BASE.to_vec();
    unknown[4] = ("service", "nope.test");
    s.post(&unknown).await.err(400, "invalid_request");
    s.post(&refresh_form(&refresh, "nope.test", ""))
        .await
        .err(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_are_revoked() {
    let s = TestServer::start(Opts::default()).await;
    let names = ["u-passwd", "u-disable", "u-delete", "u-revoke", "u-keep"];
    for n in names {
        s.add_user(n, "pw", &[]).await;
    }
    let mut tokens = Vec::new();
    for n in names {
        let r = s
            .get(
                &format!("account={n}&offline_token=true&service={SVC}"),
                Some((n, "pw")),
            )
            .await;
        let t = refresh_of(&r);
        s.post(&refresh_form(&t, SVC, "")).await.ok();
        tokens.push(t);
    }
    let store = s.store();
    let hash = berth::authn::password::hash(&SecretString::from("new-pw")).unwrap();
    store
        .set_password(&uname("u-passwd"), &hash, now())
        .await
        .unwrap();
    store
        .set_disabled(&uname("u-disable"), true, now())
        .await
        .unwrap();
    store.delete_user(&uname("u-delete")).await.unwrap();
    assert_eq!(store.revoke_sessions(&uname("u-revoke")).await.unwrap(), 1);

    for (n, t) in names.iter().zip(&tokens) {
        let r = s.post(&refresh_form(t, SVC, "")).await;
        if *n == "u-keep" {
            r.ok();
        } else {
            assert_eq!(
                r.status,
                400,
                "{n}: refresh token still works: {}",
                r.text()
            );
            assert_eq!(r.json()["error"], "invalid_grant", "{n}");
        }
    }
    // Re-enabling does not bring revoked sessions back.
    store
        .set_disabled(&uname("u-disable"), false, now())
        .await
        .unwrap();
    s.post(&refresh_form(&tokens[1], SVC, ""))
        .await
        .err(400, "invalid_grant");
    // A user recreated under a deleted name does not inherit the old session.
    s.add_user("u-delete", "pw", &[]).await;
    s.post(&refresh_form(&tokens[2], SVC, ""))
        .await
        .err(400, "invalid_grant");
    // The new password works, the old one does not.
    assert_eq!(
        s.get(&format!("service={SVC}"), Some(("u-passwd", "pw")))
            .await
            .status,
        401
    );
    s.get(&format!("service={SVC}"), Some(("u-passwd", "new-pw")))
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_refresh_token_expires() {
    let s = TestServer::start(Opts {
        refresh_idle: "2s",
        ..Opts::default()
    })
    .await;
    s.add_user("alice", "wonderland", &[]).await;
    let t = refresh_of(
        &s.get(
            &format!("offline_token=true&service={SVC}"),
            Some(("alice", "wonderland")),
        )
        .await,
    );
    // Unix-second granularity: right after issue at most 1 s has passed (< 2 s idle);
    // 3.1 s later at least 3 s have.
    s.post(&refresh_form(&t, SVC, "")).await.ok();
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    s.post(&refresh_form(&t, SVC, ""))
        .await
        .err(400, "invalid_grant");
}
