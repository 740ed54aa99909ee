//! The browser sign-in: authorization code flow with PKCE (S256), `state` and
//! `nonce`, and the short server-side sessions of the sign-in page.
//!
//! The `openidconnect` crate builds the authorization URL (with its random
//! `state`, `nonce` and PKCE verifier) and makes the code exchange; berth's own
//! part is where the crate keeps nothing: carrying the flow between the two
//! requests in a sealed cookie, so that any replica finishes what another began.
//!
//! Invariants: nothing is written before the provider has authenticated the
//! user. A sign-in in progress (state, nonce, PKCE verifier) lives only in the
//! browser's flow cookie, sealed (AES-256-GCM) under a key derived from the
//! provider's client secret, so any replica opens it and nobody can forge or
//! read one; it expires after [`PENDING_TTL`]. The callback's `state` must equal
//! the sealed one (constant time), so the callback comes from the browser that
//! started the flow; the code is exchanged with the PKCE verifier only that
//! cookie holds, and a code is good for one exchange at the provider; the ID
//! token must carry the nonce berth sent. HTTP details (cookies, pages) are
//! `http::login`'s.
//!
//! Page sessions, created once the provider has vouched, live in the database so
//! replicas share them, keyed by SHA-256 of the session cookie and sealed under
//! it (the database alone holds no provider token). A session is re-checked with
//! the provider at most every `revalidate` while it lives, and always before a
//! token is minted: a user disabled or logged out at the provider is signed out,
//! and group changes take effect.

use std::sync::Arc;
use std::time::Duration;

use std::borrow::Cow;

use data_encoding::BASE64URL_NOPAD;
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge, RedirectUrl, Scope};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::jwt::{self, FederatedUser};
use super::seal::{self, random_string};
use super::{Oidc, OidcError, Provider};
use crate::authn::machine::secret_hash;
use crate::authn::refresh::TOUCH_GRANULARITY;
use crate::store::{Store, StoreError};

/// How long a started sign-in may take.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// How long a sign-in page session lasts without use.
pub const SESSION_IDLE: Duration = Duration::from_secs(1800);
/// Longest a sign-in page session lasts.
pub const SESSION_MAX: Duration = Duration::from_secs(8 * 3600);

/// Longest flow cookie value accepted (a sealed flow is about 500 bytes).
const MAX_FLOW_COOKIE: usize = 2048;
/// Authenticated with every sealed flow, with the provider's name.
const FLOW_AAD: &[u8] = b"berth sign-in flow v1 ";
/// Random bytes that make each flow cookie's key its own (see [`Provider::flow_key`]).
const FLOW_SALT: usize = 16;

/// A sign-in in progress, sealed into the browser's flow cookie.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    state: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
    expires_at: i64,
}

/// A signed-in browser, as sealed under its session id.
#[derive(Serialize, Deserialize)]
struct SealedSession {
    provider: String,
    subject: String,
    username: String,
    groups: Vec<String>,
    idp_refresh: Option<String>,
    csrf: String,
    /// Unix seconds of the last check with the provider (0 in sessions an
    /// older berth sealed: checked on first use).
    #[serde(default)]
    checked_at: i64,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Seals `value` (as JSON) under `key`.
fn seal_json<T: Serialize>(oidc: &Oidc, key: &str, value: &T) -> Result<Vec<u8>, OidcError> {
    let json = serde_json::to_string(value)
        .map(SecretString::from)
        .map_err(|e| OidcError::Internal(format!("encoding sign-in state: {e}")))?;
    seal::seal(&oidc.rng, key, &json).ok_or_else(|| OidcError::Internal("sealing failed".into()))
}

/// Opens what [`seal_json`] made; `None` when it does not open or parse.
fn open_json<T: for<'de> Deserialize<'de>>(key: &str, sealed: &[u8]) -> Option<T> {
    let json = seal::open(key, sealed)?;
    serde_json::from_str(json.expose_secret()).ok()
}

/// Removes browser sessions past their idle or absolute limit (and sign-ins in
/// progress an older berth kept in the database).
pub async fn purge(store: &Store, now: i64) -> Result<u64, StoreError> {
    store
        .purge_browser_flows(now, secs(SESSION_IDLE), secs(SESSION_MAX))
        .await
}

/// A signed-in browser.
pub struct BrowserSession {
    /// Provider that signed the user in.
    pub provider: Arc<Provider>,
    /// Who.
    pub user: FederatedUser,
    /// Offline refresh token (needed to mint tokens berth can re-check).
    pub idp_refresh: Option<SecretString>,
    /// Anti-CSRF token for the page's forms.
    pub csrf: String,
}

impl std::fmt::Debug for BrowserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSession")
            .field("provider", &self.provider.cfg.name)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Where to send the browser, and what to remember in its cookie.
#[derive(Debug)]
pub struct Started {
    /// The provider's authorization URL with all parameters.
    pub url: String,
    /// The flow cookie's value: the provider's name and the sealed flow. Opaque
    /// to the browser; the callback must bring it back.
    pub cookie: String,
}

fn flow_aad(provider: &str) -> Vec<u8> {
    [FLOW_AAD, provider.as_bytes()].concat()
}

impl Oidc {
    /// Providers offered on the sign-in page: `(name, display name)`.
    pub fn login_providers(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .filter(|p| p.cfg.browser_login)
            .map(|p| (p.cfg.name.clone(), p.cfg.display_name.clone()))
            .collect()
    }

