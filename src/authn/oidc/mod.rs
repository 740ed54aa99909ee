//! Federation with OpenID Connect providers (Keycloak first): the `[[oidc]]`
//! backend of the authentication chain.
//!
//! Owns: provider discovery and keys ([`provider`]), offline JWT checks ([`jwt`]),
//! passwords checked with the provider's direct grant, provider access tokens given
//! as passwords, refresh sessions of federated users that are re-checked with the
//! provider ([`session`]), tokens minted on the sign-in page ([`pat`]) and the
//! browser code flow ([`browser`]). Does not decide access (policy does) and does
//! not know local accounts (the caller, `authn`, orders the chain).
//!
//! Failure rule: a provider that cannot be reached, is slow or answers nonsense
//! gives [`OidcError::Unavailable`] (503 "identity provider unreachable"); only a
//! provider's explicit "no" or an invalid token gives a refusal (401).

pub mod browser;
pub use crate::config::oidc as config;
pub mod jwt;
pub mod pat;
pub mod provider;
mod seal;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use ring::rand::SystemRandom;
use secrecy::{ExposeSecret, SecretString};

use crate::policy::{Identity, Kind};
use crate::store::{Store, StoreError};
pub use config::{Backend, NameConflict, OidcSettings, ProviderConfig, TokenUsername};
pub use jwt::FederatedUser;
pub use provider::Provider;

/// Why a federated authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider refused (wrong password, disabled user, ended session).
    #[error("refused by the identity provider: {0}")]
    Rejected(String),
    /// A token failed offline verification.
    #[error("{0}")]
    Token(#[from] jwt::VerifyError),
    /// The provider is unreachable, slow, or answered something unusable.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// berth's provider settings are wrong (client secret, issuer mismatch).
    #[error("identity provider misconfigured: {0}")]
    Config(String),
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Internal failure (no randomness).
    #[error("internal: {0}")]
    Internal(String),
}

/// A successful federated authentication.
#[derive(Clone)]
pub struct FederatedLogin {
    /// The provider that vouched.
    pub provider: Arc<Provider>,
    /// Who.
    pub user: FederatedUser,
    /// The provider's refresh token, when the login created a provider session
    /// (direct grant): lets berth hand out refresh tokens it can re-check.
    pub idp_refresh: Option<SecretString>,
    /// Backend name for policy and audit.
    pub via: &'static str,
    /// Most actions a token may carry (tokens from the sign-in page).
    pub allowed_actions: Option<Vec<String>>,
    /// Repository limits of a sign-in page token: tokens carry at most what
    /// these cover, whatever the policy grants.
    pub limits: Option<Arc<[crate::policy::limit::Limit]>>,
}

impl std::fmt::Debug for FederatedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederatedLogin")
            .field("provider", &self.provider.cfg.name)
            .field("user", &self.user)
            .field("via", &self.via)
            .field("allowed_actions", &self.allowed_actions)
            .finish_non_exhaustive()
    }
}

impl FederatedLogin {
    /// The identity policy sees.
    pub fn identity(&self) -> Identity {
        Identity {
            subject: self.user.username.clone(),
            kind: Kind::Federated,
            groups: self.user.groups.clone(),
            via: self.via,
        }
    }
}

/// Lifetimes of federated refresh sessions (same settings as local ones).
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Expiry when unused.
    pub idle: Duration,
    /// Expiry after issue.
    pub absolute: Duration,
}

