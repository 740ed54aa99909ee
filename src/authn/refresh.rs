//! Refresh tokens: opaque, 256 random bits, stored only as SHA-256 hashes, bound to
//! a user and a service, with idle and absolute expiry.

use crate::authn::machine::secret_hash;
use data_encoding::BASE64URL_NOPAD;
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretString};

use super::{identity_of, AuthError, Authenticated, Authenticator, Identity};

/// Longest refresh token string accepted (ours are 43 characters).
pub const MAX_REFRESH_TOKEN_LEN: usize = 256;

/// A use more recent than this many seconds is not written back, so a burst of
/// token requests does not turn into a burst of database writes.
pub(crate) const TOUCH_GRANULARITY: i64 = 60;

/// A refresh token that passed a check against the database, kept in memory
/// under the token's SHA-256 (never the token). Good while the authentication
/// generation stands still and no use needs writing back.
#[derive(Clone)]
pub(super) struct CachedRefresh {
    user_id: i64,
    identity: Identity,
    service: String,
    last_used_at: i64,
    expires_at: i64,
    generation: i64,
}

impl Authenticator {
    /// A refresh token for `auth` at `service`, from whichever source
    /// authenticated it: the local database, the identity provider or the
    /// directory. `None` when that source gives none. A personal access token
    /// gets none: it would outlive the token's expiry and escape its limits.
    pub async fn refresh_for(
        &self,
        auth: &Authenticated,
        service: &str,
        now: i64,
    ) -> Result<Option<SecretString>, AuthError> {
        if auth.limits.is_some() {
            return Ok(None);
        }
        match auth.user_id {
            Some(user_id) => self.issue_refresh(user_id, service, now).await.map(Some),
            None if auth.federated.is_some() => {
                self.issue_federated_refresh(auth, service, now).await
            }
            None if auth.directory.is_some() => {
                self.issue_directory_refresh(auth, service, now).await
            }
            None => Ok(None),
        }
    }

    /// Creates and stores a refresh token for `user_id` on `service`.
    pub async fn issue_refresh(
        &self,
        user_id: i64,
        service: &str,
        now: i64,
    ) -> Result<SecretString, AuthError> {
        let mut raw = [0u8; 32];
        self.rng
            .fill(&mut raw)
            .map_err(|_| AuthError::Internal("no randomness".into()))?;
        let token = BASE64URL_NOPAD.encode(&raw);
        let expires =
            now + i64::try_from(self.settings.refresh_absolute.as_secs()).unwrap_or(i64::MAX / 2);
        self.store
            .insert_refresh(&secret_hash(&token), user_id, service, now, expires)
            .await?;
        Ok(SecretString::from(token))
    }

    /// Authenticates with a refresh token for `service`.
    pub async fn refresh(
        &self,
        token: &SecretString,
        service: &str,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        let token = token.expose_secret();
        if token.is_empty() || token.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(AuthError::BadRefreshToken);
        }
        let hash = secret_hash(token);
        let idle = i64::try_from(self.settings.refresh_idle.as_secs()).unwrap_or(i64::MAX / 2);
        // Read before the token row, so a cached entry never claims more than
        // the database showed at that generation.
        let generation = match &self.refresh_cache {
            Some(_) => Some(self.generation.current().await?),
            None => None,
        };
        if let (Some(cache), Some(generation)) = (&self.refresh_cache, generation) {
            if let Some(hit) = cache.get(&hash) {
                let fresh = now - hit.last_used_at < TOUCH_GRANULARITY.min(idle);
                if hit.generation == generation
                    && hit.service == service
                    && now < hit.expires_at
                    && fresh
                {
                    return Ok(Authenticated::local(Some(hit.user_id), hit.identity)
                        .at_generation(generation));
                }
            }
        }
        let Some(rec) = self.store.find_refresh(&hash).await? else {
            return Err(AuthError::BadRefreshToken);
        };
        let expired = now >= rec.expires_at || now - rec.last_used_at >= idle;
        if expired {
            self.store.delete_refresh(&hash).await?;
            return Err(AuthError::BadRefreshToken);
        }
        // Bound to its service: a token for one registry is no key to another.
        if rec.service != service || rec.user.disabled {
            return Err(AuthError::BadRefreshToken);
        }
        let mut last_used_at = rec.last_used_at;
        if now - rec.last_used_at >= TOUCH_GRANULARITY {
            self.store.touch_refresh(&hash, now).await?;
            last_used_at = now;
        }
        let identity = identity_of(&rec.user, "refresh");
        if let (Some(cache), Some(generation)) = (&self.refresh_cache, generation) {
            cache.insert(
                hash,
                CachedRefresh {
                    user_id: rec.user.id,
                    identity: identity.clone(),
                    service: rec.service,
                    last_used_at,
                    expires_at: rec.expires_at,
                    generation,
                },
            );
        }
        Ok(Authenticated::local(Some(rec.user.id), identity))
    }
}
