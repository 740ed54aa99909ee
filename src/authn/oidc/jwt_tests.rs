//! Forged and broken tokens: each is refused with a reason, never accepted, never
//! a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::Duration;

use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{encode, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use openidconnect::core::CoreIdToken;

use super::*;
use crate::authn::oidc::config::{SecretSource, TokenUsername};

const ISS: &str = "https://kc.test/realms/acme";
const NOW: i64 = 1_700_000_000;

struct Rsa {
    private_pem: String,
    public_pem: String,
    n: String,
    e: String,
}

fn rsa_key(slot: usize) -> &'static Rsa {
    static KEYS: OnceLock<Vec<Rsa>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..2)
            .map(|_| {
                let k = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
                Rsa {
                    private_pem: k.to_pkcs1_pem(LineEnding::LF).unwrap().to_string(),
                    public_pem: k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
                    n: BASE64URL_NOPAD.encode(&k.n().to_bytes_be()),
                    e: BASE64URL_NOPAD.encode(&k.e().to_bytes_be()),
                }
            })
            .collect()
    })[slot]
}

fn jwks() -> KeySet {
    let k = rsa_key(0);
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": k.n, "e": k.e},
        // Encryption key (Keycloak publishes one): never used to verify.
        {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": k.n, "e": k.e},
        // A symmetric key in a JWKS must never verify anything.
        {"kty": "oct", "kid": "sym", "k": BASE64URL_NOPAD.encode(b"0123456789abcdef0123456789abcdef")},
        // Unknown types and algorithms are skipped, not fatal.
        {"kty": "ML-DSA", "kid": "pq", "alg": "ML-DSA-65", "pub": "AAAA"},
        {"kty": "RSA", "kid": "future", "alg": "RS999", "n": k.n, "e": k.e},
    ]});
    KeySet::from_json(doc.to_string().as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "u-1", "aud": ["berth", "account"], "azp": "ci",
        "exp": NOW + 300, "iat": NOW - 5, "typ": "Bearer",
        "preferred_username": "alice",
        "groups": ["/team-a", "/parent/child", "bad group"],
        "realm_access": {"roles": ["registry-admin", "offline_access"]},
        "resource_access": {"berth": {"roles": ["pusher"]}, "other": {"roles": ["x"]}},
    })
}

/// A JWKS document with the public half of test key `slot` as `k1`.
pub(crate) fn jwks_json(slot: usize) -> String {
    let k = rsa_key(slot);
    json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": k.n, "e": k.e}]})
        .to_string()
}

/// `claims` signed RS256 with test key `slot`.
pub(crate) fn sign(claims: &Value, kid: Option<&str>, slot: usize) -> String {
    let mut h = Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(rsa_key(slot).private_pem.as_bytes()).unwrap();
    encode(&h, claims, &key).unwrap()
}

fn raw_token(header: Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes()),
        BASE64URL_NOPAD.encode(sig)
    )
}

fn auds() -> Vec<String> {
    vec!["berth".to_owned()]
}

fn expect(auds: &[String]) -> Expect<'_> {
    Expect {
        issuer: ISS,
        audiences: auds,
        authorized_party: None,
        typ: &["Bearer"],
        now: NOW,
    }
}

#[test]
fn good_token_verifies_and_maps() {
    let a = auds();
    let c = verify(&sign(&claims(), Some("k1"), 0), &jwks(), &expect(&a)).unwrap();
    let user = user_from_claims(&provider(), &c).unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.subject, "u-1");
    assert_eq!(
        user.groups,
        vec![
            "parent/child",
            "role:offline_access",
            "role:pusher",
            "role:registry-admin",
            "team-a"
        ]
    );
    // Without kid: every signature key is tried.
    verify(&sign(&claims(), None, 0), &jwks(), &expect(&a)).unwrap();
}

