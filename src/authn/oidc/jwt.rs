//! Offline verification of provider-issued JWTs against the provider's JWKS, and
//! the mapping of verified claims to a federated user.
//!
//! The JWKS is read, and signatures are checked, with the `openidconnect`
//! crate's JWK code; ID tokens (browser sign-in) are verified wholly by its
//! verifier ([`verify_id_token`]). The claims of access tokens (from berth's own
//! grants, or given as passwords) are checked here by hand: the crate verifies
//! ID tokens and user-info answers only, and has no verifier for access tokens,
//! their audiences and authorized party, or for refusing an ID token offered as
//! one.
//!
//! Security invariants kept here:
//! - only asymmetric algorithms are accepted (`none` and `HS*` never are: an HMAC
//!   "signed" with the provider's public key must not verify);
//! - the header's `alg` must be one the key's type allows (and the JWK's own `alg`,
//!   when it names one), so a key is never used with another algorithm family;
//! - issuer, audience, expiry and not-before are checked against `now` given by the
//!   caller, with a small leeway for clock skew;
//! - tokens larger than [`MAX_TOKEN_LEN`] are refused before any decoding.

use std::collections::BTreeSet;

use data_encoding::BASE64URL_NOPAD;
use serde_json::{Map, Value};

use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet, CoreJsonWebKeyType,
    CoreJsonWebKeyUse, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClientId, IssuerUrl, JsonWebKey, JsonWebKeyAlgorithm, JsonWebKeySet, JwsSigningAlgorithm,
    Nonce, SignatureVerificationError,
};

use super::config::ProviderConfig;

/// Largest token accepted (Keycloak's are 1-3 KiB).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY: i64 = 30;
/// Most groups taken from one token.
pub const MAX_GROUPS: usize = 256;

/// Why a token was not accepted. The text is for logs; clients only learn that
/// their credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The algorithm is not an accepted asymmetric one.
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    /// No key with this id is published (the caller may refetch the JWKS).
    #[error("no published key with id {0:?}")]
    UnknownKey(String),
    /// Signature or claims are wrong.
    #[error("token rejected: {0}")]
    Rejected(String),
}

/// The signing keys a provider publishes: its JWKS as the `openidconnect`
/// crate reads it, less keys that cannot verify a signature (encryption keys,
/// symmetric keys). Keys of types or algorithms the crate does not know are
/// skipped, not fatal.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<CoreJsonWebKey>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the signature keys it can use.
    pub fn from_json(body: &[u8]) -> Result<KeySet, String> {
        let set: CoreJsonWebKeySet = serde_json::from_slice(body)
            .map_err(|e| format!("JWKS is not a valid key set: {e}"))?;
        let keys = set
            .keys()
            .iter()
            .filter(|k| {
                k.key_use()
                    .is_none_or(|u| *u == CoreJsonWebKeyUse::Signature)
            })
            .filter(|k| *k.key_type() != CoreJsonWebKeyType::Symmetric)
            .filter(|k| !matches!(k.signing_alg(), JsonWebKeyAlgorithm::Unsupported))
            .cloned()
            .collect();
        Ok(KeySet { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no usable key was published.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this id is known.
    pub fn has(&self, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.key_id().is_some_and(|id| **id == kid))
    }
}

/// The parts of a JWT header that matter before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    /// Key id, if any.
    pub kid: Option<String>,
    /// The `iss` claim as written (unverified: only to pick the provider).
    pub issuer: Option<String>,
}

