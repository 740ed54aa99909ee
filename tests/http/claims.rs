//! What a registry checks in a token: claims, lifetimes and unique `jti`s in
//! every key ID mode (libtrust, thumbprint, x5c), audience binding, and the
//! published JWKS and health answer.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use crate::support::{self, entry, now, Opts, TestServer, ISSUER, SVC};

/// A server with 10-minute tokens, no token reuse, and alice; and its JWKS.
async fn with_alice() -> (TestServer, Value) {
    let s = TestServer::start(Opts {
        token_ttl: "10m",
        // Fresh signatures each time (jti must not repeat); reuse has its own tests.
        extra: "token_reuse = '0'".into(),
        ..Opts::default()
    })
    .await;
    s.add_user("alice", "wonderland", &[]).await;
    let jwks = s.jwks().await;
    (s, jwks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_verify_in_every_key_id_mode() {
    let (s, jwks) = with_alice().await;
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
}

/// A token for one service does not verify as another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_does_not_verify_for_another_service() {
    let (s, jwks) = with_alice().await;
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
