//! Builds and signs access tokens (JWS compact serialization).
//!
//! Issuing takes `now` as a parameter so claims are testable; the only outside input
//! is randomness for `jti` and ECDSA nonces. The keys directory is looked at again
//! at most every [`RELOAD_EVERY`] (a directory listing; files are read only when it
//! changed), so a key added by `berth key rotate` is served and starts signing at
//! its time without a restart.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use data_encoding::{BASE64, BASE64URL_NOPAD};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use time::OffsetDateTime;

use super::jwks::kid_for;
use super::keys::{Algorithm, KeyError, SigningKey};
use super::keyset::KeySet;
use crate::config::{Config, ServiceConfig};
use crate::types::KeyIdMode;

/// Seconds `nbf` is set before `iat`, so a registry whose clock runs a little
/// behind still accepts a fresh token.
pub const NOT_BEFORE_SKEW: i64 = 30;

/// How often the keys directory is checked for changes, in seconds.
pub const RELOAD_EVERY: i64 = 2;

/// The literal repository actions a granted `*` stands for.
pub const WILDCARD_ACTIONS: [&str; 3] = ["delete", "pull", "push"];

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
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    List([&'a str; 1]),
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Audience<'a>,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: &'a str,
    access: &'a [Access],
}

/// A signed token and its timing.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWS (shared: a reused token is handed out without a copy).
    pub token: Arc<str>,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Issue time.
    pub issued_at: OffsetDateTime,
    /// The key that signed it.
    pub key: KeyEpoch,
}

/// Which key signs: the load of the keys directory (any change to the key
/// files, a rotation or a publication, makes a new one) and the key's place in
/// it. Two tokens with equal epochs were signed by the same key under the same
/// published set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEpoch {
    /// Number of the load of the keys directory.
    pub load: u64,
    /// Index of the signing key in that load.
    pub index: usize,
}

/// Names and modification times of the key files, to notice changes cheaply.
type DirStamp = Vec<(String, Option<SystemTime>, u64)>;

fn dir_stamp(dir: &Path) -> DirStamp {
    let mut out: DirStamp = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    matches!(
                        e.path().extension().and_then(|x| x.to_str()),
                        Some("key" | "crt")
                    )
                })
                .map(|e| {
                    let meta = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        meta.as_ref().and_then(|m| m.modified().ok()),
                        meta.map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A key set with its encoded JOSE headers, per key (outer) and service (inner).
#[derive(Debug)]
struct Loaded {
    /// Number of this load (the first is 1).
    number: u64,
    keys: Arc<KeySet>,
    headers: Vec<Vec<String>>,
    stamp: DirStamp,
}

impl Loaded {
    fn new(number: u64, keys: KeySet, services: &[ServiceConfig]) -> Self {
        let headers = keys
            .keys
            .iter()
            .map(|k| services.iter().map(|s| header(k, s.key_id)).collect())
            .collect();
        let stamp = dir_stamp(&keys.dir);
        Loaded {
            number,
            keys: Arc::new(keys),
            headers,
            stamp,
        }
    }
}

/// Signs tokens for the configured services with the active key.
#[derive(Debug)]
pub struct Signer {
    loaded: RwLock<Arc<Loaded>>,
    /// Unix time of the last look at the keys directory.
    checked_at: AtomicI64,
    /// Loads of the keys directory so far.
    loads: AtomicU64,
    services: Vec<ServiceConfig>,
    issuer: String,
    ttl: Duration,
    rng: SystemRandom,
}

/// The encoded JOSE header `key` signs with under `mode`.
pub fn header(key: &SigningKey, mode: KeyIdMode) -> String {
    let json = match mode {
        KeyIdMode::X5c => serde_json::json!({
            "typ": "JWT",
            "alg": key.alg.jose(),
            "x5c": key.chain.iter().map(|c| BASE64.encode(c)).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({
            "typ": "JWT",
            "alg": key.alg.jose(),
            "kid": kid_for(key, mode),
        }),
    };
    BASE64URL_NOPAD.encode(json.to_string().as_bytes())
}

/// `access` with every granted `*` on a repository joined by the literal actions.
pub fn expand_wildcards(access: &[Access]) -> Vec<Access> {
    access
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if a.resource_type == "repository" && a.actions.iter().any(|x| x == "*") {
                a.actions
                    .extend(WILDCARD_ACTIONS.iter().map(|s| (*s).to_owned()));
                a.actions.sort();
                a.actions.dedup();
            }
            a
        })
        .collect()
}

/// Encodes and signs `claims` with `header` (already encoded) and `key`.
pub fn sign_compact(
    header: &str,
    claims: &impl Serialize,
    key: &SigningKey,
    rng: &SystemRandom,
) -> Result<String, KeyError> {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 400);
    token.push_str(header);
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&payload));
    let signature = key.sign(rng, token.as_bytes())?;
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&signature));
    Ok(token)
}

