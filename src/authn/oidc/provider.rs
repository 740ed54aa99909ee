//! One OpenID provider: discovery, the JWKS cache and token verification.
//!
//! Grants (password, refresh token, authorization code) go through the
//! `openidconnect` client ([`grant`]), whose HTTP goes through
//! [`Provider::send`]: berth's reqwest client with the provider's timeout and CA
//! file, a 1 MiB cap on answers, and the down-provider back-off. Hand-written
//! here, because the crate does not reach it:
//! - the discovery document is read into berth's own few fields. The crate's
//!   discovery insists on fields berth never uses (`response_types_supported`,
//!   …), holds the issuer to the configured one byte for byte (berth allows a
//!   trailing slash, then holds tokens to the provider's own spelling), and
//!   fetches the JWKS with every discovery, which would defeat the refetch
//!   policy below;
//! - the JWKS refetch policy: discovery and keys are fetched lazily (berth starts
//!   while the provider is down), kept, and refreshed hourly; an unknown `kid`
//!   refetches the JWKS at most once per `jwks_min_refetch`;
//! - telling 401 from 503: after a transport failure or a 5xx the provider is
//!   treated as down for [`DOWN_BACKOFF`] (calls fail at once instead of piling
//!   up on a dead or slow provider); see [`grant`] for the token endpoint's
//!   answers.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::CoreIdToken;
use openidconnect::http::header::ACCEPT;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{ProviderConfig, SecretSource};
use super::jwt::{self, Expect, FederatedUser, KeySet};
use super::OidcError;

#[path = "grant.rs"]
pub mod grant;
pub use grant::{Client, HttpError, TokenSet};

/// How long a provider that failed at the transport level is not called again.
pub const DOWN_BACKOFF: Duration = Duration::from_secs(2);
/// Discovery and JWKS are refreshed this often even without an unknown `kid`.
const META_TTL: Duration = Duration::from_secs(3600);
/// Largest response body read from a provider.
pub(super) const MAX_BODY: usize = 1024 * 1024;

/// The endpoints discovery tells.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Browser sign-in.
    pub authorization_endpoint: String,
    /// Grants.
    pub token_endpoint: String,
    /// Signing keys.
    pub jwks_uri: String,
    /// Logout, if offered.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

struct Cached<T> {
    value: Arc<T>,
    fetched: Instant,
}

/// A configured provider and its caches.
pub struct Provider {
    /// Settings.
    pub cfg: ProviderConfig,
    secret: SecretString,
    http: reqwest::Client,
    meta: RwLock<Option<Cached<Metadata>>>,
    keys: RwLock<Option<Cached<KeySet>>>,
    meta_fetching: tokio::sync::Mutex<()>,
    keys_fetching: tokio::sync::Mutex<()>,
    down_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.cfg.name)
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

fn read_secret(src: &SecretSource, name: &str) -> Result<SecretString, OidcError> {
    let value = match src {
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            OidcError::Config(format!(
                "provider {name}: cannot read client_secret_file {}: {e}",
                path.display()
            ))
        })?,
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            OidcError::Config(format!(
                "provider {name}: environment variable {var} (client_secret_env) is not set"
            ))
        })?,
    };
    let value = value.lines().next().unwrap_or("").trim().to_owned();
    if value.is_empty() {
        return Err(OidcError::Config(format!(
            "provider {name}: the client secret is empty"
        )));
    }
    Ok(SecretString::from(value))
}

