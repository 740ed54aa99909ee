//! Token reuse (`token_reuse`): the same identity asking the same service for
//! the same access gets the token signed moments ago, with its remaining
//! lifetime, and never across a policy reload, a key change, an
//! authentication-generation change, a revocation, another service or another
//! grant. A reused token is recognised by its `jti`.

use std::path::Path;
use std::sync::Arc;

use berth::authn::machine::{new_secret, ACCESS_TOKEN_PREFIX};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::support::{now, uname, Opts, Resp, TestServer};

const SVC: &str = "registry.test";

/// Users own their namespace; every user may pull `shared/**`.
const POLICY: &str = r#"
[[rule]]
id = "own"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push"]

[[rule]]
id = "shared"
kind = "user"
type = "repository"
name = "shared/**"
allow = ["pull"]
"#;

const ALICE: Option<(&str, &str)> = Some(("alice", "wonderland"));
const APP: &str = "scope=repository:alice/app:pull,push";

async fn server(extra: &str) -> TestServer {
    let s = TestServer::start(Opts {
        policy: Some(POLICY),
        token_ttl: "10m",
        extra: extra.to_owned(),
        ..Opts::default()
    })
    .await;
    s.add_user("alice", "wonderland", &["devs"]).await;
    s.add_user("bob", "builder", &["devs"]).await;
    s
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWS");
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("base64url"),
    )
    .expect("JSON claims")
}

fn jti(r: &Resp) -> String {
    let j = r.ok();
    claims(j["token"].as_str().expect("token"))["jti"]
        .as_str()
        .expect("jti")
        .to_owned()
}

