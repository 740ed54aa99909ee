//! In-process HTTP tests: the real server on port 0 with a temp SQLite database and
//! temp keys, driven over HTTP; issued tokens are verified with the key published at
//! `/.well-known/jwks.json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "http/support.rs"]
mod support;

#[path = "http/ops.rs"]
mod ops;

#[path = "http/machine.rs"]
mod machine;

#[path = "http/lockout.rs"]
mod lockout;

#[path = "http/bounds.rs"]
mod bounds;

#[path = "http/edge.rs"]
mod edge;

#[path = "http/edge_input.rs"]
mod edge_input;

#[path = "http/login_flood.rs"]
mod login_flood;

#[path = "http/request_id.rs"]
mod request_id;

#[path = "http/audit_fold.rs"]
mod audit_fold;

#[path = "http/audit_erase.rs"]
mod audit_erase;

#[path = "http/reuse.rs"]
mod reuse;

#[path = "http/conn_bounds.rs"]
mod conn_bounds;

#[path = "http/page_limits.rs"]
mod page_limits;

use secrecy::SecretString;
use serde_json::{json, Value};
use support::{enc, now, uname, Opts, Resp, TestServer, ADMIN_PW, ISSUER};
use time::format_description::well_known::Rfc3339;

const SVC: &str = "registry.test";

fn refresh_of(r: &Resp) -> String {
    let j = r.ok();
    j["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token in {j}"))
        .to_owned()
}

fn refresh_form<'a>(token: &'a str, service: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", "docker"),
        ("service", service),
        ("scope", scope),
    ]
}

fn entry(access: &Value, name: &str) -> Value {
    access
        .as_array()
        .unwrap_or_else(|| panic!("access is not an array: {access}"))
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no access entry for {name} in {access}"))
        .clone()
}

// ---------------------------------------------------------------------------
// GET /token

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_token_scopes_and_partial_grants() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let alice = Some(("alice", "wonderland"));
    let admin = Some(("admin", ADMIN_PW));

    // Repeated scope; partial grant is the intersection, never an error.
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

    // Actions come back sorted; the same repository twice is merged.
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

    // `*` only when requested.
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

    // Catalog: admins only.
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

    // Anonymous: 200, nothing granted under the default policy, no refresh token.
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

