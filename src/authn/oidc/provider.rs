//! One OpenID provider: discovery, the JWKS cache and the token endpoint.
//!
//! Grants (password, refresh token, authorization code) go through the
//! `openidconnect` client, whose HTTP goes through [`Provider::send`]: berth's
//! reqwest client with the provider's timeout and CA file, a 1 MiB cap on
//! answers, and the down-provider back-off. Hand-written here, because the crate
//! does not reach it:
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
//!   up on a dead or slow provider); an OAuth error is the user's refusal only
//!   for `invalid_grant`-like codes, anything else is berth's misconfiguration.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use openidconnect::core::{CoreClient, CoreErrorResponseType, CoreIdToken, CoreTokenResponse};
use openidconnect::http::header::ACCEPT;
use openidconnect::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, IssuerUrl, JsonWebKeySet, OAuth2TokenResponse,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, StandardErrorResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::{ProviderConfig, SecretSource};
use super::jwt::{self, Expect, FederatedUser, KeySet};
use super::OidcError;

/// How long a provider that failed at the transport level is not called again.
pub const DOWN_BACKOFF: Duration = Duration::from_secs(2);
/// Discovery and JWKS are refreshed this often even without an unknown `kid`.
const META_TTL: Duration = Duration::from_secs(3600);
/// Largest response body read from a provider.
const MAX_BODY: usize = 1024 * 1024;

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

/// Tokens from the token endpoint.
pub struct TokenSet {
    /// Access token (a JWT at Keycloak).
    pub access_token: String,
    /// ID token, when `openid` was asked for (not verified yet).
    pub id_token: Option<CoreIdToken>,
    /// Refresh token, if the provider gave one.
    pub refresh_token: Option<SecretString>,
}

/// The crate's client as berth sets it up: endpoints from discovery, the
/// client secret in the request body (`client_secret_post`).
pub type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// Why [`Provider::send`] got no answer the crate may read: transport failure,
/// an oversized answer, a 5xx, or a provider in its back-off.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The crate's requests go through [`Provider::send`].
impl<'c> AsyncHttpClient<'c> for Provider {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

type TokenError = RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>;

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

    fn down(&self, what: String) -> HttpError {
        self.mark(false);
        HttpError(what)
    }

    /// The HTTP client the crate's requests go through: berth's reqwest client
    /// (timeouts, CA file, no redirects). A transport failure or a 5xx marks the
    /// provider down; while it is down, nothing is sent. Answers over 1 MiB are
    /// refused. Any other answer is the provider's word, for the caller to read.
    pub async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let down = self.down_until.lock().map(|g| *g).unwrap_or(None);
        if down.is_some_and(|t| Instant::now() < t) {
            return Err(HttpError("down (recent failure), not called".into()));
        }
        let (parts, body) = req.into_parts();
        // The URL only: request bodies may hold passwords and the client secret.
        let what = format!("{} {}", parts.method, parts.uri);
        let sent = self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await;
        let mut resp = sent.map_err(|e| self.down(format!("{what}: {e}")))?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.down(format!("{what}: reading response: {e}")))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HttpError(format!("{what}: response larger than 1 MiB")));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_server_error() {
            return Err(self.down(format!("{what}: HTTP {status}")));
        }
        self.mark(true);
        let mut out = HttpResponse::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
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

    /// The crate's client with the endpoints discovery names.
    pub async fn client(&self) -> Result<Client, OidcError> {
        let meta = self.metadata().await?;
        let bad = |e: openidconnect::url::ParseError| {
            self.unavailable(format!("discovery names an invalid URL: {e}"))
        };
        Ok(CoreClient::new(
            ClientId::new(self.cfg.client_id.clone()),
            IssuerUrl::new(meta.issuer.clone()).map_err(bad)?,
            JsonWebKeySet::default(),
        )
        .set_client_secret(ClientSecret::new(self.secret.expose_secret().to_owned()))
        .set_auth_type(AuthType::RequestBody)
        .set_auth_uri(AuthUrl::new(meta.authorization_endpoint.clone()).map_err(bad)?)
        .set_token_uri(TokenUrl::new(meta.token_endpoint.clone()).map_err(bad)?))
    }

    /// The password (direct access) grant, for `openid` and, when `offline`,
    /// an offline session.
    pub async fn password_grant(
        &self,
        username: &str,
        password: &SecretString,
        offline: bool,
    ) -> Result<TokenSet, OidcError> {
        let client = self.client().await?;
        let user = ResourceOwnerUsername::new(username.to_owned());
        let pw = ResourceOwnerPassword::new(password.expose_secret().to_owned());
        let mut req = client
            .exchange_password(&user, &pw)
            .add_scope(Scope::new("openid".into()));
        if offline {
            req = req.add_scope(Scope::new("offline_access".into()));
        }
        self.tokens(req.request_async(self).await)
    }

    /// The refresh token grant: the provider session, as the provider sees it now.
    pub async fn refresh_grant(&self, refresh: &SecretString) -> Result<TokenSet, OidcError> {
        let client = self.client().await?;
        let token = RefreshToken::new(refresh.expose_secret().to_owned());
        let req = client.exchange_refresh_token(&token);
        self.tokens(req.request_async(self).await)
    }

    /// The authorization code grant of the browser flow, with its PKCE verifier.
    pub async fn code_grant(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenSet, OidcError> {
        let client = self.client().await?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcError::Internal(format!("redirect URI: {e}")))?;
        let req = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .set_redirect_uri(Cow::Owned(redirect));
        self.tokens(req.request_async(self).await)
    }

    /// A token endpoint's answer: tokens, the user's refusal (401), berth's
    /// misconfiguration, or an unavailable provider (503).
    fn tokens(&self, r: Result<CoreTokenResponse, TokenError>) -> Result<TokenSet, OidcError> {
        let refusal = match r {
            Ok(t) => {
                return Ok(TokenSet {
                    access_token: t.access_token().secret().clone(),
                    id_token: t.id_token().cloned(),
                    refresh_token: t.refresh_token().map(|r| r.secret().clone().into()),
                })
            }
            Err(RequestTokenError::ServerResponse(refusal)) => refusal,
            Err(RequestTokenError::Request(e)) => {
                return Err(self.unavailable(format!("token endpoint: {e}")))
            }
            Err(RequestTokenError::Parse(..)) => {
                return Err(self.unavailable(
                    "token endpoint answered with neither a token response nor an OAuth error",
                ))
            }
            Err(RequestTokenError::Other(why)) => {
                return Err(self.unavailable(format!("token endpoint: {why}")))
            }
        };
        let code = refusal.error().as_ref();
        let detail: String = format!(
            "{code}: {}",
            refusal.error_description().map_or("", String::as_str)
        )
        .chars()
        .take(200)
        .collect();
        match code {
            // The user's credentials, code or session: their problem.
            "invalid_grant" | "invalid_token" | "access_denied" => Err(OidcError::Rejected(detail)),
            // berth's client is misconfigured: nobody can fix it by retyping.
            _ => Err(OidcError::Config(format!(
                "provider {}: token endpoint refused berth's client ({detail})",
                self.cfg.name
            ))),
        }
    }
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