    /// Starts a sign-in with provider `name`; the provider sends the browser back
    /// to `redirect_uri`.
    pub async fn begin_login(&self, name: &str, redirect_uri: &str) -> Result<Started, OidcError> {
        let Some(p) = self.browser_provider(name) else {
            return Err(OidcError::Rejected(format!("no sign-in provider {name:?}")));
        };
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| OidcError::Internal(format!("redirect URI: {e}")))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = p
            .client()
            .await?
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("offline_access".into()))
            .set_pkce_challenge(challenge)
            .set_redirect_uri(Cow::Owned(redirect))
            .url();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let pending = Pending {
            provider: p.cfg.name.clone(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
            expires_at: now + secs(PENDING_TTL),
        };
        // Nothing is stored: the flow travels in the browser's cookie, sealed.
        let json = serde_json::to_vec(&pending)
            .map_err(|e| OidcError::Internal(format!("encoding sign-in state: {e}")))?;
        let mut salt = [0u8; FLOW_SALT];
        ring::rand::SecureRandom::fill(&self.rng, &mut salt)
            .map_err(|_| OidcError::Internal("no randomness".into()))?;
        let sealed = p
            .flow_key(&salt)
            .and_then(|k| seal::seal_with(&self.rng, &k, &flow_aad(&p.cfg.name), &json))
            .ok_or_else(|| OidcError::Internal("sealing failed".into()))?;
        let cookie = [salt.as_slice(), &sealed].concat();
        Ok(Started {
            url: url.into(),
            cookie: format!("{}.{}", p.cfg.name, BASE64URL_NOPAD.encode(&cookie)),
        })
    }

    /// Opens a flow cookie: its provider and the sign-in it carries, if the
    /// cookie is one berth sealed for that provider and has not expired.
    fn open_flow(&self, cookie: &str, now: i64) -> Option<(Arc<Provider>, Pending)> {
        if cookie.len() > MAX_FLOW_COOKIE {
            return None;
        }
        let (name, sealed) = cookie.split_once('.')?;
        let p = self.browser_provider(name)?;
        let raw = BASE64URL_NOPAD.decode(sealed.as_bytes()).ok()?;
        let (salt, sealed) = raw.split_at_checked(FLOW_SALT)?;
        let json = seal::open_with(&p.flow_key(salt)?, &flow_aad(name), sealed)?;
        let pending: Pending = serde_json::from_slice(&json).ok()?;
        (pending.provider == name && now < pending.expires_at).then_some((p, pending))
    }

    /// Finishes a sign-in: opens the browser's flow cookie, checks that the
    /// callback's `state` is the one sealed in it, exchanges `code` with the PKCE
    /// verifier, verifies the ID token (nonce) and the access token. Returns the
    /// new session id.
    pub async fn finish_login(
        &self,
        state: &str,
        flow_cookie: &str,
        code: &str,
        now: i64,
    ) -> Result<(String, Arc<BrowserSession>), OidcError> {
        if state.is_empty() || state.len() > 128 {
            return Err(OidcError::Rejected("malformed sign-in state".into()));
        }
        let Some((p, pending)) = self.open_flow(flow_cookie, now) else {
            return Err(OidcError::Rejected(
                "unknown or expired sign-in state; start again".into(),
            ));
        };
        if !bool::from(pending.state.as_bytes().ct_eq(state.as_bytes())) {
            return Err(OidcError::Rejected(
                "the sign-in was started in another browser".into(),
            ));
        }
        if code.is_empty() || code.len() > 4096 {
            return Err(OidcError::Rejected("missing or oversized code".into()));
        }
        let tokens = p
            .code_grant(code, &pending.verifier, &pending.redirect_uri)
            .await?;
        let Some(id_token) = tokens.id_token.as_ref() else {
            return Err(OidcError::Rejected("provider returned no ID token".into()));
        };
        let id_sub = p.verify_id_token(id_token, &pending.nonce, now).await?;
        let user = p.user_from_access_token(&tokens.access_token, now).await?;
        if id_sub != user.subject {
            return Err(OidcError::Rejected(
                "ID token and access token name different users".into(),
            ));
        }
        if !jwt::valid_username(&user.username) {
            return Err(OidcError::Rejected("username not acceptable".into()));
        }
        let session_id = random_string(&self.rng, 32)
            .ok_or_else(|| OidcError::Internal("no randomness".into()))?;
        let csrf = random_string(&self.rng, 32)
            .ok_or_else(|| OidcError::Internal("no randomness".into()))?;
        let sealed = seal_json(
            self,
            &session_id,
            &SealedSession {
                provider: p.cfg.name.clone(),
                subject: user.subject.clone(),
                username: user.username.clone(),
                groups: user.groups.clone(),
                idp_refresh: tokens
                    .refresh_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                csrf: csrf.clone(),
                checked_at: now,
            },
        )?;
        self.store
            .insert_browser_session(&secret_hash(&session_id), &sealed, now)
            .await
            .map_err(OidcError::Store)?;
        let session = Arc::new(BrowserSession {
            provider: p,
            user,
            idp_refresh: tokens.refresh_token,
            csrf,
        });
        tracing::info!(provider = %session.provider.cfg.name, user = %session.user.username, "signed in on the sign-in page");
        Ok((session_id, session))
    }