// ---------------------------------------------------------------------------
// POST /token

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_password_and_refresh_grants() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;

    let base = [
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
    // Without access_type=offline: token, no refresh token.
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

    // With access_type=offline: a refresh token.
    let mut offline = base.to_vec();
    offline.push(("access_type", "offline"));
    let refresh = refresh_of(&s.post(&offline).await);

    // The refresh grant gives a token for the same user, with space-separated scopes.
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

    // A refresh token from GET login works with POST too (docker's flow).
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

    // Bound to its service: not valid for another configured service.
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

    // Bogus refresh tokens.
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

    // Unknown grant types.
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

    // Missing fields → invalid_request.
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

    // Unknown service on POST.
    let mut unknown = base.to_vec();
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

// ---------------------------------------------------------------------------
// Credential cache

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

// ---------------------------------------------------------------------------
// Claims and key ID modes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_verify_in_every_key_id_mode() {
    let s = TestServer::start(Opts {
        token_ttl: "10m",
        // Fresh signatures each time (jti must not repeat); reuse has its own tests.
        extra: "token_reuse = '0'".into(),
        ..Opts::default()
    })
    .await;
    s.add_user("alice", "wonderland", &[]).await;
    let jwks = s.jwks().await;
    let key = jwks["keys"][0].clone();
    let cert_der = data_encoding::BASE64
        .decode(key["x5c"][0].as_str().expect("x5c in JWKS").as_bytes())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    let libtrust = support::libtrust_kid(cert.public_key().raw);
    let thumb = support::thumbprint(&key);
    assert_eq!(
        cert.public_key().subject_public_key.data.to_vec(),
        support::ec_point(&key)
    );

    let mut jtis = Vec::new();
    for (service, mode) in [
        ("registry.test", "libtrust"),
        ("other.test", "thumbprint"),
        ("x5c.test", "x5c"),
    ] {
        for _ in 0..2 {
            let r = s
                .get(
                    &format!("service={service}&scope=repository:alice/app:push,pull&scope=repository:bob/x:pull"),
                    Some(("alice", "wonderland")),
                )
                .await;
            let j = r.ok();
            assert_eq!(j["expires_in"], 600);
            let token = j["token"].as_str().unwrap();
            let (header, c) = s.verify(token, service).await;

            // Raw claims, as a registry sees them.
            let payload = token.split('.').nth(1).unwrap();
            let raw: Value = serde_json::from_slice(
                &data_encoding::BASE64URL_NOPAD
                    .decode(payload.as_bytes())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(raw, c);
            assert_eq!(c["iss"], ISSUER);
            assert!(
                c["aud"].is_string(),
                "aud must be a JSON string: {}",
                c["aud"]
            );
            assert_eq!(c["aud"], service);
            assert_eq!(c["sub"], "alice");
            let (iat, exp, nbf) = (
                c["iat"].as_i64().unwrap(),
                c["exp"].as_i64().unwrap(),
                c["nbf"].as_i64().unwrap(),
            );
            assert_eq!(exp - iat, 600);
            assert!(nbf <= iat);
            assert!((iat - now()).abs() < 30);
            let issued =
                time::OffsetDateTime::parse(j["issued_at"].as_str().unwrap(), &Rfc3339).unwrap();
            assert_eq!(issued.unix_timestamp(), iat);
            assert!(c["jti"].as_str().is_some_and(|s| !s.is_empty()));
            jtis.push(c["jti"].as_str().unwrap().to_owned());
            assert_eq!(
                entry(&c["access"], "alice/app")["actions"],
                json!(["pull", "push"])
            );
            assert_eq!(entry(&c["access"], "bob/x")["actions"], json!([]));

            match mode {
                "libtrust" => {
                    assert_eq!(header.kid.as_deref(), Some(libtrust.as_str()));
                    assert!(header.x5c.is_none());
                }
                "thumbprint" => {
                    assert_eq!(header.kid.as_deref(), Some(thumb.as_str()));
                    assert!(header.x5c.is_none());
                }
                _ => {
                    assert!(header.kid.is_none(), "x5c mode carries no kid");
                    assert_eq!(
                        header.x5c.as_ref().unwrap()[0],
                        key["x5c"][0].as_str().unwrap()
                    );
                }
            }
            // The JWKS names the key the way this service's tokens do.
            if let Some(kid) = &header.kid {
                assert!(jwks["keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kid"] == kid.as_str()));
            }
        }
    }
    let mut unique = jtis.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), jtis.len(), "jti repeats: {jtis:?}");

    // A token for one service does not verify as another's.
    let j = s
        .get("service=other.test", Some(("alice", "wonderland")))
        .await
        .ok();
    let jwk = &jwks["keys"][0];
    let dk = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[SVC]);
    assert!(jsonwebtoken::decode::<Value>(j["token"].as_str().unwrap(), &dk, &v).is_err());
}

// ---------------------------------------------------------------------------
// JWKS and health

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_and_healthz() {
    let s = TestServer::start(Opts::default()).await;
    let r = s.get_path("/.well-known/jwks.json").await;
    let jwks = r.ok();
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let keys = jwks["keys"].as_array().expect("keys array");
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()), "{k}");
        assert_eq!(k["kty"], "EC");
        assert_eq!(k["crv"], "P-256");
        for c in ["x", "y"] {
            let bytes = data_encoding::BASE64URL_NOPAD
                .decode(k[c].as_str().unwrap().as_bytes())
                .unwrap_or_else(|_| panic!("{c} is not base64url: {k}"));
            assert_eq!(bytes.len(), 32, "{c}");
        }
        assert!(k.get("d").is_none(), "private key material published: {k}");
    }
    // Both kid forms the services use are published, each once.
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    let thumb = support::thumbprint(&keys[0]);
    assert!(kids.contains(&thumb.as_str()), "{kids:?}");
    assert!(
        kids.iter()
            .any(|k| k.len() == 59 && k.split(':').count() == 12),
        "{kids:?}"
    );
    let mut dedup = kids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), kids.len());

    let r = s.get_path("/healthz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
}

