//! LDAP and Active Directory as a direct identity source: the `[[ldap]]` backend
//! of the authentication chain.
//!
//! Owns: the directory settings ([`config`]), escaping of values put into filters
//! and DNs ([`escape`]), connections and their pool ([`conn`]), the sign-in flow
//! ([`directory`]), reading entries ([`entry`]), the short success cache, and
//! refresh sessions of directory users that are re-checked against the directory
//! ([`session`]). Does not decide access (policy does) and does not know local
//! accounts (the caller, `authn`, orders the chain and applies `name_conflict`).
//!
//! Failure rule: a directory that cannot be reached, is slow, or refuses berth's
//! service account gives [`LdapError::Unavailable`] or [`LdapError::Config`]
//! (503 "the directory is unavailable"); only a refused user bind, an unknown
//! name or a switched-off account gives a refusal (401).

pub use crate::config::ldap as config;
mod conn;
pub mod directory;
pub mod entry;
pub mod escape;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use ring::rand::SystemRandom;
use secrecy::{ExposeSecret, SecretString};

use crate::policy::{Identity, Kind};
use crate::store::{Store, StoreError};
pub use config::DirectoryConfig;
pub use directory::{Directory, DirectoryUser};

/// Why a directory authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The directory said no: unknown name, wrong password, switched-off account.
    #[error("refused by the directory: {0}")]
    Rejected(String),
    /// The directory is unreachable, slow, or answered something unusable.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// berth's directory settings are wrong (service account, CA file).
    #[error("directory misconfigured: {0}")]
    Config(String),
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Internal failure (no randomness).
    #[error("internal: {0}")]
    Internal(String),
}

/// A successful directory authentication.
#[derive(Clone)]
pub struct DirectoryLogin {
    /// The directory that vouched.
    pub directory: Arc<Directory>,
    /// The name the user signed in with (looked up again on re-checks).
    pub login: String,
    /// Who, as the directory describes them.
    pub user: DirectoryUser,
    /// Backend name for policy and audit.
    pub via: &'static str,
}

impl std::fmt::Debug for DirectoryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryLogin")
            .field("directory", &self.directory.cfg.name)
            .field("user", &self.user)
            .field("via", &self.via)
            .finish_non_exhaustive()
    }
}

impl DirectoryLogin {
    /// The identity policy sees.
    pub fn identity(&self) -> Identity {
        Identity {
            subject: self.user.username.clone(),
            kind: Kind::Directory,
            groups: self.user.groups.clone(),
            via: self.via,
        }
    }
}

/// Lifetimes of directory refresh sessions (same settings as local ones).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Expiry when unused.
    pub idle: Duration,
    /// Expiry after issue.
    pub absolute: Duration,
}

/// The configured directories and their state.
///
/// Binds are bounded by the sign-in attempts `authn::throttle` takes in the
/// database before any password check (at most `login_failure_limit` per
/// account and address per window, on every replica together), and identical
/// sign-ins in flight share one bind (`authn::flight`). This matters beyond
/// berth: Active Directory locks accounts out after its own failure count, and
/// a burst must not trip it.
pub struct Ldap {
    directories: Vec<Arc<Directory>>,
    caches: Vec<Option<moka::sync::Cache<[u8; 32], DirectoryLogin>>>,
    cache_key: hmac::Key,
    store: Store,
    limits: SessionLimits,
    rng: SystemRandom,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("directories", &self.directories)
            .finish_non_exhaustive()
    }
}

impl Ldap {
    /// Builds the directories (reads bind passwords and CA files); `None` when
    /// none is configured. Contacts no directory.
    pub fn new(
        configs: &[DirectoryConfig],
        store: Store,
        limits: SessionLimits,
    ) -> Result<Option<Ldap>, LdapError> {
        if configs.is_empty() {
            return Ok(None);
        }
        let directories = configs
            .iter()
            .map(|c| Directory::new(c.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let caches = directories
            .iter()
            .map(|d| {
                (!d.cfg.cache_ttl.is_zero()).then(|| {
                    moka::sync::Cache::builder()
                        .max_capacity(10_000)
                        .time_to_live(d.cfg.cache_ttl)
                        .build()
                })
            })
            .collect();
        let rng = SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| LdapError::Internal("no randomness".into()))?;
        Ok(Some(Ldap {
            directories,
            caches,
            cache_key,
            store,
            limits,
            rng,
        }))
    }

    /// The directories, in configuration order.
    pub fn directories(&self) -> &[Arc<Directory>] {
        &self.directories
    }

    fn directory_named(&self, name: &str) -> Option<&Arc<Directory>> {
        self.directories.iter().find(|d| d.cfg.name == name)
    }

    fn cache_key(&self, idx: usize, username: &str, password: &SecretString) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&(idx as u64).to_be_bytes());
        ctx.update(&(username.len() as u64).to_be_bytes());
        ctx.update(username.as_bytes());
        ctx.update(password.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether these credentials passed recently (no directory access).
    pub fn is_cached(&self, username: &str, password: &SecretString) -> bool {
        self.caches.iter().enumerate().any(|(idx, c)| {
            c.as_ref()
                .is_some_and(|c| c.contains_key(&self.cache_key(idx, username, password)))
        })
    }

    /// The login these credentials gave within `cache_ttl`, if any.
    pub fn cached(&self, username: &str, password: &SecretString) -> Option<DirectoryLogin> {
        self.caches.iter().enumerate().find_map(|(idx, c)| {
            c.as_ref()
                .and_then(|c| c.get(&self.cache_key(idx, username, password)))
        })
    }

    /// Checks a username and password with the directories in order. A refusal
    /// from one lets the next try; the first that accepts wins. When none
    /// accepts and one was unreachable, the result is "unavailable".
    pub async fn password(
        &self,
        username: &str,
        password: &SecretString,
        now: i64,
    ) -> Result<DirectoryLogin, LdapError> {
        let mut unavailable = None;
        let mut rejected = None;
        for (idx, dir) in self.directories.iter().enumerate() {
            let cache = self.caches.get(idx).and_then(Option::as_ref);
            let key = self.cache_key(idx, username, password);
            if let Some(hit) = cache.and_then(|c| c.get(&key)) {
                return Ok(hit);
            }
            match dir.authenticate(username, password, now).await {
                Ok(user) => {
                    let login = DirectoryLogin {
                        directory: dir.clone(),
                        login: username.to_owned(),
                        user,
                        via: "ldap",
                    };
                    if let Some(c) = cache {
                        c.insert(key, login.clone());
                    }
                    return Ok(login);
                }
                Err(e @ LdapError::Rejected(_)) => rejected = Some(e),
                Err(e) => {
                    tracing::warn!(directory = %dir.cfg.name, error = %e, "directory check failed");
                    unavailable = Some(e);
                }
            }
        }
        Err(unavailable
            .or(rejected)
            .unwrap_or_else(|| LdapError::Rejected("no directory configured".into())))
    }

    /// The database behind directory sessions.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
