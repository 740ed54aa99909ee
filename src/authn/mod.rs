//! Authentication: turns credentials (Basic password, refresh token, or none) into
//! an [`Identity`] for policy.
//!
//! This module owns password checks, the credential cache and refresh tokens. It
//! does not decide access. Security invariants kept here:
//! - an unknown user costs the same hash work as a wrong password (dummy hash);
//! - hashing runs on the blocking pool behind a semaphore, so floods of wrong
//!   passwords cannot starve the async executor;
//! - the credential cache is keyed by a keyed hash, never the password, holds only
//!   successes, and every hit is checked against the user's current epoch;
//! - refresh tokens are stored only as SHA-256 hashes.

mod authorize;
mod chain;
mod error;
pub mod flight;
pub mod ldap;
mod local;
pub mod machine;
pub mod oidc;
pub mod password;
pub mod refresh;
pub mod throttle;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use ring::rand::SystemRandom;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::store::{Generation, Store, UserRecord};
pub use crate::types::{parse_group, Identity, Kind, Username};
pub use authorize::Authorization;
pub use error::AuthError;
use error::{directory_error, federated_error};

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Database id of the local user, if any (refresh tokens need it).
    pub user_id: Option<i64>,
    /// The identity for policy.
    pub identity: Identity,
    /// When set, tokens never carry other actions than these (tokens minted on
    /// the sign-in page are limited this way).
    pub allowed_actions: Option<Vec<String>>,
    /// The federated login behind this identity, if any (refresh tokens need it).
    pub federated: Option<Box<oidc::FederatedLogin>>,
    /// The directory login behind this identity, if any (refresh tokens need it).
    pub directory: Option<Box<ldap::DirectoryLogin>>,
    /// Scope limits of a personal access token: tokens carry at most what these
    /// cover, whatever the policy grants.
    pub limits: Option<Arc<[crate::policy::limit::Limit]>>,
    /// The authentication generation the credential check read (after the
    /// request arrived), when it read one: token reuse needs no second
    /// reading.
    pub generation: Option<i64>,
}

impl Authenticated {
    /// A local (or anonymous) authentication without limits.
    pub fn local(user_id: Option<i64>, identity: Identity) -> Self {
        Authenticated {
            user_id,
            identity,
            allowed_actions: None,
            federated: None,
            directory: None,
            limits: None,
            generation: None,
        }
    }

    /// The same, checked at authentication generation `generation`.
    pub fn at_generation(self, generation: i64) -> Self {
        Authenticated {
            generation: Some(generation),
            ..self
        }
    }

    /// Whether a token may carry `action` (policy decides whether it does).
    pub fn may_carry(&self, action: &str) -> bool {
        self.allowed_actions
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == action))
    }
}

#[derive(Clone)]
struct CachedCredential {
    user_id: i64,
    epoch: i64,
    identity: Identity,
    /// The authentication generation at the last check against the database;
    /// `None` until the first hit has checked it.
    generation: Option<i64>,
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// How long successes are cached; zero disables the cache.
    pub cache_ttl: Duration,
    /// Most cached entries.
    pub cache_size: u64,
    /// Most concurrent hash computations.
    pub hash_concurrency: usize,
    /// Refresh token idle expiry.
    pub refresh_idle: Duration,
    /// Refresh token absolute expiry.
    pub refresh_absolute: Duration,
    /// Login-name prefix of robot accounts (`robot$` makes `robot$ci`).
    pub robot_prefix: String,
    /// Password checks per account and client address per window.
    pub login_failure_limit: i64,
    /// Password checks per account from all addresses per window.
    pub login_failure_account_limit: i64,
    /// Password checks per client address for all accounts per window.
    pub login_failure_address_limit: i64,
    /// How long a password check may wait for a hashing slot before the
    /// request is answered 503.
    pub hash_queue_timeout: Duration,
    /// Least time a refused password sign-in takes (see `throttle`).
    pub refusal_floor: Duration,
    /// Window in which failures are counted.
    pub login_failure_window: Duration,
}