/// ID tokens offered where an access token is expected, as a provider without
/// a `typ` claim issues them (only Keycloak writes `"typ": "ID"`): refused by
/// what only they carry. The same tokens still verify where an ID token is
/// expected (the browser sign-in), and an access token that carries a copied
/// nonce next to its scope is still an access token.
#[test]
fn id_tokens_are_not_access_tokens() {
    let a = auds();
    let ks = jwks();
    let id_token = |edit: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "iss": ISS, "sub": "u-1", "aud": "berth", "azp": "berth",
            "exp": NOW + 300, "iat": NOW - 5, "auth_time": NOW - 60,
            "nonce": "n-1", "at_hash": "x3ZjdGFnLXZhbHVl",
            "preferred_username": "alice", "groups": ["/team-a"],
        });
        edit(&mut c);
        sign(&c, Some("k1"), 0)
    };
    for (what, token) in [
        ("generic ID token", id_token(&|_| {})),
        (
            "without at_hash",
            id_token(&|c| {
                c.as_object_mut().unwrap().remove("at_hash");
            }),
        ),
        (
            "with only auth_time",
            id_token(&|c| {
                let m = c.as_object_mut().unwrap();
                m.remove("at_hash");
                m.remove("nonce");
            }),
        ),
        (
            "with c_hash and a scope",
            id_token(&|c| {
                c["c_hash"] = json!("Y2hhc2g");
                c["scope"] = json!("openid");
            }),
        ),
        ("Keycloak's typ ID", id_token(&|c| c["typ"] = json!("ID"))),
    ] {
        let e = verify(&token, &ks, &expect(&a)).unwrap_err();
        assert!(
            matches!(&e, VerifyError::Rejected(m) if m.contains("ID token") || m.contains("token type")),
            "{what}: {e}"
        );
    }
    let as_id = |t: String| verify_id_token(&t.parse().unwrap(), &ks, ISS, "berth", "n-1", NOW);
    as_id(id_token(&|_| {})).unwrap();
    as_id(id_token(&|c| c["typ"] = json!("ID"))).unwrap();
    let mut access = claims();
    access["scope"] = json!("openid profile");
    access["nonce"] = json!("copied");
    access["auth_time"] = json!(NOW - 60);
    verify(&sign(&access, Some("k1"), 0), &ks, &expect(&a)).unwrap();
}

#[test]
fn forged_tokens_are_refused() {
    let a = auds();
    let ks = jwks();
    let check = |token: &str, what: &str| {
        let e = verify(token, &ks, &expect(&a)).unwrap_err();
        eprintln!("{what}: {e}");
        e
    };
    // Signed by another key under a published kid.
    assert!(matches!(
        check(&sign(&claims(), Some("k1"), 1), "wrong key"),
        VerifyError::Rejected(_)
    ));
    // alg none, with and without a signature part.
    let none = raw_token(json!({"alg": "none", "kid": "k1"}), &claims(), b"");
    assert!(matches!(
        check(&none, "alg none"),
        VerifyError::Algorithm(_)
    ));
    let none = raw_token(json!({"alg": "none"}), &claims(), b"x");
    assert!(matches!(
        check(&none, "alg none"),
        VerifyError::Algorithm(_)
    ));
    // HS256 keyed with the provider's public key (the classic confusion attack).
    for kid in [Some("k1"), None, Some("sym")] {
        let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        let t = encode(
            &h,
            &claims(),
            &EncodingKey::from_secret(rsa_key(0).public_pem.as_bytes()),
        )
        .unwrap();
        assert!(matches!(check(&t, "HS256"), VerifyError::Algorithm(_)));
    }
    // An ES256 header on an RSA key.
    let es = raw_token(json!({"alg": "ES256", "kid": "k1"}), &claims(), &[0u8; 64]);
    assert!(matches!(
        check(&es, "ES256 on RSA"),
        VerifyError::Algorithm(_)
    ));
    // The encryption key is not a signature key.
    assert!(matches!(
        check(&sign(&claims(), Some("enc"), 0), "enc key"),
        VerifyError::UnknownKey(_)
    ));
    assert!(matches!(
        check(&sign(&claims(), Some("nope"), 0), "unknown kid"),
        VerifyError::UnknownKey(_)
    ));
    // Claims.
    let mut bad = Vec::new();
    for (field, value) in [
        ("exp", json!(NOW - 31)),
        ("exp", Value::Null),
        ("exp", json!("soon")),
        ("nbf", json!(NOW + 3600)),
        ("iat", json!(NOW + 3600)),
        ("iss", json!("https://evil.test/realms/acme")),
        ("iss", json!(format!("{ISS}/"))),
        ("aud", json!("account")),
        ("aud", json!(["other"])),
        ("typ", json!("ID")),
        ("typ", json!("Refresh")),
    ] {
        let mut c = claims();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(field);
        } else {
            c[field] = value;
        }
        let e = check(&sign(&c, Some("k1"), 0), field);
        assert!(matches!(e, VerifyError::Rejected(_)), "{field}: {e}");
        bad.push(e);
    }
    // Huge token.
    let mut c = claims();
    c["pad"] = json!("x".repeat(MAX_TOKEN_LEN));
    assert!(matches!(
        check(&sign(&c, Some("k1"), 0), "huge"),
        VerifyError::Malformed(_)
    ));
    for garbage in [
        "",
        "a.b",
        "a.b.c",
        "eyJ.eyJ.x",
        "....",
        "eyJhbGciOiJSUzI1NiJ9...",
    ] {
        assert!(verify(garbage, &ks, &expect(&a)).is_err(), "{garbage:?}");
    }
}