async fn get(s: &TestServer, query: &str, basic: Option<(&str, &str)>) -> Resp {
    s.get(&format!("service={SVC}&{query}"), basic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_request_reuses_with_remaining_lifetime() {
    let s = server("").await;
    let first = get(&s, APP, ALICE).await;
    let j1 = first.ok();
    assert_eq!(j1["expires_in"], 600);
    // Let the clock pass a second boundary so the remaining lifetime shows.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = get(&s, APP, ALICE).await;
    let j2 = second.ok();
    assert_eq!(
        j1["token"], j2["token"],
        "a repeat within the window reuses"
    );
    assert_eq!(j1["access_token"], j2["token"]);
    let c = claims(j2["token"].as_str().unwrap());
    let left = j2["expires_in"].as_i64().unwrap();
    assert!((1..600).contains(&(600 - left)), "expires_in {left}");
    let exp_left = c["exp"].as_i64().unwrap() - now();
    assert!(
        (exp_left - left).abs() <= 1,
        "expires_in {left} is the time the token has left ({exp_left})"
    );
    let issued = OffsetDateTime::parse(j2["issued_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(issued.unix_timestamp(), c["iat"].as_i64().unwrap());
    assert_eq!(j1["issued_at"], j2["issued_at"]);
    // Still a valid token for the service.
    let (_, verified) = s.verify(j2["token"].as_str().unwrap(), SVC).await;
    assert_eq!(verified["sub"], "alice");
    assert!(s.state.tokens.held() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_order_and_duplicates_give_the_same_decision() {
    let s = server("").await;
    let base = jti(&get(
        &s,
        "scope=repository:alice/app:pull,push&scope=repository:shared/base:pull",
        ALICE,
    )
    .await);
    for query in [
        "scope=repository:shared/base:pull&scope=repository:alice/app:push,pull",
        "scope=repository:alice/app:pull&scope=repository:alice/app:push&scope=repository:shared/base:pull&scope=repository:shared/base:pull",
        "scope=repository:alice/app:pull,push,pull repository:shared/base:pull",
    ] {
        assert_eq!(jti(&get(&s, query, ALICE).await), base, "{query}");
    }
    // Asking more than policy grants yields the same grant: same token.
    assert_eq!(
        jti(&get(
            &s,
            "scope=repository:alice/app:pull,push&scope=repository:shared/base:pull,push",
            ALICE
        )
        .await),
        base
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_grant_service_or_identity_gets_its_own_token() {
    let s = server("").await;
    let base = jti(&get(&s, APP, ALICE).await);
    let narrower = get(&s, "scope=repository:alice/app:pull", ALICE).await;
    assert_ne!(jti(&narrower), base, "narrower grant");
    let wider = get(
        &s,
        "scope=repository:alice/app:pull,push&scope=repository:shared/x:pull",
        ALICE,
    )
    .await;
    assert_ne!(jti(&wider), base, "wider grant");
    let other = s.get(&format!("service=other.test&{APP}"), ALICE).await;
    assert_ne!(jti(&other), base, "other service");
    let c = claims(other.ok()["token"].as_str().unwrap());
    assert_eq!(c["aud"], "other.test");
    // bob has the same groups and asks the same scope, but is granted nothing
    // there and is another subject.
    let bob = get(&s, APP, Some(("bob", "builder"))).await;
    assert_eq!(claims(bob.ok()["token"].as_str().unwrap())["sub"], "bob");
    assert_ne!(jti(&bob), base);
    // Anonymous asking the same gets its own (empty) grant.
    let anon = get(&s, APP, None).await;
    assert_ne!(jti(&anon), base);
    // And alice's original still comes back.
    assert_eq!(jti(&get(&s, APP, ALICE).await), base);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_part_of_the_identity() {
    let s = server("").await;
    let base = jti(&get(&s, APP, ALICE).await);
    // Same subject, same grant, other groups: a new token (set_groups also
    // moves the authentication generation, checked separately below).
    s.store()
        .set_groups(&uname("alice"), &["devs".into(), "ops".into()], now())
        .await
        .unwrap();
    let after = jti(&get(&s, APP, ALICE).await);
    assert_ne!(after, base);
    assert_eq!(jti(&get(&s, APP, ALICE).await), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_ends_reuse() {
    let s = server("").await;
    let base = jti(&get(&s, APP, ALICE).await);
    assert_eq!(jti(&get(&s, APP, ALICE).await), base);
    // The same rules reloaded: still a different policy in force.
    s.state.policies.reload().unwrap();
    let after = jti(&get(&s, APP, ALICE).await);
    assert_ne!(after, base, "reused across a policy reload");
    assert_eq!(jti(&get(&s, APP, ALICE).await), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_publication_and_rotation_end_reuse() {
    let s = server("").await;
    let dir = s.state.config.keys_dir.clone();
    let base = get(&s, APP, ALICE).await.ok();
    let t = OffsetDateTime::now_utc();

    // A key published now that signs only in an hour.
    berth::token::generate::generate(
        &dir,
        berth::token::Algorithm::Es256,
        t,
        t + time::Duration::hours(1),
    )
    .unwrap();
    assert!(s.state.signer.reload_if_changed(t).unwrap());
    let published = get(&s, APP, ALICE).await.ok();
    assert_ne!(
        published["token"], base["token"],
        "reused across a key publication"
    );

    // A key that signs from now (RS256, so the header shows the change).
    berth::token::generate::generate(&dir, berth::token::Algorithm::Rs256, t, t).unwrap();
    assert!(s.state.signer.reload_if_changed(t).unwrap());
    let rotated = get(&s, APP, ALICE).await.ok();
    let token = rotated["token"].as_str().unwrap();
    assert_ne!(
        rotated["token"], published["token"],
        "reused across a rotation"
    );
    let header: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(token.split('.').next().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(get(&s, APP, ALICE).await.ok()["token"], rotated["token"]);
}

/// A change to another account moves the authentication generation: nothing
/// signed before it is handed out after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_generation_ends_reuse() {
    let s = server("").await;
    let hash = |pw: &str| berth::authn::password::hash(&SecretString::from(pw)).unwrap();

    let base = jti(&get(&s, APP, ALICE).await);
    s.store()
        .set_password(&uname("bob"), &hash("builder2"), now())
        .await
        .unwrap();
    let after_password = jti(&get(&s, APP, ALICE).await);
    assert_ne!(after_password, base, "reused across a password change");

    s.store()
        .set_disabled(&uname("bob"), true, now())
        .await
        .unwrap();
    let after_disable = jti(&get(&s, APP, ALICE).await);
    assert_ne!(after_disable, after_password, "reused across a disable");
    assert_eq!(jti(&get(&s, APP, ALICE).await), after_disable);

    // The changed account itself: the old password is refused, the new one
    // gets a fresh token.
    s.store()
        .set_disabled(&uname("bob"), false, now())
        .await
        .unwrap();
    let bob_first = jti(&get(&s, "scope=repository:bob/x:pull", Some(("bob", "builder2"))).await);
    s.store()
        .set_password(&uname("bob"), &hash("builder3"), now())
        .await
        .unwrap();
    let refused = get(&s, "scope=repository:bob/x:pull", Some(("bob", "builder2"))).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let bob_new = jti(&get(&s, "scope=repository:bob/x:pull", Some(("bob", "builder3"))).await);
    assert_ne!(bob_new, bob_first);

    // A disabled account gets nothing, reused or not.
    s.store()
        .set_disabled(&uname("alice"), true, now())
        .await
        .unwrap();
    assert_eq!(get(&s, APP, ALICE).await.status, 401);
}

/// Revocation in berth: refresh tokens are deleted (one user's sessions),
/// personal access tokens are deleted. Either way the revoked credential gets
/// no token at all, and the refresh revocation moves the generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_ends_reuse() {
    let s = server("").await;
    let login = get(&s, &format!("offline_token=true&{APP}"), ALICE)
        .await
        .ok();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let form = |scope: &'static str| {
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", "docker"),
            ("service", SVC),
            ("scope", scope),
        ]
    };
    let by_refresh = s.post(&form("repository:alice/app:pull,push")).await.ok();
    assert_eq!(
        by_refresh["token"], login["token"],
        "same identity and grant"
    );

    // A personal access token of alice: same identity, same grant.
    let (pat, hash) = new_secret(ACCESS_TOKEN_PREFIX).unwrap();
    let pat = pat.expose_secret().to_owned();
    s.store()
        .create_access_token(
            &uname("alice"),
            "ci",
            &hash,
            &["repository:alice/**:pull,push".into()],
            None,
            now() - 10,
        )
        .await
        .unwrap();
    let by_pat = get(&s, APP, Some(("alice", &pat))).await.ok();
    assert_eq!(by_pat["token"], login["token"]);
    s.store()
        .revoke_access_token(&uname("alice"), "ci")
        .await
        .unwrap();
    let revoked = get(&s, APP, Some(("alice", &pat))).await;
    assert_eq!(
        revoked.status,
        401,
        "a revoked access token: {}",
        revoked.text()
    );

    s.store().revoke_sessions(&uname("alice")).await.unwrap();
    s.post(&form("repository:alice/app:pull,push"))
        .await
        .err(400, "invalid_grant");
    let after = get(&s, APP, ALICE).await.ok();
    assert_ne!(after["token"], login["token"], "reused across a revocation");
}

/// `offline_token=true`: the access token may be reused, the refresh token is
/// new and valid every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_are_never_reused() {
    let s = server("").await;
    let q = format!("offline_token=true&client_id=docker&{APP}");
    let a = get(&s, &q, ALICE).await.ok();
    let b = get(&s, &q, ALICE).await.ok();
    assert_eq!(a["token"], b["token"]);
    let (ra, rb) = (
        a["refresh_token"].as_str().unwrap(),
        b["refresh_token"].as_str().unwrap(),
    );
    assert_ne!(ra, rb, "each login gets its own refresh token");
    for r in [ra, rb] {
        let j = s
            .post(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", r),
                ("client_id", "docker"),
                ("service", SVC),
                ("scope", "repository:alice/app:pull"),
            ])
            .await
            .ok();
        assert!(j.get("refresh_token").is_none(), "{j}");
        assert_eq!(
            claims(j["token"].as_str().unwrap())["access"],
            json!([{"type": "repository", "name": "alice/app", "actions": ["pull"]}])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_turns_reuse_off() {
    let s = server("token_reuse = '0'").await;
    assert!(!s.state.tokens.reusing());
    let a = jti(&get(&s, APP, ALICE).await);
    let b = jti(&get(&s, APP, ALICE).await);
    assert_ne!(a, b);
}

/// Many identities at once: every token names the identity that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_identities_never_share_tokens() {
    let s = Arc::new(server("").await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (who, pw) = if i % 2 == 0 {
                ("alice", "wonderland")
            } else {
                ("bob", "builder")
            };
            let r = get(&s, "scope=repository:shared/base:pull", Some((who, pw))).await;
            let token = r.ok()["token"].as_str().unwrap().to_owned();
            let (_, c) = s.verify(&token, SVC).await;
            assert_eq!(c["sub"], who);
            assert_eq!(c["access"][0]["actions"], json!(["pull"]));
            (who, c["jti"].as_str().unwrap().to_owned())
        }));
    }
    let mut seen: std::collections::HashMap<String, &str> = Default::default();
    for t in tasks {
        let (who, jti) = t.await.unwrap();
        if let Some(prev) = seen.insert(jti, who) {
            assert_eq!(prev, who, "one token served to two identities");
        }
    }
}

fn config(text: &str) -> Result<berth::config::Config, String> {
    struct NoEnv;
    impl berth::config::Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }
    berth::config::Config::from_toml(
        Path::new("t.toml"),
        &format!("{text}\n[[service]]\nname = 'r'\n"),
        &NoEnv,
    )
    .map_err(|e| e.to_string())
}

#[test]
fn window_defaults_and_bounds() {
    let secs = |text: &str| config(text).unwrap().token_reuse.as_secs();
    assert_eq!(secs(""), 30, "5m tokens: a tenth, at most 30s");
    assert_eq!(secs("token_ttl = '2m'"), 12);
    assert_eq!(secs("token_ttl = '1h'"), 30);
    assert_eq!(
        secs("token_ttl = '60s'"),
        0,
        "no room above the 60s minimum"
    );
    assert_eq!(secs("token_ttl = '65s'"), 5);
    assert_eq!(secs("token_reuse = '0'"), 0);
    assert_eq!(secs("token_reuse = '2m'"), 120);
    let e = config("token_ttl = '2m'\ntoken_reuse = '61s'").unwrap_err();
    assert!(e.contains("token_reuse"), "{e}");
    assert!(config("token_reuse = 'soon'").is_err());
}

/// A published key that starts signing while a token is held: the next
/// request gets a token from the new key, with no change in the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_starting_to_sign_ends_reuse() {
    let s = server("").await;
    let dir = s.state.config.keys_dir.clone();
    let t = OffsetDateTime::now_utc();
    // Generating an RSA key in a debug build on a loaded machine can take
    // seconds; the ES256 token must be minted (and reused) before the new key
    // starts, so leave a margin well past that.
    let starts = t + time::Duration::seconds(8);
    berth::token::generate::generate(&dir, berth::token::Algorithm::Rs256, t, starts).unwrap();
    assert!(s.state.signer.reload_if_changed(t).unwrap());
    let alg = |r: &Resp| {
        let token = r.ok()["token"].as_str().unwrap().to_owned();
        let header: Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(token.split('.').next().unwrap().as_bytes())
                .unwrap(),
        )
        .unwrap();
        header["alg"].as_str().unwrap().to_owned()
    };
    let before = get(&s, APP, ALICE).await;
    assert!(
        OffsetDateTime::now_utc() < starts,
        "the machine took longer than the margin to generate the key"
    );
    assert_eq!(alg(&before), "ES256");
    assert_eq!(jti(&get(&s, APP, ALICE).await), jti(&before));
    let wait = starts - OffsetDateTime::now_utc() + time::Duration::milliseconds(1100);
    tokio::time::sleep(std::time::Duration::try_from(wait).unwrap_or_default()).await;
    let after = get(&s, APP, ALICE).await;
    assert_eq!(
        alg(&after),
        "RS256",
        "the held ES256 token was served past the new key's start"
    );
    assert_ne!(jti(&after), jti(&before));
}