fn b64_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = BASE64URL_NOPAD
        .decode(part.trim_end_matches('=').as_bytes())
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Whether `s` has the shape of a JWT (three base64url parts, JSON header with
/// `alg`), and if so its key id and unverified issuer. Cheap; verifies nothing.
pub fn peek(s: &str) -> Option<Peek> {
    if s.len() > MAX_TOKEN_LEN || s.len() < 16 || !s.starts_with("eyJ") {
        return None;
    }
    let mut parts = s.split('.');
    let (h, p, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header = b64_json(h)?;
    header.get("alg")?.as_str()?;
    let payload = b64_json(p)?;
    Some(Peek {
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        issuer: payload
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// What a verified token must satisfy.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// `aud` must contain one of these…
    pub audiences: &'a [String],
    /// …or `azp` must equal this (tokens berth obtained itself).
    pub authorized_party: Option<&'a str>,
    /// Accepted values of the `typ` claim when present (case-insensitive).
    pub typ: &'a [&'a str],
    /// Unix seconds.
    pub now: i64,
}

/// The header's `alg`, if it is an asymmetric signature algorithm.
fn header_alg(header: &str) -> Result<CoreJwsSigningAlgorithm, VerifyError> {
    let h = b64_json(header).ok_or(VerifyError::Malformed("header is not base64url JSON"))?;
    let alg = h
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(VerifyError::Malformed("header has no alg"))?;
    match serde_json::from_value::<CoreJwsSigningAlgorithm>(Value::from(alg)) {
        Ok(a) if a != CoreJwsSigningAlgorithm::None && !a.uses_shared_secret() => Ok(a),
        _ => Err(VerifyError::Algorithm(alg.chars().take(16).collect())),
    }
}

/// Verifies signature and claims; returns the claims. The signature is checked
/// with the crate's JWK code against the key the header's `kid` names (every
/// key when it names none).
pub fn verify(
    token: &str,
    keys: &KeySet,
    expect: &Expect<'_>,
) -> Result<Map<String, Value>, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not three dot-separated parts"));
    };
    let alg = header_alg(header)?;
    let kid =
        b64_json(header).and_then(|h| h.get("kid").and_then(Value::as_str).map(str::to_owned));
    let candidates: Vec<&CoreJsonWebKey> = match &kid {
        Some(kid) => match keys
            .keys
            .iter()
            .find(|k| k.key_id().is_some_and(|id| **id == *kid))
        {
            Some(k) => vec![k],
            None => return Err(VerifyError::UnknownKey(kid.chars().take(64).collect())),
        },
        None => keys.keys.iter().collect(),
    };
    let sig = BASE64URL_NOPAD
        .decode(sig.as_bytes())
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    let message = &token.as_bytes()[..header.len() + 1 + payload.len()];
    let mut last = VerifyError::Rejected("no key for this algorithm".into());
    let verified = candidates.into_iter().any(|key| {
        match key.verify_signature(&alg, message, &sig) {
            Ok(()) => return true,
            Err(SignatureVerificationError::CryptoError(e)) => {
                last = VerifyError::Rejected(format!("signature: {e}"));
            }
            Err(_) => last = VerifyError::Algorithm(format!("{alg:?} for this key")),
        }
        false
    });
    if !verified {
        return Err(last);
    }
    let claims =
        b64_json(payload).ok_or(VerifyError::Malformed("payload is not base64url JSON"))?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| VerifyError::Rejected(format!("{name} is not a number"))),
    }
}

/// Whether claims are an ID token's, also from providers that write no `typ`
/// claim (Keycloak writes `"typ": "ID"`). An ID token tells its client who
/// signed in; it is not a credential for anyone to present, and it travels
/// through browsers and front-ends that access tokens need not. So where an
/// access token is expected it is refused by what only ID tokens carry: the
/// hashes that bind it to an access token, code or state (OpenID Connect Core
/// §3.1.3.6, §3.3.2.11, FAPI), or a `nonce` or `auth_time` without any scope
/// (access tokens carry `scope` or `scp`; some providers copy the nonce into
/// them too).
fn is_id_token(claims: &Map<String, Value>) -> bool {
    let has = |k: &str| claims.contains_key(k);
    claims
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("ID"))
        || has("at_hash")
        || has("c_hash")
        || has("s_hash")
        || (!has("scope") && !has("scp") && (has("nonce") || has("auth_time")))
}

