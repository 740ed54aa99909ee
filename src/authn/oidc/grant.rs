//! The token endpoint through the `openidconnect` client: its HTTP hook
//! ([`Provider::send`], berth's reqwest client), the client set up from
//! discovery, the password, refresh token and authorization code grants, and
//! the reading of the endpoint's answers. A refusal of the user's credentials,
//! code or session is a 401; a transport failure, a 5xx or an answer that is
//! neither tokens nor an OAuth error is a 503 (the crate lumps these together,
//! so berth tells them apart here); any other OAuth error is berth's
//! misconfiguration.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use openidconnect::core::{CoreClient, CoreErrorResponseType, CoreIdToken, CoreTokenResponse};
use openidconnect::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, IssuerUrl, JsonWebKeySet, OAuth2TokenResponse,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, StandardErrorResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use super::{OidcError, Provider, MAX_BODY};

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

impl Provider {
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
