#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use crate::config::Env;
use crate::token::generate::generate;
use crate::token::keys::Algorithm;
use std::path::Path;

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn signer(alg: Algorithm, mode: &str) -> (tempfile::TempDir, Signer) {
    signer_with(alg, &format!("key_id='{mode}'"))
}

fn signer_with(alg: Algorithm, settings: &str) -> (tempfile::TempDir, Signer) {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    generate(dir.path(), alg, now, now).unwrap();
    let cfg = Config::from_toml(
        Path::new("t.toml"),
        &format!("issuer='iss'\n[[service]]\nname='reg'\n{settings}"),
        &NoEnv,
    )
    .unwrap();
    let keys = KeySet::load(dir.path()).unwrap();
    (dir, Signer::new(keys, &cfg))
}

fn decoding_key(s: &Signer) -> jsonwebtoken::DecodingKey {
    let keys = s.keys();
    let key = &keys.keys[0];
    match &key.public {
        crate::token::keys::PublicKey::Ec { x, y, .. } => {
            jsonwebtoken::DecodingKey::from_ec_components(
                &BASE64URL_NOPAD.encode(x),
                &BASE64URL_NOPAD.encode(y),
            )
            .unwrap()
        }
        crate::token::keys::PublicKey::Rsa { n, e } => {
            jsonwebtoken::DecodingKey::from_rsa_components(
                &BASE64URL_NOPAD.encode(n),
                &BASE64URL_NOPAD.encode(e),
            )
            .unwrap()
        }
        crate::token::keys::PublicKey::Okp { x, .. } => {
            jsonwebtoken::DecodingKey::from_ed_components(&BASE64URL_NOPAD.encode(x)).unwrap()
        }
    }
}

fn check(alg: Algorithm, jalg: jsonwebtoken::Algorithm, mode: &str) {
    let (_dir, s) = signer(alg, mode);
    let now = OffsetDateTime::now_utc();
    let access = vec![Access {
        resource_type: "repository".into(),
        name: "alice/app".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let t = s.issue("reg", "alice", &access, now).unwrap();
    let mut v = jsonwebtoken::Validation::new(jalg);
    v.set_audience(&["reg"]);
    v.set_issuer(&["iss"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&t.token, &decoding_key(&s), &v).unwrap();
    let c = data.claims;
    assert_eq!(c["sub"], "alice");
    assert!(c["aud"].is_string(), "aud must be a JSON string");
    assert_eq!(
        c["access"][0]["actions"],
        serde_json::json!(["pull", "push"])
    );
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    assert!(c["nbf"].as_i64().unwrap() < c["iat"].as_i64().unwrap());
    let keys = s.keys();
    let key = &keys.keys[0];
    match mode {
        "libtrust" => assert_eq!(data.header.kid.as_deref(), Some(key.kid_libtrust.as_str())),
        "thumbprint" => assert_eq!(
            data.header.kid.as_deref(),
            Some(key.kid_thumbprint.as_str())
        ),
        _ => {
            assert!(data.header.kid.is_none());
            let x5c = data.header.x5c.unwrap();
            assert_eq!(x5c[0], BASE64.encode(&key.cert_der));
            assert_eq!(x5c.len(), 2, "leaf and berth's CA");
        }
    }
    // jti differs per token; an empty access list serialises as [] not null.
    let t2 = s.issue("reg", "", &[], now).unwrap();
    let c2 = jsonwebtoken::decode::<serde_json::Value>(&t2.token, &decoding_key(&s), &v)
        .unwrap()
        .claims;
    assert_ne!(c["jti"], c2["jti"]);
    assert_eq!(c2["access"], serde_json::json!([]));
}

#[test]
fn es256_all_modes() {
    for mode in ["libtrust", "thumbprint", "x5c"] {
        check(Algorithm::Es256, jsonwebtoken::Algorithm::ES256, mode);
    }
}

#[test]
fn rs256_libtrust() {
    check(Algorithm::Rs256, jsonwebtoken::Algorithm::RS256, "libtrust");
}

#[test]
fn other_algorithms_verify() {
    check(
        Algorithm::Es384,
        jsonwebtoken::Algorithm::ES384,
        "thumbprint",
    );
    check(Algorithm::Ps256, jsonwebtoken::Algorithm::PS256, "x5c");
    check(
        Algorithm::EdDsa,
        jsonwebtoken::Algorithm::EdDSA,
        "thumbprint",
    );
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).unwrap()).unwrap()
}

#[test]
fn per_service_wildcard_and_audience_list() {
    let access = vec![
        Access {
            resource_type: "repository".into(),
            name: "a/b".into(),
            actions: vec!["*".into()],
        },
        Access {
            resource_type: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        },
        Access {
            resource_type: "repository".into(),
            name: "c/d".into(),
            actions: vec!["pull".into()],
        },
    ];
    let now = OffsetDateTime::now_utc();
    let (_d, plain) = signer(Algorithm::Es256, "x5c");
    let c = claims_of(&plain.issue("reg", "u", &access, now).unwrap().token);
    assert_eq!(c["aud"], "reg");
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["*"]));

    let (_d, zot) = signer_with(
        Algorithm::Es256,
        "expand_wildcard = true\naudience_list = true",
    );
    let c = claims_of(&zot.issue("reg", "u", &access, now).unwrap().token);
    assert_eq!(c["aud"], serde_json::json!(["reg"]));
    assert_eq!(
        c["access"][0]["actions"],
        serde_json::json!(["*", "delete", "pull", "push"])
    );
    assert_eq!(c["access"][1]["actions"], serde_json::json!(["*"]));
    assert_eq!(c["access"][2]["actions"], serde_json::json!(["pull"]));
}

#[test]
fn rotated_key_signs_from_its_time_after_reload() {
    let (dir, s) = signer(Algorithm::Es256, "x5c");
    let now = OffsetDateTime::now_utc();
    let first = s.keys().keys[0].name.clone();
    assert!(!s.reload_if_changed(now).unwrap(), "nothing changed");
    let at = now + time::Duration::seconds(30);
    let next = generate(dir.path(), Algorithm::Rs256, now, at).unwrap();
    assert!(s.reload_if_changed(now).unwrap());
    let alg_of = |t: &str| {
        let h = t.split('.').next().unwrap();
        let h: serde_json::Value =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(h.as_bytes()).unwrap()).unwrap();
        h["alg"].as_str().unwrap().to_owned()
    };
    let before = s.issue("reg", "u", &[], now).unwrap().token;
    assert_eq!(alg_of(&before), "ES256", "{first} still signs");
    let after = s.issue("reg", "u", &[], at).unwrap().token;
    assert_eq!(alg_of(&after), "RS256", "{next} signs from its time");
}

#[test]
fn unknown_service_is_refused() {
    let (_dir, s) = signer(Algorithm::Es256, "libtrust");
    assert!(matches!(
        s.issue("other", "a", &[], OffsetDateTime::now_utc()),
        Err(TokenError::UnknownService(_))
    ));
}