fn check_claims(claims: &Map<String, Value>, e: &Expect<'_>) -> Result<(), VerifyError> {
    let rejected = |m: &str| Err(VerifyError::Rejected(m.to_owned()));
    if claims.get("iss").and_then(Value::as_str) != Some(e.issuer) {
        return rejected("wrong issuer");
    }
    let Some(exp) = int_claim(claims, "exp")? else {
        return rejected("no exp");
    };
    if e.now >= exp + LEEWAY {
        return rejected("expired");
    }
    if let Some(nbf) = int_claim(claims, "nbf")? {
        if e.now + LEEWAY < nbf {
            return rejected("not yet valid");
        }
    }
    if let Some(iat) = int_claim(claims, "iat")? {
        if e.now + LEEWAY < iat {
            return rejected("issued in the future");
        }
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let aud_ok = auds.iter().any(|a| e.audiences.iter().any(|x| x == a));
    let azp_ok = e.authorized_party.is_some()
        && claims.get("azp").and_then(Value::as_str) == e.authorized_party;
    if !aud_ok && !azp_ok {
        return rejected("wrong audience");
    }
    if let Some(typ) = claims.get("typ").and_then(Value::as_str) {
        if !e.typ.iter().any(|t| t.eq_ignore_ascii_case(typ)) {
            return rejected("wrong token type");
        }
    }
    if is_id_token(claims) {
        return rejected("an ID token is not an access token");
    }
    Ok(())
}

/// Signature algorithms an ID token may use: asymmetric ones only.
const ID_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Verifies an ID token of the browser flow with the `openidconnect` crate:
/// signature (asymmetric algorithms only), exact issuer, audience `client_id`,
/// expiry and issue time with [`LEEWAY`] at `now`, and the `nonce` berth sent.
/// A `typ` claim, when present, must be `ID`. Returns the token's `sub`.
pub fn verify_id_token(
    token: &CoreIdToken,
    keys: &KeySet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: i64,
) -> Result<String, VerifyError> {
    let rejected = |m: String| VerifyError::Rejected(format!("ID token: {m}"));
    let issuer = IssuerUrl::new(issuer.to_owned()).map_err(|e| rejected(e.to_string()))?;
    let at = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new(client_id.to_owned()),
        issuer,
        JsonWebKeySet::new(keys.keys.clone()),
    )
    .set_allowed_algs(ID_TOKEN_ALGS)
    // As for access tokens: `aud` must name berth, other audiences may be there.
    .set_other_audience_verifier_fn(|_| true)
    .set_time_fn(move || at(now - LEEWAY))
    .set_issue_time_verifier_fn(move |iat| match iat.timestamp() > now + LEEWAY {
        true => Err("issued in the future".into()),
        false => Ok(()),
    });
    let claims = token
        .claims(&verifier, &Nonce::new(nonce.to_owned()))
        .map_err(|e| rejected(e.to_string()))?;
    // The signature holds, so the payload's `typ` (which the crate does not
    // read) is the provider's: an access token is not an ID token.
    let raw = token.to_string();
    let typ = raw.split('.').nth(1).and_then(b64_json);
    match typ
        .as_ref()
        .and_then(|c| c.get("typ"))
        .and_then(Value::as_str)
    {
        Some(t) if !t.eq_ignore_ascii_case("ID") => Err(rejected("wrong token type".into())),
        _ => Ok(claims.subject().to_string()),
    }
}

/// A federated user, as the provider's claims describe them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedUser {
    /// The provider's stable `sub`.
    pub subject: String,
    /// Username (the configured claim).
    pub username: String,
    /// Groups and roles, prefixed as configured, sorted.
    pub groups: Vec<String>,
}

/// Whether a provider username is acceptable as a berth account name: 1-128 of
/// `[A-Za-z0-9._@-]`, starting with a letter or digit. Rules out `/`, so a
/// federated name can never reach into another namespace through `${account}`.
pub fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

fn strings(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// Maps verified claims to a user, per the provider's settings.
pub fn user_from_claims(
    cfg: &ProviderConfig,
    claims: &Map<String, Value>,
) -> Result<FederatedUser, VerifyError> {
    let username = claims
        .get(&cfg.username_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| VerifyError::Rejected(format!("no {} claim", cfg.username_claim)))?;
    if !valid_username(username) {
        return Err(VerifyError::Rejected(format!(
            "username {:?} is not acceptable",
            username.chars().take(64).collect::<String>()
        )));
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .unwrap_or(username)
        .to_owned();
    let mut groups = BTreeSet::new();
    let mut add = |prefix: &str, name: &str| {
        let g = format!("{prefix}{name}");
        if groups.len() < MAX_GROUPS {
            if let Ok(g) = crate::authn::parse_group(&g) {
                groups.insert(g);
            }
        }
    };
    if let Some(claim) = &cfg.groups_claim {
        for g in strings(claims.get(claim)) {
            let g = if cfg.strip_group_slash {
                g.strip_prefix('/').unwrap_or(g)
            } else {
                g
            };
            add(&cfg.groups_prefix, g);
        }
    }
    if cfg.realm_roles {
        let roles = claims.get("realm_access").and_then(|r| r.get("roles"));
        for r in strings(roles) {
            add(&cfg.realm_roles_prefix, r);
        }
    }
    for client in &cfg.client_roles {
        let roles = claims
            .get("resource_access")
            .and_then(|r| r.get(client))
            .and_then(|c| c.get("roles"));
        for r in strings(roles) {
            add(&cfg.client_roles_prefix, r);
        }
    }
    Ok(FederatedUser {
        subject,
        username: username.to_owned(),
        groups: groups.into_iter().collect(),
    })
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