// ---------------------------------------------------------------------------
// Bad input: 4xx with a JSON `error`, never a 5xx

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_strings_and_headers() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let alice = Some(("alice", "wonderland"));

    let cases: Vec<(&str, String)> = vec![
        ("five colons", "scope=a:b:c:d:e:f".into()),
        ("bad scope name", "scope=repository:Alice/App:pull".into()),
        ("no actions", "scope=repository:alice/app".into()),
        ("bad percent", "scope=%ZZ%&&==&".into()),
        (
            "invalid utf-8 escape",
            "scope=repository:%FF%FE:pull".into(),
        ),
        (
            "1000 scopes",
            "scope=repository:alice/app:pull&".repeat(1000),
        ),
        (
            "1000 distinct scopes",
            (0..1000)
                .map(|i| format!("scope=repository:a/r{i}:pull&"))
                .collect(),
        ),
        (
            "twice service",
            "service=registry.test&service=other.test".into(),
        ),
        ("unknown service", "service=%00".into()),
    ];
    for (what, q) in &cases {
        s.get(q, alice).await.client_error_json(what);
        s.get(q, None).await.client_error_json(what);
    }
    // An empty `scope` asks for nothing, on GET as on POST (docker's POST sends
    // `scope=` at login): a token with no access, not an error.
    for q in ["scope=", "scope", "scope=%20%20"] {
        let access = s.access(&format!("service={SVC}&{q}"), alice).await;
        assert_eq!(access, json!([]), "{q}");
    }
    // Long queries, sent raw (an HTTP library refuses URIs this long). Up to the
    // HTTP layer's URI limit (64 KiB) berth answers with its own JSON error.
    let q = format!("service={SVC}&scope={}", "a".repeat(60 * 1024));
    s.get_raw(q.as_bytes())
        .await
        .client_error_json("60 KiB query");
    // Beyond it hyper refuses the request line itself (414/431, empty body, before
    // any berth code runs), as it does raw non-UTF-8 bytes: a 4xx, never a 5xx.
    let r = s.get_raw(b"scope=repository:\xff\xfe/app:pull").await;
    assert!(
        (400..500).contains(&r.status),
        "raw non-UTF-8 query: {}",
        r.status
    );
    for len in [70 * 1024, 200 * 1024, 1024 * 1024] {
        let r = s
            .get_raw(format!("scope={}", "a".repeat(len)).as_bytes())
            .await;
        assert!(
            (400..500).contains(&r.status),
            "{len}-byte query: {}",
            r.status
        );
    }
    // The server is still fine afterwards.
    s.get(&format!("service={SVC}"), alice).await.ok();

    let basic = |s: &[u8]| {
        [
            b"Basic ".as_slice(),
            data_encoding::BASE64.encode(s).as_bytes(),
        ]
        .concat()
    };
    let auth_cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid base64", b"Basic !!!not-base64!!!".to_vec()),
        ("invalid utf-8 header", b"Basic \xff\xfe\xfd".to_vec()),
        ("invalid utf-8 credentials", basic(b"al\xffice:pw\xfe")),
        ("no colon", basic(b"alice")),
        ("empty user", basic(b":pw")),
        ("bearer", b"Bearer x".to_vec()),
        ("scheme only", b"Basic".to_vec()),
        ("empty", Vec::new()),
        (
            "long user",
            basic(format!("{}:pw", "a".repeat(300)).as_bytes()),
        ),
        (
            "long password",
            basic(format!("alice:{}", "p".repeat(5000)).as_bytes()),
        ),
        ("sql", basic(b"' OR 1=1 --:x")),
        ("sql in password", basic(b"alice:' OR '1'='1")),
        ("nul", basic(b"ali\0ce:wonderland")),
        ("nul password", basic(b"alice:wonder\0land")),
        ("admin with nul", basic(b"admin\0:adminpw")),
    ];
    for (what, h) in &auth_cases {
        let r = s.get_auth(&format!("service={SVC}"), h).await;
        r.client_error_json(what);
        assert!(r.json().get("token").is_none(), "{what}");
    }
    // A username with SQL metacharacters is simply unknown.
    let r = s
        .get(&format!("service={SVC}"), Some(("' OR 1=1 --", "x")))
        .await;
    r.err(401, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_form_bodies() {
    let s = TestServer::start(Opts::default()).await;
    s.add_user("alice", "wonderland", &[]).await;
    let refresh = refresh_of(
        &s.get(
            &format!("offline_token=true&service={SVC}"),
            Some(("alice", "wonderland")),
        )
        .await,
    );
    let pw = |user: &str, scope: String| -> Vec<u8> {
        format!(
            "grant_type=password&username={}&password=wonderland&client_id=t&service={SVC}&scope={}",
            enc(user),
            enc(&scope)
        )
        .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", Vec::new()),
        ("garbage", b"%%%&&&===".to_vec()),
        ("invalid utf-8", b"grant_type=\xff\xfe&client_id=\xc3&service=\x80".to_vec()),
        ("json body", br#"{"grant_type":"password"}"#.to_vec()),
        ("unknown grant", b"grant_type=implicit&client_id=t&service=registry.test".to_vec()),
        ("grant twice", b"grant_type=password&grant_type=refresh_token&client_id=t".to_vec()),
        ("five colons", pw("alice", "a:b:c:d:e:f".into())),
        ("1000 scopes", pw("alice", "repository:alice/app:pull ".repeat(1000))),
        ("sql user", pw("' OR 1=1 --", String::new())),
        ("nul user", pw("ali\0ce", String::new())),
        ("long user", pw(&"a".repeat(300), String::new())),
        (
            "refresh for another service",
            format!("grant_type=refresh_token&refresh_token={refresh}&client_id=t&service=other.test").into_bytes(),
        ),
        (
            "refresh with password fields",
            b"grant_type=refresh_token&username=alice&password=wonderland&client_id=t&service=registry.test"
                .to_vec(),
        ),
        ("60 KiB", format!("grant_type=password&x={}", "a".repeat(60 * 1024)).into_bytes()),
    ];
    for (what, body) in cases {
        let r = s.post_raw(body).await;
        r.client_error_json(what);
        assert!(r.json().get("token").is_none(), "{what}");
    }
}

/// Forms over the 64 KiB limit: 413 or 400 with a JSON `error` body, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_form_body_is_rejected_with_json() {
    let s = TestServer::start(Opts::default()).await;
    let mut answers: Vec<(String, Resp)> = Vec::new();
    for len in [65 * 1024, 100 * 1024] {
        let body = format!("grant_type=password&x={}", "a".repeat(len));
        answers.push((
            format!("{len}-byte body"),
            s.post_raw(body.into_bytes()).await,
        ));
    }
    let body = format!(
        "grant_type=password&client_id=t&service={SVC}&username=alice&password={}",
        "a".repeat(200 * 1024)
    );
    // With Content-Length, via the client library…
    answers.push((
        "200 KB body (content-length)".into(),
        s.post_raw(body.clone().into_bytes()).await,
    ));
    // …and chunked, without a length up front.
    let mut req = b"POST /token HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for chunk in body.as_bytes().chunks(16 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    answers.push(("200 KB body (chunked)".into(), s.raw(&req).await));

    // Every case is checked before failing, so one run shows them all.
    let bad: Vec<String> = answers
        .iter()
        .filter(|(_, r)| !((r.status == 413 || r.status == 400) && r.json()["error"].is_string()))
        .map(|(what, r)| format!("{what}: {} {:?}", r.status, r.text()))
        .collect();
    assert!(
        bad.is_empty(),
        "oversized forms must get 413/400 with a JSON `error` body:\n{}",
        bad.join("\n")
    );
    // The server is still fine afterwards.
    s.get_path("/healthz").await.ok();
}

// ---------------------------------------------------------------------------
// Property: random requests never get a 5xx

#[test]
fn random_requests_never_get_a_5xx() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let s = TestServer::start(Opts::default()).await;
        s.add_user("alice", "wonderland", &[]).await;
        s
    });

    // Query strings built from the characters that matter to the parsers.
    let piece = prop_oneof![
        Just("scope=".to_owned()),
        Just("service=".to_owned()),
        Just("account=".to_owned()),
        Just("offline_token=true".to_owned()),
        Just("service=registry.test".to_owned()),
        Just("repository:".to_owned()),
        Just("registry:catalog:*".to_owned()),
        Just("alice/app:pull,push".to_owned()),
        "[a-z0-9:/,*&=%._\\-+ ]{0,12}",
        "%[0-9A-Fa-f]{2}",
        "\\PC{0,8}",
    ];
    let query = proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat());
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (
            prop_oneof![Just("password"), Just("refresh_token"), Just("implicit"), Just("")],
            "\\PC{0,20}",
            "\\PC{0,20}",
            "[a-z0-9:/,* ]{0,40}",
        )
            .prop_map(|(g, u, p, scope)| {
                format!(
                    "grant_type={g}&username={}&password={}&refresh_token={}&client_id=t&service=registry.test&scope={}",
                    enc(&u),
                    enc(&p),
                    enc(&u),
                    enc(&scope)
                )
                .into_bytes()
            }),
    ];
    let auth = prop_oneof![
        3 => Just(None),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            Some([b"Basic ".as_slice(), data_encoding::BASE64.encode(&b).as_bytes()].concat())
        }),
        1 => proptest::collection::vec(32u8..=126, 0..40).prop_map(Some),
    ];

    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&(query, body, auth), |(q, body, auth)| {
            let (get, post) = rt.block_on(async {
                let url = format!("{}/token?{q}", s.base);
                let mut rb = s.client.get(&url);
                if let Some(a) = &auth {
                    if let Ok(v) = reqwest::header::HeaderValue::from_bytes(a) {
                        rb = rb.header("authorization", v);
                    }
                }
                let get = rb.send().await.map(|r| r.status().as_u16());
                let post = s.post_raw(body.clone()).await;
                (get, post)
            });
            let get = get.map_err(|e| TestCaseError::fail(format!("GET {q:?}: {e}")))?;
            prop_assert!(get < 500, "GET ?{:?} → {}", q, get);
            prop_assert!(
                post.status < 500,
                "POST {:?} → {}",
                String::from_utf8_lossy(&body),
                post.status
            );
            if post.status >= 400 {
                prop_assert!(
                    post.json()["error"].is_string(),
                    "POST error without JSON: {}",
                    post.text()
                );
            }
            Ok(())
        })
        .unwrap();
    drop(s);
}