#[test]
fn leeway_and_authorized_party() {
    let a = auds();
    let mut c = claims();
    c["exp"] = json!(NOW - 10);
    verify(&sign(&c, Some("k1"), 0), &jwks(), &expect(&a)).unwrap();
    // A token berth obtained itself: audience may be just `account`, azp is berth.
    let mut c = claims();
    c["aud"] = json!("account");
    c["azp"] = json!("berth");
    let t = sign(&c, Some("k1"), 0);
    assert!(verify(&t, &jwks(), &expect(&a)).is_err());
    let mut e = expect(&a);
    e.authorized_party = Some("berth");
    verify(&t, &jwks(), &e).unwrap();
}

/// ID tokens of the browser flow, verified by the crate: the nonce berth sent,
/// issuer, audience, expiry (with leeway), type, and the signature.
#[test]
fn nonce_is_checked() {
    let mut c = claims();
    c["nonce"] = json!("n-1");
    c["typ"] = json!("ID");
    let check = |c: &Value, kid: Option<&str>, slot: usize, nonce: &str| {
        let t: CoreIdToken = sign(c, kid, slot).parse().unwrap();
        verify_id_token(&t, &jwks(), ISS, "berth", nonce, NOW)
    };
    assert_eq!(check(&c, Some("k1"), 0, "n-1").unwrap(), "u-1");
    assert!(check(&c, Some("k1"), 0, "n-2").is_err(), "wrong nonce");
    assert!(check(&c, Some("k1"), 1, "n-1").is_err(), "wrong key");
    assert!(check(&c, Some("nope"), 0, "n-1").is_err(), "unknown kid");
    let mut no_nonce = c.clone();
    no_nonce.as_object_mut().unwrap().remove("nonce");
    assert!(check(&no_nonce, Some("k1"), 0, "n-1").is_err(), "no nonce");
    for (field, value) in [
        ("iss", json!("https://evil.test/realms/acme")),
        ("aud", json!("account")),
        ("exp", json!(NOW - 31)),
        ("iat", json!(NOW + 3600)),
        ("typ", json!("Bearer")),
    ] {
        let mut bad = c.clone();
        bad[field] = value;
        let e = check(&bad, Some("k1"), 0, "n-1").unwrap_err();
        assert!(matches!(e, VerifyError::Rejected(_)), "{field}: {e}");
    }
    let mut skewed = c.clone();
    skewed["exp"] = json!(NOW - 10);
    check(&skewed, Some("k1"), 0, "n-1").unwrap();
    // HS256 keyed with the public key, and alg none: never an ID token.
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("k1".into());
    let key = EncodingKey::from_secret(rsa_key(0).public_pem.as_bytes());
    let hs: CoreIdToken = encode(&h, &c, &key).unwrap().parse().unwrap();
    assert!(verify_id_token(&hs, &jwks(), ISS, "berth", "n-1", NOW).is_err());
    let none = raw_token(json!({"alg": "none"}), &c, b"");
    if let Ok(t) = none.parse::<CoreIdToken>() {
        assert!(verify_id_token(&t, &jwks(), ISS, "berth", "n-1", NOW).is_err());
    }
}