/// The configured providers and federated state.
pub struct Oidc {
    providers: Vec<Arc<Provider>>,
    settings: OidcSettings,
    grant_caches: Vec<Option<moka::sync::Cache<[u8; 32], FederatedLogin>>>,
    cache_key: hmac::Key,
    store: Store,
    limits: SessionLimits,
    rng: SystemRandom,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("providers", &self.providers)
            .field("order", &self.settings.order)
            .field("name_conflict", &self.settings.name_conflict)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Builds the providers (reads client secrets); `None` when none is configured.
    /// Contacts no provider.
    pub fn new(
        settings: &OidcSettings,
        store: Store,
        limits: SessionLimits,
    ) -> Result<Option<Oidc>, OidcError> {
        if settings.providers.is_empty() {
            return Ok(None);
        }
        let providers = settings
            .providers
            .iter()
            .map(|p| Provider::new(p.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let grant_caches = providers
            .iter()
            .map(|p| {
                (!p.cfg.grant_cache_ttl.is_zero()).then(|| {
                    moka::sync::Cache::builder()
                        .max_capacity(10_000)
                        .time_to_live(p.cfg.grant_cache_ttl)
                        .build()
                })
            })
            .collect();
        let rng = SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| OidcError::Internal("no randomness".into()))?;
        Ok(Some(Oidc {
            providers,
            settings: settings.clone(),
            grant_caches,
            cache_key,
            store,
            limits,
            rng,
        }))
    }

    /// Order of backends for passwords.
    pub fn order(&self) -> &[Backend] {
        &self.settings.order
    }

    /// What to do when a federated name is also a local account.
    pub fn name_conflict(&self) -> NameConflict {
        self.settings.name_conflict
    }

    /// The providers, in configuration order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    fn provider_named(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    fn grant_cache_key(&self, idx: usize, username: &str, password: &SecretString) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(&(idx as u64).to_be_bytes());
        ctx.update(&(username.len() as u64).to_be_bytes());
        ctx.update(username.as_bytes());
        ctx.update(password.expose_secret().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Checks a username and password with the providers: a sign-in page token, a
    /// provider access token, or a password for the direct grant, in that order of
    /// recognition. `now` is unix seconds.
    pub async fn password(
        &self,
        username: &str,
        password: &SecretString,
        now: i64,
    ) -> Result<FederatedLogin, OidcError> {
        let pw = password.expose_secret();
        if pat::is_token(pw) {
            return self.token_login(username, password, now).await;
        }
        if let Some(peek) = jwt::peek(pw) {
            return self.bearer_login(username, pw, peek, now).await;
        }
        if !jwt::valid_username(username) {
            return Err(OidcError::Rejected("username not acceptable".into()));
        }
        let mut unavailable = None;
        let mut rejected = None;
        for (idx, p) in self.providers.iter().enumerate() {
            if !p.cfg.password_grant {
                continue;
            }
            match self.direct_grant(idx, p, username, password, now).await {
                Ok(login) => return Ok(login),
                Err(e @ (OidcError::Rejected(_) | OidcError::Token(_))) => rejected = Some(e),
                Err(e) => {
                    tracing::warn!(provider = %p.cfg.name, error = %e, "direct grant failed");
                    unavailable = Some(e);
                }
            }
        }
        Err(unavailable
            .or(rejected)
            .unwrap_or_else(|| OidcError::Rejected("no provider takes passwords".into())))
    }

    async fn direct_grant(
        &self,
        idx: usize,
        p: &Arc<Provider>,
        username: &str,
        password: &SecretString,
        now: i64,
    ) -> Result<FederatedLogin, OidcError> {
        let cache = self.grant_caches.get(idx).and_then(Option::as_ref);
        let key = self.grant_cache_key(idx, username, password);
        if let Some(hit) = cache.and_then(|c| c.get(&key)) {
            return Ok(hit);
        }
        let tokens = p
            .password_grant(username, password, p.cfg.offline_sessions)
            .await?;
        let user = p.user_from_access_token(&tokens.access_token, now).await?;
        let login = FederatedLogin {
            provider: p.clone(),
            user,
            idp_refresh: tokens.refresh_token,
            via: "oidc",
            allowed_actions: None,
            limits: None,
        };
        if let Some(c) = cache {
            c.insert(key, login.clone());
        }
        Ok(login)
    }

    async fn bearer_login(
        &self,
        username: &str,
        token: &str,
        peek: jwt::Peek,
        now: i64,
    ) -> Result<FederatedLogin, OidcError> {
        let issuer = peek.issuer.unwrap_or_default();
        // Picks the provider only (the configured issuer has no trailing
        // slash); verification then holds `iss` to the provider's exact issuer.
        let Some(p) = self
            .providers
            .iter()
            .find(|p| p.cfg.token_as_password && p.cfg.issuer == issuer.trim_end_matches('/'))
        else {
            return Err(OidcError::Rejected(format!(
                "token from an issuer no provider accepts tokens from ({:?})",
                issuer.chars().take(100).collect::<String>()
            )));
        };
        let user = p.user_from_bearer(token, now).await?;
        if p.cfg.token_username == TokenUsername::Match && user.username != username {
            return Err(OidcError::Rejected(format!(
                "token belongs to {:?}, not to the username given",
                user.username
            )));
        }
        Ok(FederatedLogin {
            provider: p.clone(),
            user,
            idp_refresh: None,
            via: "oidc-token",
            allowed_actions: None,
            limits: None,
        })
    }

    /// The database behind federated state.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