// ---------------------------------------------------------------------------
// Refresh expiry, policy reload, concurrency

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_apply_without_restart() {
    const BEFORE: &str =
        "[[rule]]\nid = \"a\"\ntype = \"repository\"\nname = \"shared/**\"\nallow = [\"pull\"]\n";
    const AFTER: &str = "[[rule]]\nid = \"a\"\ntype = \"repository\"\nname = \"shared/**\"\nallow = [\"pull\", \"push\"]\n\n";
    let s = TestServer::start(Opts {
        policy: Some(BEFORE),
        ..Opts::default()
    })
    .await;
    s.add_user("alice", "wonderland", &[]).await;
    let alice = Some(("alice", "wonderland"));
    let q = format!("service={SVC}&scope=repository:shared/app:pull,push");
    assert_eq!(
        entry(&s.access(&q, alice).await, "shared/app")["actions"],
        json!(["pull"])
    );
    let file = s.policy_dir.as_ref().unwrap().join("test.toml");

    std::fs::write(&file, AFTER).unwrap();
    let mut granted = Value::Null;
    for _ in 0..50 {
        granted = entry(&s.access(&q, alice).await, "shared/app")["actions"].clone();
        if granted == json!(["pull", "push"]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        granted,
        json!(["pull", "push"]),
        "new policy not applied within 5 s"
    );

    // A broken file: the last good policy keeps serving; health says degraded.
    std::fs::write(&file, "[[rule]\nthis is not toml").unwrap();
    let mut health = Value::Null;
    for _ in 0..50 {
        health = s.get_path("/healthz").await.ok();
        if health["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        entry(&s.access(&q, alice).await, "shared/app")["actions"],
        json!(["pull", "push"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests() {
    let s = std::sync::Arc::new(TestServer::start(Opts::default()).await);
    s.add_user("alice", "wonderland", &[]).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let pw = if i % 2 == 0 { "wonderland" } else { "wrong" };
            let r = s
                .get(
                    &format!("service={SVC}&scope=repository:alice/app:pull"),
                    Some(("alice", pw)),
                )
                .await;
            (i, r.status, r.header("cache-control").map(str::to_owned))
        }));
    }
    for t in tasks {
        let (i, status, cache) = t.await.unwrap();
        assert_eq!(status, if i % 2 == 0 { 200 } else { 401 }, "request {i}");
        assert_eq!(cache.as_deref(), Some("no-store"), "request {i}");
    }
}
