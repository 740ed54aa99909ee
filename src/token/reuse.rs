//! Token reuse and bounded signing: the one way `/token` gets a signed token.
//!
//! When the same identity (subject, kind and groups) asks the same service for
//! the same granted access within `token_reuse`, the token signed for the first
//! request is handed out again with its remaining lifetime. Only the signature
//! is reused: every request is still authenticated, evaluated against the
//! policy and recorded by the caller, and the reuse key is built from what this
//! request was granted, after all of that.
//!
//! Why this is safe: registries verify a token offline (signature, `iss`,
//! `aud`, `exp`/`nbf`, `access`) and keep no record of `jti`, so two clients
//! holding the same token are indistinguishable from two clients holding two
//! tokens with the same claims. A reused token's `exp` is the one it was signed
//! with, so reuse never extends a lifetime, and `expires_in` tells the client
//! the time actually left (at least `token_ttl - token_reuse`, which the
//! configuration keeps at 60 s or more).
//!
//! A stored token is only handed out while everything it was decided under
//! still holds; each of these makes it unusable:
//! - the policy in force is another one (any reload, even to the same rules);
//! - the keys directory was reloaded (rotation, publication, removal) or
//!   another key signs now;
//! - the authentication generation moved (a password, group or status change,
//!   a deleted user, a revoked refresh token), as this process knows it when
//!   the request arrives (on PostgreSQL, as the change notification announced
//!   it; see `store::generation`);
//! - a different service, or granted access that differs in any way (the key
//!   is the canonical access: per resource the union of actions, sorted, so
//!   order and duplicates of scopes do not matter, but a narrower or wider
//!   grant does).
//!
//! Revoked credentials (refresh tokens, personal access tokens, robots) are
//! refused by authentication before a token is looked up at all. Refresh tokens
//! are never stored here: they are per-issue secrets created by `authn`.
//!
//! Signing with RSA costs milliseconds of CPU, so RSA signatures run on the
//! blocking pool, at most one per core at a time: distinct requests queue for a
//! signing slot instead of occupying the async workers that answer every other
//! request (reused tokens, health checks, cheap ECDSA signatures).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::keys::{Algorithm, KeyError};
use super::signer::{IssuedToken, KeyEpoch, Signer};
use super::{Access, TokenError};
use crate::policy::{Identity, Policy};

/// Most bytes (keys and tokens) kept for reuse; least recently useful tokens
/// are evicted first beyond that.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// What a token is asked for, with what it was decided under.
#[derive(Debug)]
pub struct Order<'a> {
    /// Who the token is for.
    pub identity: &'a Identity,
    /// The audience.
    pub service: &'a str,
    /// The access granted by this request's policy evaluation.
    pub access: &'a [Access],
    /// The policy that granted it.
    pub policy: &'a Arc<Policy>,
    /// The authentication generation as known when the request arrived; `None`
    /// when it could not be read (then nothing is reused or stored).
    pub auth_generation: Option<i64>,
    /// The request's time.
    pub now: OffsetDateTime,
}

/// A token kept for reuse and what it was decided under.
struct Entry {
    token: Arc<str>,
    issued_at: OffsetDateTime,
    key: KeyEpoch,
    auth_generation: i64,
    /// Keeps the policy's allocation, so its address identifies it for as long
    /// as this entry lives (no other policy can be at that address meanwhile).
    policy: Weak<Policy>,
}

/// Issues tokens: reuses a recent one when allowed, else signs (bounded).
pub struct Tokens {
    signer: Arc<Signer>,
    window_secs: i64,
    ttl_secs: i64,
    entries: Option<moka::sync::Cache<String, Arc<Entry>>>,
    signing: Arc<Semaphore>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("window_secs", &self.window_secs)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

/// The reuse key: identity, service and canonical access, each field length
/// prefixed so no two different requests share a key.
pub fn reuse_key(identity: &Identity, service: &str, access: &[Access]) -> String {
    let mut out = String::with_capacity(64 + access.len() * 48);
    let mut field = |s: &str| {
        let _ = write!(out, "{}:{s}", s.len());
    };
    field(service);
    field(&identity.subject);
    field(&identity.kind.to_string());
    let mut groups: Vec<&str> = identity.groups.iter().map(String::as_str).collect();
    groups.sort_unstable();
    groups.dedup();
    field(&groups.len().to_string());
    for g in groups {
        field(g);
    }
    let mut canonical: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for a in access {
        canonical
            .entry((a.resource_type.as_str(), a.name.as_str()))
            .or_default()
            .extend(a.actions.iter().map(String::as_str));
    }
    field(&canonical.len().to_string());
    for ((kind, name), mut actions) in canonical {
        actions.sort_unstable();
        actions.dedup();
        field(kind);
        field(name);
        field(&actions.len().to_string());
        for action in actions {
            field(action);
        }
    }
    out
}

/// Whether signing with `alg` is slow enough to leave the async workers.
fn slow(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::Rs256 | Algorithm::Ps256)
}