    fn browser_provider(&self, name: &str) -> Option<Arc<Provider>> {
        self.providers
            .iter()
            .find(|p| p.cfg.name == name && p.cfg.browser_login)
            .cloned()
    }

    /// The session with this id, if it is alive; re-checked with the provider
    /// when its last check is `revalidate` old. A database failure or an
    /// unreachable provider counts as signed out for this request (logged; the
    /// session stays for the next one).
    pub async fn browser_session(&self, id: &str) -> Option<Arc<BrowserSession>> {
        match self.load_session(id, false).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot use a sign-in page session");
                None
            }
        }
    }

    /// The session re-checked with the provider now, however recent its last
    /// check: what minting a token needs. `Ok(None)` when the browser is signed
    /// out, or the provider refused the user (the session is then ended).
    pub async fn revalidated_session(
        &self,
        id: &str,
    ) -> Result<Option<Arc<BrowserSession>>, OidcError> {
        self.load_session(id, true).await
    }

    async fn load_session(
        &self,
        id: &str,
        force_check: bool,
    ) -> Result<Option<Arc<BrowserSession>>, OidcError> {
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let hash = secret_hash(id);
        let Some((sealed, created_at, last_used_at)) =
            self.store.find_browser_session(&hash).await?
        else {
            return Ok(None);
        };
        if now - last_used_at >= secs(SESSION_IDLE) || now - created_at >= secs(SESSION_MAX) {
            return Ok(None);
        }
        let Some(mut s) = open_json::<SealedSession>(id, &sealed) else {
            return Ok(None);
        };
        let Some(provider) = self.browser_provider(&s.provider) else {
            return Ok(None);
        };
        if force_check || now - s.checked_at >= secs(provider.cfg.revalidate) {
            let Some(idp) = s.idp_refresh.clone().map(SecretString::from) else {
                // Nothing to re-check the user with: the session ends here.
                self.store.delete_browser_session(&hash).await?;
                return Ok(None);
            };
            match self.recheck(&provider, &s.subject, &idp, now).await {
                Ok((fresh, next)) => {
                    s.username = fresh.username;
                    s.groups = fresh.groups;
                    s.idp_refresh = Some(next.expose_secret().to_owned());
                    s.checked_at = now;
                    let resealed = seal_json(self, id, &s)?;
                    self.store
                        .update_browser_session(&hash, &resealed, now)
                        .await?;
                }
                Err(e @ (OidcError::Rejected(_) | OidcError::Token(_))) => {
                    tracing::info!(provider = %provider.cfg.name, user = %s.username, error = %e, "provider refused a sign-in page user; signed out");
                    self.store.delete_browser_session(&hash).await?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        } else if now - last_used_at >= TOUCH_GRANULARITY {
            if let Err(e) = self.store.touch_browser_session(&hash, now).await {
                tracing::warn!(error = %e, "cannot record a sign-in page visit");
            }
        }
        Ok(Some(Arc::new(BrowserSession {
            provider,
            user: FederatedUser {
                subject: s.subject,
                username: s.username,
                groups: s.groups,
            },
            idp_refresh: s.idp_refresh.map(SecretString::from),
            csrf: s.csrf,
        })))
    }

    /// Signs a browser out.
    pub async fn end_browser_session(&self, id: &str) {
        if let Err(e) = self.store.delete_browser_session(&secret_hash(id)).await {
            tracing::warn!(error = %e, "cannot end a sign-in page session");
        }
    }
}

#[cfg(test)]
mod tests {
    use openidconnect::{PkceCodeChallenge, PkceCodeVerifier};

    /// The crate's S256 challenge is RFC 7636's (appendix B).
    #[test]
    fn pkce_rfc7636_appendix_b() {
        let verifier = PkceCodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        assert_eq!(
            PkceCodeChallenge::from_code_verifier_sha256(&verifier).as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
