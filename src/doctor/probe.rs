//! Probe tokens: signed by doctor with berth's key, varying one thing at a
//! time (the key's header form, the `aud` form, the algorithm), or carrying a
//! junk signature; and how the registry answered each.

use data_encoding::{BASE64, BASE64URL_NOPAD};
use ring::rand::SystemRandom;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{KeyIdMode, ServiceConfig};
use crate::token::jwks::kid_for;
use crate::token::keys::{Algorithm, SigningKey};
use crate::token::signer::sign_compact;

use super::fetch::fetch;

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Aud<'a> {
    One(&'a str),
    List([&'a str; 1]),
}

#[derive(Serialize)]
pub(super) struct ProbeClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Aud<'a>,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    access: [(); 0],
}

/// The JOSE header for `key` under `mode`, with `alg` (normally the key's own).
pub(super) fn probe_header(key: &SigningKey, mode: KeyIdMode, alg: &str) -> String {
    let json = match mode {
        KeyIdMode::X5c => serde_json::json!({
            "typ": "JWT",
            "alg": alg,
            "x5c": key.chain.iter().map(|c| BASE64.encode(c)).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({ "typ": "JWT", "alg": alg, "kid": kid_for(key, mode) }),
    };
    BASE64URL_NOPAD.encode(json.to_string().as_bytes())
}

pub(super) fn mode_name(mode: KeyIdMode) -> &'static str {
    match mode {
        KeyIdMode::Libtrust => "libtrust",
        KeyIdMode::Thumbprint => "thumbprint",
        KeyIdMode::X5c => "x5c",
    }
}

/// Everything a probe needs.
pub(super) struct Prober<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) registry: &'a str,
    pub(super) issuer: &'a str,
    pub(super) service: &'a ServiceConfig,
    pub(super) key: &'a SigningKey,
    /// The registry's clock.
    pub(super) now: OffsetDateTime,
    pub(super) rng: SystemRandom,
}

/// How the registry answered a probe.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Accepted,
    /// Refused with `error="invalid_token"` (or no challenge at all).
    Invalid,
    /// Refused without an error code: the key was found, the signature failed.
    SignatureOnly,
    Other(u16),
}

impl Prober<'_> {
    pub(super) async fn send(&self, token: &str) -> Verdict {
        let url = format!("{}/v2/", self.registry);
        match fetch(self.client.get(&url).bearer_auth(token)).await {
            Ok(a) if a.status == 200 => Verdict::Accepted,
            Ok(a) if a.status == 401 => match a.challenge.as_ref().and_then(|c| c.get("error")) {
                Some(_) => Verdict::Invalid,
                None if a.challenge.is_some() => Verdict::SignatureOnly,
                None => Verdict::Invalid,
            },
            Ok(a) => Verdict::Other(a.status),
            Err(_) => Verdict::Other(0),
        }
    }

    /// A correctly signed token like berth's, stamped with the registry's clock.
    pub(super) async fn valid(
        &self,
        mode: KeyIdMode,
        aud_list: bool,
        alg_override: Option<Algorithm>,
    ) -> Verdict {
        let iat = self.now.unix_timestamp();
        let mut jti = [0u8; 12];
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut jti);
        let claims = ProbeClaims {
            iss: self.issuer,
            sub: "berth-doctor",
            aud: if aud_list {
                Aud::List([&self.service.name])
            } else {
                Aud::One(&self.service.name)
            },
            exp: iat + 120,
            nbf: iat - 30,
            iat,
            jti: BASE64URL_NOPAD.encode(&jti),
            access: [],
        };
        let alg = alg_override.unwrap_or(self.key.alg);
        let header = probe_header(self.key, mode, alg.jose());
        let token = match alg_override {
            Some(other) => sign_as(self.key, other, &header, &claims, &self.rng),
            None => sign_compact(&header, &claims, self.key, &self.rng).ok(),
        };
        match token {
            Some(t) => self.send(&t).await,
            None => Verdict::Other(0),
        }
    }

    /// A token whose header names berth's key with `alg`, and whose signature is junk.
    pub(super) async fn bad_signature(&self, mode: KeyIdMode, alg: &str) -> Verdict {
        let iat = self.now.unix_timestamp();
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": "berth-doctor", "aud": self.service.name,
            "exp": iat + 120, "nbf": iat - 30, "iat": iat, "access": [],
        });
        let token = format!(
            "{}.{}.{}",
            probe_header(self.key, mode, alg),
            BASE64URL_NOPAD.encode(claims.to_string().as_bytes()),
            BASE64URL_NOPAD.encode(&[7u8; 64]),
        );
        self.send(&token).await
    }
}

/// Signs with the same RSA key under the other RSA algorithm (RS256 <-> PS256).
pub(super) fn sign_as(
    key: &SigningKey,
    alg: Algorithm,
    header: &str,
    claims: &impl Serialize,
    rng: &SystemRandom,
) -> Option<String> {
    let payload = serde_json::to_vec(claims).ok()?;
    let mut token = format!("{header}.{}", BASE64URL_NOPAD.encode(&payload));
    let sig = key.sign_with(alg, rng, token.as_bytes()).ok()?;
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&sig));
    Some(token)
}

/// Algorithms tried when looking for one the registry accepts with berth's key.
pub(super) const PROBE_ALGS: [&str; 11] = [
    "RS256", "ES256", "PS256", "EdDSA", "ES384", "RS384", "RS512", "ES512", "PS384", "PS512",
    "HS256",
];