impl Tokens {
    /// Issues with `signer`, reusing tokens for `window` (zero: never) out of
    /// tokens living `ttl`, and signing slowly-signed tokens at most
    /// `signing_slots` at a time.
    pub fn new(signer: Arc<Signer>, window: Duration, ttl: Duration, signing_slots: usize) -> Self {
        let window_secs = i64::try_from(window.as_secs()).unwrap_or(0);
        let entries = (window_secs > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|k: &String, v: &Arc<Entry>| {
                    u32::try_from(k.len() + v.token.len() + 96).unwrap_or(u32::MAX)
                })
                .time_to_live(window)
                .build()
        });
        Tokens {
            signer,
            window_secs,
            ttl_secs: i64::try_from(ttl.as_secs()).unwrap_or(300),
            entries,
            signing: Arc::new(Semaphore::new(signing_slots.max(1))),
        }
    }

    /// Whether tokens are reused at all (callers skip reading the
    /// authentication generation when not).
    pub fn reusing(&self) -> bool {
        self.entries.is_some()
    }

    /// Tokens held for reuse now (for tests and metrics).
    pub fn held(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// A token for `order`: a reused one when everything it was decided under
    /// still holds, else a freshly signed one (kept for later requests).
    pub async fn issue(&self, order: Order<'_>) -> Result<IssuedToken, TokenError> {
        let (Some(entries), Some(generation)) = (&self.entries, order.auth_generation) else {
            return self.sign(&order).await;
        };
        let key = reuse_key(order.identity, order.service, order.access);
        if let Some(reused) = self.reuse(entries, &key, &order, generation) {
            return Ok(reused);
        }
        let issued = self.sign(&order).await?;
        entries.insert(
            key,
            Arc::new(Entry {
                token: issued.token.clone(),
                issued_at: issued.issued_at,
                key: issued.key,
                auth_generation: generation,
                policy: Arc::downgrade(order.policy),
            }),
        );
        Ok(issued)
    }

    fn reuse(
        &self,
        entries: &moka::sync::Cache<String, Arc<Entry>>,
        key: &str,
        order: &Order<'_>,
        generation: i64,
    ) -> Option<IssuedToken> {
        let entry = entries.get(key)?;
        let age = order.now.unix_timestamp() - entry.issued_at.unix_timestamp();
        let (signing, _) = self.signer.signing_key(order.now)?;
        let same = entry.key == signing
            && entry.auth_generation == generation
            && std::ptr::eq(Weak::as_ptr(&entry.policy), Arc::as_ptr(order.policy))
            && (0..self.window_secs).contains(&age);
        if !same {
            return None;
        }
        Some(IssuedToken {
            token: entry.token.clone(),
            expires_in: u64::try_from(self.ttl_secs - age).ok()?,
            issued_at: entry.issued_at,
            key: entry.key,
        })
    }

    async fn sign(&self, order: &Order<'_>) -> Result<IssuedToken, TokenError> {
        let alg = self.signer.signing_key(order.now).map(|(_, alg)| alg);
        if !alg.is_some_and(slow) {
            return self.signer.issue(
                order.service,
                &order.identity.subject,
                order.access,
                order.now,
            );
        }
        let _slot = self
            .signing
            .acquire()
            .await
            .map_err(|_| KeyError::Generate("signing slots closed".into()))?;
        let signer = self.signer.clone();
        let (service, subject, access, now) = (
            order.service.to_owned(),
            order.identity.subject.clone(),
            order.access.to_vec(),
            order.now,
        );
        tokio::task::spawn_blocking(move || signer.issue(&service, &subject, &access, now))
            .await
            .map_err(|e| KeyError::Generate(format!("signing task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::policy::Kind;

    fn id(groups: &[&str]) -> Identity {
        Identity {
            subject: "alice".into(),
            kind: Kind::User,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            via: "t",
        }
    }

    fn acc(name: &str, actions: &[&str]) -> Access {
        Access {
            resource_type: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let a = reuse_key(
            &id(&["b", "a"]),
            "reg",
            &[acc("x/y", &["push", "pull"]), acc("p/q", &["pull"])],
        );
        let b = reuse_key(
            &id(&["a", "b", "a"]),
            "reg",
            &[
                acc("p/q", &["pull"]),
                acc("x/y", &["pull"]),
                acc("x/y", &["push", "pull"]),
                acc("p/q", &["pull"]),
            ],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn every_difference_matters() {
        let base = reuse_key(&id(&["a"]), "reg", &[acc("x/y", &["pull"])]);
        let others = [
            reuse_key(&id(&["a"]), "other", &[acc("x/y", &["pull"])]),
            reuse_key(&id(&["a", "b"]), "reg", &[acc("x/y", &["pull"])]),
            reuse_key(&id(&[]), "reg", &[acc("x/y", &["pull"])]),
            reuse_key(&id(&["a"]), "reg", &[acc("x/y", &["pull", "push"])]),
            reuse_key(&id(&["a"]), "reg", &[acc("x/y", &[])]),
            reuse_key(&id(&["a"]), "reg", &[]),
            reuse_key(
                &id(&["a"]),
                "reg",
                &[acc("x/y", &["pull"]), acc("x/z", &[])],
            ),
            reuse_key(
                &Identity {
                    kind: Kind::Robot,
                    ..id(&["a"])
                },
                "reg",
                &[acc("x/y", &["pull"])],
            ),
            reuse_key(
                &Identity {
                    subject: "alicE".into(),
                    ..id(&["a"])
                },
                "reg",
                &[acc("x/y", &["pull"])],
            ),
        ];
        for other in &others {
            assert_ne!(&base, other);
        }
        // Length prefixes: a name cannot smuggle in another field.
        let tricky = reuse_key(&id(&["a:b"]), "reg", &[]);
        let split = reuse_key(&id(&["a", "b"]), "reg", &[]);
        assert_ne!(tricky, split);
    }
}
