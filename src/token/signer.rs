//! Builds and signs access tokens (JWS compact serialization).
//!
//! Issuing takes `now` as a parameter so claims are testable; the only outside input
//! is randomness for `jti` and ECDSA nonces.

use std::time::Duration;

use data_encoding::{BASE64, BASE64URL_NOPAD};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use time::OffsetDateTime;

use super::jwks::kid_for;
use super::keys::{KeyError, KeySet, SigningKey};
use crate::config::{Config, KeyIdMode, ServiceConfig};

/// Seconds `nbf` is set before `iat`, so a registry whose clock runs a little
/// behind still accepts a fresh token.
pub const NOT_BEFORE_SKEW: i64 = 30;

/// Errors issuing a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The requested service (audience) is not configured.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// No key can sign now.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// One entry of the token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Access {
    /// Resource type, e.g. `repository`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// Resource name.
    pub name: String,
    /// Granted actions, sorted; `[]` when nothing was granted.
    pub actions: Vec<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: &'a str,
    access: &'a [Access],
}

/// A signed token and its timing.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Issue time.
    pub issued_at: OffsetDateTime,
}

/// Signs tokens for the configured services with the active key.
#[derive(Debug)]
pub struct Signer {
    keys: KeySet,
    services: Vec<ServiceConfig>,
    /// Encoded JOSE header per key (outer) and service (inner), computed once.
    headers: Vec<Vec<String>>,
    issuer: String,
    ttl: Duration,
    rng: SystemRandom,
}

fn header(key: &SigningKey, mode: KeyIdMode) -> String {
    let json = match mode {
        KeyIdMode::X5c => serde_json::json!({
            "typ": "JWT",
            "alg": key.alg.jose(),
            "x5c": [BASE64.encode(&key.cert_der)],
        }),
        _ => serde_json::json!({
            "typ": "JWT",
            "alg": key.alg.jose(),
            "kid": kid_for(key, mode),
        }),
    };
    BASE64URL_NOPAD.encode(json.to_string().as_bytes())
}

impl Signer {
    /// Creates a signer over `keys` for the services in `config`.
    pub fn new(keys: KeySet, config: &Config) -> Self {
        let headers = keys
            .keys
            .iter()
            .map(|k| {
                config
                    .services
                    .iter()
                    .map(|s| header(k, s.key_id))
                    .collect()
            })
            .collect();
        Signer {
            keys,
            services: config.services.clone(),
            headers,
            issuer: config.issuer.clone(),
            ttl: config.token_ttl,
            rng: SystemRandom::new(),
        }
    }

    /// The keys this signer uses.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Index of a configured service, or an error for an unknown one.
    pub fn service_index(&self, service: &str) -> Result<usize, TokenError> {
        self.services
            .iter()
            .position(|s| s.name == service)
            .ok_or_else(|| TokenError::UnknownService(service.chars().take(100).collect()))
    }

    /// Issues a token for `subject` on `service` carrying `access`.
    pub fn issue(
        &self,
        service: &str,
        subject: &str,
        access: &[Access],
        now: OffsetDateTime,
    ) -> Result<IssuedToken, TokenError> {
        let service_idx = self.service_index(service)?;
        let key_idx = self
            .keys
            .keys
            .iter()
            .position(|k| k.valid_at(now))
            .ok_or_else(|| KeyError::NoKey(self.keys.dir.clone()))?;
        let key = &self.keys.keys[key_idx];
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| KeyError::Generate("no randomness".into()))?;
        let jti = BASE64URL_NOPAD.encode(&jti);
        let iat = now.unix_timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(300);
        let claims = Claims {
            iss: &self.issuer,
            sub: subject,
            aud: &self.services[service_idx].name,
            exp: iat + ttl,
            nbf: iat - NOT_BEFORE_SKEW,
            iat,
            jti: &jti,
            access,
        };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let header = &self.headers[key_idx][service_idx];
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header);
        token.push('.');
        token.push_str(&BASE64URL_NOPAD.encode(&payload));
        let signature = key.sign(&self.rng, token.as_bytes())?;
        token.push('.');
        token.push_str(&BASE64URL_NOPAD.encode(&signature));
        Ok(IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
            issued_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::config::Env;
    use crate::token::keys::{generate, Algorithm};
    use std::path::Path;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn signer(alg: Algorithm, mode: &str) -> (tempfile::TempDir, Signer) {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        generate(dir.path(), alg, now).unwrap();
        let cfg = Config::from_toml(
            Path::new("t.toml"),
            &format!("issuer='iss'\n[[service]]\nname='reg'\nkey_id='{mode}'"),
            &NoEnv,
        )
        .unwrap();
        let keys = KeySet::load(dir.path()).unwrap();
        (dir, Signer::new(keys, &cfg))
    }

    fn decoding_key(s: &Signer) -> jsonwebtoken::DecodingKey {
        let key = &s.keys().keys[0];
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
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&t.token, &decoding_key(&s), &v).unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], "alice");
        assert!(c["aud"].is_string(), "aud must be a JSON string");
        assert_eq!(
            c["access"][0]["actions"],
            serde_json::json!(["pull", "push"])
        );
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
        assert!(c["nbf"].as_i64().unwrap() < c["iat"].as_i64().unwrap());
        let key = &s.keys().keys[0];
        match mode {
            "libtrust" => assert_eq!(data.header.kid.as_deref(), Some(key.kid_libtrust.as_str())),
            "thumbprint" => assert_eq!(
                data.header.kid.as_deref(),
                Some(key.kid_thumbprint.as_str())
            ),
            _ => {
                assert!(data.header.kid.is_none());
                assert_eq!(data.header.x5c.unwrap()[0], BASE64.encode(&key.cert_der));
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
    fn unknown_service_is_refused() {
        let (_dir, s) = signer(Algorithm::Es256, "libtrust");
        assert!(matches!(
            s.issue("other", "a", &[], OffsetDateTime::now_utc()),
            Err(TokenError::UnknownService(_))
        ));
    }
}