impl Signer {
    /// Creates a signer over `keys` for the services in `config`.
    pub fn new(keys: KeySet, config: &Config) -> Self {
        Signer {
            loaded: RwLock::new(Arc::new(Loaded::new(1, keys, &config.services))),
            checked_at: AtomicI64::new(OffsetDateTime::now_utc().unix_timestamp()),
            loads: AtomicU64::new(1),
            services: config.services.clone(),
            issuer: config.issuer.clone(),
            ttl: config.token_ttl,
            rng: SystemRandom::new(),
        }
    }

    fn loaded(&self) -> Arc<Loaded> {
        // A poisoned lock still holds a complete key set (it is only ever swapped whole).
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The loaded keys, after a look at the directory when the last one is
    /// [`RELOAD_EVERY`] old.
    fn current(&self, now: OffsetDateTime) -> Arc<Loaded> {
        let t = now.unix_timestamp();
        let last = self.checked_at.load(Ordering::Relaxed);
        if t - last >= RELOAD_EVERY
            && self
                .checked_at
                .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            match self.reload_if_changed(now) {
                Ok(true) => {
                    let loaded = self.loaded();
                    let active = loaded
                        .keys
                        .active(now)
                        .map(|k| k.name.clone())
                        .unwrap_or_default();
                    tracing::info!(keys = loaded.keys.keys.len(), %active, "signing keys reloaded");
                }
                Ok(false) => {}
                // Often a key being written right now; the next look retries.
                Err(e) => tracing::warn!(
                    error = %e,
                    "signing keys changed but cannot be loaded; keeping the previous keys"
                ),
            }
        }
        self.loaded()
    }

    /// The keys this signer uses (re-read when the directory changed).
    pub fn keys(&self) -> Arc<KeySet> {
        self.current(OffsetDateTime::now_utc()).keys.clone()
    }

    /// Reloads the keys directory when its key files changed. Keeps the current keys
    /// (and returns the error) when the new set cannot be loaded or cannot sign.
    pub fn reload_if_changed(&self, now: OffsetDateTime) -> Result<bool, KeyError> {
        let current = self.loaded();
        let stamp = dir_stamp(&current.keys.dir);
        if stamp == current.stamp {
            return Ok(false);
        }
        let keys = KeySet::load(&current.keys.dir)?;
        keys.active(now)?;
        let number = self.loads.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Arc::new(Loaded::new(number, keys, &self.services));
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(true)
    }

    /// The key that signs at `now` and its algorithm (after a look at the keys
    /// directory when due); `None` when no key can sign.
    pub fn signing_key(&self, now: OffsetDateTime) -> Option<(KeyEpoch, Algorithm)> {
        let loaded = self.current(now);
        let index = loaded.keys.active_index(now)?;
        let alg = loaded.keys.keys[index].alg;
        Some((
            KeyEpoch {
                load: loaded.number,
                index,
            },
            alg,
        ))
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
        let settings = &self.services[service_idx];
        let loaded = self.current(now);
        let key_idx = loaded
            .keys
            .active_index(now)
            .ok_or_else(|| KeyError::NoKey(loaded.keys.dir.clone()))?;
        let key = &loaded.keys.keys[key_idx];
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| KeyError::Generate("no randomness".into()))?;
        let jti = BASE64URL_NOPAD.encode(&jti);
        let iat = now.unix_timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(300);
        let expanded;
        let access = if settings.expand_wildcard {
            expanded = expand_wildcards(access);
            &expanded[..]
        } else {
            access
        };
        let claims = Claims {
            iss: &self.issuer,
            sub: subject,
            aud: if settings.audience_list {
                Audience::List([&settings.name])
            } else {
                Audience::One(&settings.name)
            },
            exp: iat + ttl,
            nbf: iat - NOT_BEFORE_SKEW,
            iat,
            jti: &jti,
            access,
        };
        let token = sign_compact(
            &loaded.headers[key_idx][service_idx],
            &claims,
            key,
            &self.rng,
        )?;
        Ok(IssuedToken {
            token: token.into(),
            expires_in: self.ttl.as_secs(),
            issued_at: now,
            key: KeyEpoch {
                load: loaded.number,
                index: key_idx,
            },
        })
    }
}

#[cfg(test)]
#[path = "signer_tests.rs"]
mod tests;