#[test]
fn usernames_and_missing_claims() {
    for ok in ["alice", "a.b-c_d", "alice@example.com", "A1"] {
        assert!(valid_username(ok), "{ok}");
    }
    for bad in ["", "-a", "team-a/x", "a b", "a:b", &"a".repeat(129), "ä"] {
        assert!(!valid_username(bad), "{bad}");
    }
    let mut c = claims();
    c["preferred_username"] = json!("../admin");
    assert!(user_from_claims(&provider(), c.as_object().unwrap()).is_err());
    c.as_object_mut().unwrap().remove("preferred_username");
    assert!(user_from_claims(&provider(), c.as_object().unwrap()).is_err());
    // No sub: the username stands in.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    let u = user_from_claims(&provider(), c.as_object().unwrap()).unwrap();
    assert_eq!(u.subject, "alice");
}

#[test]
fn group_settings() {
    let mut p = provider();
    p.strip_group_slash = false;
    p.groups_prefix = "kc:".into();
    p.realm_roles = false;
    p.client_roles = vec![];
    let u = user_from_claims(&p, claims().as_object().unwrap()).unwrap();
    assert_eq!(u.groups, vec!["kc:/parent/child", "kc:/team-a"]);
}

#[test]
fn peek_recognises_jwts_only() {
    let t = sign(&claims(), Some("k1"), 0);
    let p = peek(&t).unwrap();
    assert_eq!(p.kid.as_deref(), Some("k1"));
    assert_eq!(p.issuer.as_deref(), Some(ISS));
    for not in ["hunter2", "eyJhbGciOi", "berth_oidc_x", "a.b.c"] {
        assert!(peek(not).is_none(), "{not}");
    }
}

proptest::proptest! {
    #[test]
    fn verify_never_panics(s in "\\PC{0,300}") {
        let a = auds();
        let _ = verify(&s, &jwks(), &expect(&a));
        let _ = peek(&s);
    }

    #[test]
    fn jwks_parser_never_panics(s in "\\PC{0,300}") {
        let _ = KeySet::from_json(s.as_bytes());
    }
}

pub(crate) fn provider() -> ProviderConfig {
    ProviderConfig {
        name: "kc".into(),
        display_name: "Keycloak".into(),
        issuer: ISS.into(),
        client_id: "berth".into(),
        client_secret: SecretSource::Env("X".into()),
        ca_file: None,
        username_claim: "preferred_username".into(),
        groups_claim: Some("groups".into()),
        groups_prefix: String::new(),
        strip_group_slash: true,
        realm_roles: true,
        realm_roles_prefix: "role:".into(),
        client_roles: vec!["berth".into()],
        client_roles_prefix: "role:".into(),
        password_grant: true,
        offline_sessions: false,
        token_as_password: true,
        audiences: vec!["berth".into()],
        token_username: TokenUsername::Match,
        browser_login: true,
        revalidate: Duration::from_secs(300),
        timeout: Duration::from_secs(5),
        grant_cache_ttl: Duration::from_secs(30),
        jwks_min_refetch: Duration::from_secs(10),
    }
}
