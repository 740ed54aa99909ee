//! The provider's caches against a small scripted HTTP server: unknown key ids
//! refetch the JWKS at a bounded rate; a wrong or broken discovery document is
//! refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::authn::oidc::config::SecretSource;
use crate::authn::oidc::jwt::VerifyError;

struct Server {
    issuer: String,
    jwks_hits: Arc<AtomicUsize>,
}

/// Serves discovery (claiming `claimed_issuer`, or its own URL) and a JWKS.
fn server(claimed_issuer: Option<&str>, discovery_body: Option<&str>) -> Server {
    server_with(claimed_issuer, discovery_body, None)
}

/// [`server`] whose discovery claims its own URL followed by `suffix`, and
/// whose JWKS is `jwks`.
fn server_claiming(suffix: &str, jwks: String) -> Server {
    server_with(None, None, Some((suffix.to_owned(), jwks)))
}

fn server_with(
    claimed_issuer: Option<&str>,
    discovery_body: Option<&str>,
    own: Option<(String, String)>,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!(
        "http://127.0.0.1:{}/realms/t",
        listener.local_addr().unwrap().port()
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let (iss, h) = (issuer.clone(), hits.clone());
    let (suffix, jwks) = own.unzip();
    let claimed = claimed_issuer
        .map(str::to_owned)
        .or_else(|| suffix.map(|s| format!("{issuer}{s}")));
    let discovery_body = discovery_body.map(str::to_owned);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            r.read_line(&mut line).unwrap_or(0);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let body = if line.contains("/.well-known/openid-configuration") {
                discovery_body.clone().unwrap_or_else(|| {
                    serde_json::json!({
                        "issuer": claimed.clone().unwrap_or_else(|| iss.clone()),
                        "authorization_endpoint": format!("{iss}/auth"),
                        "token_endpoint": format!("{iss}/token"),
                        "jwks_uri": format!("{iss}/certs"),
                    })
                    .to_string()
                })
            } else if let Some(jwks) = &jwks {
                h.fetch_add(1, Ordering::SeqCst);
                jwks.clone()
            } else {
                h.fetch_add(1, Ordering::SeqCst);
                r#"{"keys":[{"kty":"RSA","kid":"real","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#.to_owned()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Server {
        issuer,
        jwks_hits: hits,
    }
}

fn provider(issuer: &str, min_refetch: Duration) -> Provider {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let mut cfg = crate::authn::oidc::jwt::tests::provider();
    cfg.issuer = issuer.to_owned();
    cfg.client_secret = SecretSource::File(secret);
    cfg.jwks_min_refetch = min_refetch;
    cfg.timeout = Duration::from_secs(3);
    Provider::new(cfg).unwrap()
}

fn token_with_kid(issuer: &str, kid: &str) -> String {
    use data_encoding::BASE64URL_NOPAD as B;
    let h = B.encode(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#).as_bytes());
    let p = B.encode(format!(r#"{{"iss":"{issuer}","exp":4102444800}}"#).as_bytes());
    format!("{h}.{p}.{}", B.encode(&[1u8; 256]))
}

async fn verify(p: &Provider, token: &str) -> Result<(), OidcError> {
    let auds = ["berth".to_owned()];
    let e = Expect {
        issuer: &p.cfg.issuer,
        audiences: &auds,
        authorized_party: None,
        typ: &["Bearer"],
        now: 1_700_000_000,
    };
    p.verify(token, &e).await.map(|_| ())
}

#[tokio::test]
async fn unknown_kids_refetch_at_a_bounded_rate() {
    let s = server(None, None);
    let p = provider(&s.issuer, Duration::from_secs(60));
    for i in 0..20 {
        let r = verify(&p, &token_with_kid(&s.issuer, &format!("forged-{i}"))).await;
        assert!(
            matches!(r, Err(OidcError::Token(VerifyError::UnknownKey(_)))),
            "{r:?}"
        );
    }
    assert_eq!(
        s.jwks_hits.load(Ordering::SeqCst),
        1,
        "one fetch, no refetch"
    );
    // A known kid with a bad signature: rejected, no refetch either.
    let r = verify(&p, &token_with_kid(&s.issuer, "real")).await;
    assert!(matches!(r, Err(OidcError::Token(_))), "{r:?}");
    assert_eq!(s.jwks_hits.load(Ordering::SeqCst), 1);

    let p = provider(&s.issuer, Duration::ZERO);
    for i in 0..3 {
        let _ = verify(&p, &token_with_kid(&s.issuer, &format!("new-{i}"))).await;
    }
    assert_eq!(
        s.jwks_hits.load(Ordering::SeqCst),
        1 + 3,
        "without a bound, each unknown kid refetches"
    );
}

#[tokio::test]
async fn discovery_for_another_issuer_or_garbage_is_refused() {
    let s = server(Some("http://evil.test/realms/t"), None);
    let p = provider(&s.issuer, Duration::from_secs(10));
    let e = p.metadata().await.unwrap_err();
    assert!(matches!(e, OidcError::Config(_)), "{e}");
    assert!(e.to_string().contains("evil.test"), "{e}");

    let s = server(None, Some("{\"issuer\": 42, garbage"));
    let p = provider(&s.issuer, Duration::from_secs(10));
    let e = p.metadata().await.unwrap_err();
    assert!(matches!(e, OidcError::Unavailable(_)), "{e}");

    // Nothing listens: unavailable, then failing fast during the back-off.
    let p = provider("http://127.0.0.1:9/realms/none", Duration::from_secs(10));
    assert!(matches!(p.metadata().await, Err(OidcError::Unavailable(_))));
    let e = p.metadata().await.unwrap_err();
    assert!(e.to_string().contains("not called"), "{e}");
}

/// A provider whose issuer ends in a slash (as some hosted providers' do): its
/// tokens verify against its own spelling, whether the operator configured the
/// issuer with the slash or without; a token naming the issuer without the
/// slash is another issuer's and is refused, and so is a slashed token from a
/// provider whose issuer has none.
#[tokio::test]
async fn issuers_with_a_trailing_slash_verify_exactly() {
    use crate::authn::oidc::jwt::tests::{jwks_json, sign};
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = |iss: &str| {
        sign(
            &serde_json::json!({
                "iss": iss, "sub": "u-1", "aud": "berth", "exp": now + 300,
                "iat": now - 5, "typ": "Bearer", "scope": "openid",
                "preferred_username": "alice", "groups": ["/team-a"],
            }),
            Some("k1"),
            0,
        )
    };
    let slashed = server_claiming("/", jwks_json(0));
    let real = format!("{}/", slashed.issuer);
    // The operator's `issuer = ".../t/"`, as config keeps it: without the slash.
    {
        let p = provider(&slashed.issuer, Duration::from_secs(10));
        assert_eq!(p.issuer().await.unwrap(), real);
        let user = p.user_from_bearer(&token(&real), now).await.unwrap();
        assert_eq!(user.username, "alice");
        let e = p
            .user_from_bearer(&token(&slashed.issuer), now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wrong issuer"), "{e}");
        let e = p
            .user_from_bearer(&token(&format!("{real}/")), now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wrong issuer"), "{e}");
    }
    // A provider without the slash does not take a slashed token either.
    let plain = server_claiming("", jwks_json(0));
    let p = provider(&plain.issuer, Duration::from_secs(10));
    p.user_from_bearer(&token(&plain.issuer), now)
        .await
        .unwrap();
    let e = p
        .user_from_bearer(&token(&format!("{}/", plain.issuer)), now)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong issuer"), "{e}");
}