/// Checks credentials against the local database.
pub struct Authenticator {
    store: Store,
    cache: Option<moka::sync::Cache<[u8; 32], CachedCredential>>,
    refresh_cache: Option<moka::sync::Cache<[u8; 32], refresh::CachedRefresh>>,
    generation: Generation,
    cache_key: hmac::Key,
    dummy_hash: Arc<str>,
    hash_permits: Arc<Semaphore>,
    flights: flight::Flights,
    oidc: Option<Arc<oidc::Oidc>>,
    ldap: Option<Arc<ldap::Ldap>>,
    /// Order of backends for passwords (`auth_order`).
    order: Vec<oidc::Backend>,
    /// What to do when a federated or directory name is a local account.
    name_conflict: oidc::NameConflict,
    settings: AuthSettings,
    rng: SystemRandom,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn identity_of(user: &UserRecord, via: &'static str) -> Identity {
    Identity {
        subject: user.username.clone(),
        kind: Kind::User,
        groups: user.groups.clone(),
        via,
    }
}

impl Authenticator {
    /// Creates an authenticator. Computes a dummy hash (tens of milliseconds).
    pub fn new(store: Store, settings: AuthSettings) -> Result<Self, AuthError> {
        let rng = SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| AuthError::Internal("no randomness".into()))?;
        let mut random = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut random)
            .map_err(|_| AuthError::Internal("no randomness".into()))?;
        let dummy = password::hash(&SecretString::from(data_encoding::HEXLOWER.encode(&random)))
            .map_err(AuthError::Internal)?;
        let cache = (!settings.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.cache_size)
                .time_to_live(settings.cache_ttl)
                .build()
        });
        let refresh_cache = (!settings.cache_ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.cache_size)
                .time_to_live(settings.cache_ttl)
                .build()
        });
        Ok(Authenticator {
            generation: Generation::new(store.clone()),
            store,
            cache,
            refresh_cache,
            cache_key,
            dummy_hash: dummy.into(),
            hash_permits: Arc::new(Semaphore::new(settings.hash_concurrency)),
            flights: flight::Flights::default(),
            oidc: None,
            ldap: None,
            order: vec![oidc::Backend::Local],
            name_conflict: oidc::NameConflict::Refuse,
            settings,
            rng,
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
        })
    }

    /// The store behind this authenticator.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether these credentials passed recently (no database access).
    pub fn is_cached(&self, username: &str, password: &SecretString) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|c| c.contains_key(&self.cache_key(username, password)))
            || self
                .ldap
                .as_ref()
                .is_some_and(|l| l.is_cached(username, password))
    }

    fn cache_key(&self, username: &str, password: &SecretString) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        // Length-prefix the username so ("ab","c") and ("a","bc") differ.
        ctx.update(&(username.len() as u64).to_be_bytes());
        ctx.update(username.as_bytes());
        ctx.update(password.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Runs `f` on the blocking pool, at most `hash_concurrency` at a time.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = tokio::time::timeout(
            self.settings.hash_queue_timeout,
            self.hash_permits.acquire(),
        )
        .await
        .map_err(|_| AuthError::Overloaded)?;
        let _permit = permit.map_err(|_| AuthError::Internal("hash semaphore closed".into()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuthError::Internal(format!("hash task failed: {e}")))
    }

    /// Adds the OIDC providers to the chain (see `auth_order`, `name_conflict`).
    pub fn with_oidc(mut self, oidc: Option<oidc::Oidc>) -> Self {
        if let Some(o) = &oidc {
            self.order = o.order().to_vec();
            self.name_conflict = o.name_conflict();
        }
        self.oidc = oidc.map(Arc::new);
        self
    }

    /// Adds the LDAP/AD directories to the chain, in the place `order` gives
    /// them, with `name_conflict` for clashes with local names.
    pub fn with_ldap(
        mut self,
        ldap: Option<ldap::Ldap>,
        order: &[oidc::Backend],
        name_conflict: oidc::NameConflict,
    ) -> Self {
        if ldap.is_some() {
            self.order = order.to_vec();
            self.name_conflict = name_conflict;
        }
        self.ldap = ldap.map(Arc::new);
        self
    }

    /// The directory backend, when directories are configured.
    pub fn ldap(&self) -> Option<&Arc<ldap::Ldap>> {
        self.ldap.as_ref()
    }

    /// The OIDC backend, when providers are configured.
    pub fn oidc(&self) -> Option<&Arc<oidc::Oidc>> {
        self.oidc.as_ref()
    }

    /// Authenticates with a refresh token: federated ones go to the OIDC backend
    /// (which re-checks them with the provider), others to the local store.
    pub async fn refresh_token(
        &self,
        token: &SecretString,
        service: &str,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        if let Some(ldap) = &self.ldap {
            if ldap::session::is_session_token(token.expose_secret()) {
                return match ldap.refresh(token, service, now).await {
                    Ok(login) => self.directory(login, false).await,
                    Err(e) => Err(match directory_error(e) {
                        AuthError::BadCredentials => AuthError::BadRefreshToken,
                        other => other,
                    }),
                };
            }
        }
        match &self.oidc {
            Some(oidc) if oidc::session::is_session_token(token.expose_secret()) => {
                // The clash is checked on every use, not only at login: a local
                // account created since then owns the name, and a federated
                // session must not go on speaking for it.
                let refuse_clash = oidc.name_conflict() == oidc::NameConflict::Refuse;
                let outcome = match oidc.refresh(token, service, now).await {
                    Ok(login) => self.federated(login, refuse_clash).await,
                    Err(e) => Err(federated_error(e)),
                };
                outcome.map_err(|e| match e {
                    AuthError::BadCredentials => AuthError::BadRefreshToken,
                    other => other,
                })
            }
            _ => self.refresh(token, service, now).await,
        }
    }

    /// Issues a refresh token for a federated authentication that holds a
    /// provider session; `None` for other federated logins.
    pub async fn issue_federated_refresh(
        &self,
        auth: &Authenticated,
        service: &str,
        now: i64,
    ) -> Result<Option<SecretString>, AuthError> {
        match (&self.oidc, &auth.federated) {
            (Some(oidc), Some(login)) => oidc
                .issue_refresh(login, service, now)
                .await
                .map_err(federated_error),
            _ => Ok(None),
        }
    }

    /// The authentication generation as this server learns it (its listener
    /// task and metrics).
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// A mark of the moment a request arrived, for [`Authenticator::generation_since`].
    pub fn generation_ticket(&self) -> u64 {
        self.generation.ticket()
    }

    /// The authentication generation as of a reading begun after `ticket` was
    /// taken (shared with the reading the credential check itself made, if any).
    pub async fn generation_since(&self, ticket: u64) -> Result<i64, AuthError> {
        Ok(self.generation.since(ticket).await?)
    }

    /// Credential-cache hits, misses (password checks that had to hash) and
    /// entries, for metrics.
    pub fn cache_stats(&self) -> (u64, u64, u64) {
        (
            self.cache_hits.load(Ordering::Relaxed),
            self.cache_misses.load(Ordering::Relaxed),
            self.cache.as_ref().map_or(0, |c| c.entry_count()),
        )
    }

    /// Number of entries in the credential cache (for tests and metrics).
    pub fn cached_credentials(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Username;

    #[test]
    fn clash_form_folds_case_only() {
        let local = |s: &str| Username::clash_form(s).map(|u| u.as_str().to_owned());
        assert_eq!(local("Admin").as_deref(), Some("admin"));
        assert_eq!(local("ADMIN").as_deref(), Some("admin"));
        assert_eq!(local("admin").as_deref(), Some("admin"));
        // No local account can have these names: nothing to clash with.
        assert_eq!(local("alice@example.com"), None);
        assert_eq!(local("-x"), None);
        // Look-alikes outside ASCII never fold onto a local name (and federated
        // names are ASCII only, see jwt::valid_username).
        assert_eq!(local("\u{0430}dmin"), None);
        assert_eq!(local("adm\u{0131}n"), None);
    }
}