impl Provider {
    /// Builds the provider: reads the client secret and CA file. Does not contact
    /// the provider.
    pub fn new(cfg: ProviderConfig) -> Result<Provider, OidcError> {
        let secret = read_secret(&cfg.client_secret, &cfg.name)?;
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                OidcError::Config(format!(
                    "provider {}: cannot read ca_file {}: {e}",
                    cfg.name,
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                OidcError::Config(format!(
                    "provider {}: ca_file {}: {e}",
                    cfg.name,
                    path.display()
                ))
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| OidcError::Config(format!("provider {}: {e}", cfg.name)))?;
        Ok(Provider {
            cfg,
            secret,
            http,
            meta: RwLock::new(None),
            keys: RwLock::new(None),
            meta_fetching: tokio::sync::Mutex::new(()),
            keys_fetching: tokio::sync::Mutex::new(()),
            down_until: Mutex::new(None),
        })
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> OidcError {
        OidcError::Unavailable(format!("provider {}: {what}", self.cfg.name))
    }

    fn mark(&self, up: bool) {
        if let Ok(mut g) = self.down_until.lock() {
            *g = (!up).then(|| Instant::now() + DOWN_BACKOFF);
        }
    }

    /// GET a JSON document; anything but a 2xx is unavailable.
    async fn get_json(&self, url: &str) -> Result<Vec<u8>, OidcError> {
        let req = openidconnect::http::Request::get(url)
            .header(ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| self.unavailable(format!("GET {url}: {e}")))?;
        let resp = self.send(req).await.map_err(|e| self.unavailable(e))?;
        if !resp.status().is_success() {
            return Err(self.unavailable(format!("GET {url}: HTTP {}", resp.status())));
        }
        Ok(resp.into_body())
    }

    fn cached_meta(&self, fresh_only: bool) -> Option<Arc<Metadata>> {
        let g = self.meta.read().ok()?;
        let c = g.as_ref()?;
        (!fresh_only || c.fetched.elapsed() < META_TTL).then(|| c.value.clone())
    }

    /// Discovery, fetched on first use and refreshed hourly (a stale copy is used
    /// while the provider cannot be reached).
    pub async fn metadata(&self) -> Result<Arc<Metadata>, OidcError> {
        if let Some(m) = self.cached_meta(true) {
            return Ok(m);
        }
        let _guard = self.meta_fetching.lock().await;
        if let Some(m) = self.cached_meta(true) {
            return Ok(m);
        }
        let url = format!("{}/.well-known/openid-configuration", self.cfg.issuer);
        let fetched = async {
            let body = self.get_json(&url).await?;
            let meta: Metadata = serde_json::from_slice(&body)
                .map_err(|e| self.unavailable(format!("discovery document is invalid: {e}")))?;
            // OpenID Connect Discovery §4.3: the issuer must be the one asked for,
            // or tokens from another issuer could be accepted.
            if meta.issuer.trim_end_matches('/') != self.cfg.issuer {
                return Err(OidcError::Config(format!(
                    "provider {}: discovery says issuer {:?}, configured {:?}",
                    self.cfg.name, meta.issuer, self.cfg.issuer
                )));
            }
            Ok(meta)
        }
        .await;
        match fetched {
            Ok(meta) => {
                let meta = Arc::new(meta);
                if let Ok(mut g) = self.meta.write() {
                    *g = Some(Cached {
                        value: meta.clone(),
                        fetched: Instant::now(),
                    });
                }
                Ok(meta)
            }
            Err(e) => match self.cached_meta(false) {
                Some(stale) => {
                    tracing::warn!(provider = %self.cfg.name, error = %e, "discovery refresh failed; using the previous document");
                    Ok(stale)
                }
                None => Err(e),
            },
        }
    }

    fn cached_keys(&self) -> Option<(Arc<KeySet>, Duration)> {
        let g = self.keys.read().ok()?;
        let c = g.as_ref()?;
        Some((c.value.clone(), c.fetched.elapsed()))
    }

    async fn fetch_keys(&self) -> Result<Arc<KeySet>, OidcError> {
        let meta = self.metadata().await?;
        let body = self.get_json(&meta.jwks_uri).await?;
        let keys = KeySet::from_json(&body).map_err(|e| self.unavailable(e))?;
        if keys.is_empty() {
            return Err(self.unavailable("JWKS holds no usable signing key"));
        }
        let keys = Arc::new(keys);
        if let Ok(mut g) = self.keys.write() {
            *g = Some(Cached {
                value: keys.clone(),
                fetched: Instant::now(),
            });
        }
        tracing::info!(provider = %self.cfg.name, keys = keys.len(), "fetched provider signing keys");
        Ok(keys)
    }

    /// Keys that can verify a token with this `kid`: the cached set, refetched when
    /// missing, an hour old, or lacking `kid` (at most once per `jwks_min_refetch`).
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, OidcError> {
        let usable = |(keys, age): &(Arc<KeySet>, Duration)| {
            *age < META_TTL && kid.is_none_or(|k| keys.has(k))
        };
        if let Some(c) = self.cached_keys().filter(usable) {
            return Ok(c.0);
        }
        let _guard = self.keys_fetching.lock().await;
        match self.cached_keys() {
            Some(c) if usable(&c) => Ok(c.0),
            // Unknown kid, fetched recently: no refetch (a flood of forged kids
            // must not turn into a flood of JWKS requests).
            Some((keys, age)) if age < self.cfg.jwks_min_refetch => Ok(keys),
            Some((keys, _)) => match self.fetch_keys().await {
                Ok(k) => Ok(k),
                Err(e) => {
                    tracing::warn!(provider = %self.cfg.name, error = %e, "JWKS refresh failed; using the previous keys");
                    // Count the failed attempt as a fetch, so the bound holds.
                    if let Ok(mut g) = self.keys.write() {
                        *g = Some(Cached {
                            value: keys.clone(),
                            fetched: Instant::now(),
                        });
                    }
                    Ok(keys)
                }
            },
            None => self.fetch_keys().await,
        }
    }

    /// Fetches (or takes from the cache) the signing keys; returns how many are
    /// usable. For checks from the command line.
    pub async fn signing_keys(&self) -> Result<usize, OidcError> {
        Ok(self.keys_for(None).await?.len())
    }

    /// Verifies a JWT from this provider.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expect<'_>,
    ) -> Result<Map<String, Value>, OidcError> {
        let kid = jwt::peek(token).and_then(|p| p.kid);
        let keys = self.keys_for(kid.as_deref()).await?;
        jwt::verify(token, &keys, expect).map_err(OidcError::Token)
    }

    /// The key that seals one of this provider's sign-ins in progress into a
    /// browser cookie. Derived from the client secret, which every replica has
    /// and no browser does, so any replica opens what another sealed and nobody
    /// else can forge one; rotating the secret only voids sign-ins in progress.
    /// The cookie's random `salt` gives each cookie its own key, so however many
    /// `/login/start` a stranger asks for, no key seals more than one flow and
    /// random nonces can never repeat under one key.
    pub fn flow_key(&self, salt: &[u8]) -> Option<ring::aead::LessSafeKey> {
        let label = [b"berth sign-in flow v1 ".as_slice(), salt].concat();
        super::seal::shared_key(&self.secret, &label)
    }

    /// The issuer tokens must name, exactly as the provider's discovery document
    /// writes it. The configured issuer is compared with it up to a trailing
    /// slash (discovery lives under the issuer without one), but tokens are held
    /// to the provider's own spelling: `https://sso.example.com/` verifies where
    /// the provider says so, and only there.
    pub async fn issuer(&self) -> Result<String, OidcError> {
        Ok(self.metadata().await?.issuer.clone())
    }

    /// Verifies an ID token from this provider's browser flow (see
    /// [`jwt::verify_id_token`]); returns its `sub`.
    pub async fn verify_id_token(
        &self,
        token: &CoreIdToken,
        nonce: &str,
        now: i64,
    ) -> Result<String, OidcError> {
        let kid = jwt::peek(&token.to_string()).and_then(|p| p.kid);
        let keys = self.keys_for(kid.as_deref()).await?;
        let issuer = self.issuer().await?;
        jwt::verify_id_token(token, &keys, &issuer, &self.cfg.client_id, nonce, now)
            .map_err(OidcError::Token)
    }

    /// Verifies an access token obtained by berth itself (grant responses): issuer,
    /// signature, expiry, and audience berth or authorized party berth.
    pub async fn user_from_access_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<FederatedUser, OidcError> {
        let issuer = self.issuer().await?;
        let expect = Expect {
            issuer: &issuer,
            audiences: &self.cfg.audiences,
            authorized_party: Some(&self.cfg.client_id),
            typ: &["Bearer", "at+jwt"],
            now,
        };
        let claims = self.verify(token, &expect).await?;
        jwt::user_from_claims(&self.cfg, &claims).map_err(OidcError::Token)
    }

    /// Verifies an access token given as a password: as above, but the audience
    /// must be one of `audiences` (a token for another client is refused).
    pub async fn user_from_bearer(
        &self,
        token: &str,
        now: i64,
    ) -> Result<FederatedUser, OidcError> {
        let issuer = self.issuer().await?;
        let expect = Expect {
            issuer: &issuer,
            audiences: &self.cfg.audiences,
            authorized_party: None,
            typ: &["Bearer", "at+jwt"],
            now,
        };
        let claims = self.verify(token, &expect).await?;
        jwt::user_from_claims(&self.cfg, &claims).map_err(OidcError::Token)
    }
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
