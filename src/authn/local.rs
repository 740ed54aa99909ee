//! Local accounts: a username and password checked against the database, with
//! the credential cache in front (hits re-checked against the authentication
//! generation and the user's epoch), robots and personal access tokens routed
//! to their own checks, and bcrypt hashes upgraded to argon2id after a
//! successful login.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::{
    identity_of, machine, password, AuthError, Authenticated, Authenticator, CachedCredential,
    Username,
};
use crate::store::UserRecord;

impl Authenticator {
    /// Checks a username and password against the local database.
    pub(super) async fn local_password(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<Authenticated, AuthError> {
        // Robots and personal access tokens carry 256-bit secrets: no slow hash,
        // no cache needed.
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(name) = username.strip_prefix(self.settings.robot_prefix.as_str()) {
            return self.robot(username, name, &password, now).await;
        }
        if password
            .expose_secret()
            .starts_with(machine::ACCESS_TOKEN_PREFIX)
        {
            return self.access_token(username, &password, now).await;
        }
        let key = self.cache_key(username, &password);
        if let Some(cache) = &self.cache {
            if let Some(hit) = cache.get(&key) {
                // A hit is only good while the user is unchanged: any password, group
                // or status change bumps the epoch, from this process or another,
                // and with it the authentication generation. While the generation
                // stands still nothing needs rereading; when it moved, the user's
                // own row decides.
                let generation = self.generation.current().await?;
                if hit.generation == Some(generation) {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Authenticated::local(Some(hit.user_id), hit.identity)
                        .at_generation(generation));
                }
                match self.store.user_state(hit.user_id).await? {
                    Some((epoch, false)) if epoch == hit.epoch => {
                        self.cache_hits.fetch_add(1, Ordering::Relaxed);
                        let auth = Authenticated::local(Some(hit.user_id), hit.identity.clone())
                            .at_generation(generation);
                        cache.insert(
                            key,
                            CachedCredential {
                                generation: Some(generation),
                                ..hit
                            },
                        );
                        return Ok(auth);
                    }
                    _ => cache.invalidate(&key),
                }
            }
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let user = match Username::from_str(username) {
            Ok(name) => self.store.find_user(&name).await?,
            Err(_) => None,
        };
        let stored: Arc<str> = match &user {
            Some(u) => u.password_hash.as_str().into(),
            None => self.dummy_hash.clone(),
        };
        let pw = password.clone();
        let check_hash = stored.clone();
        let ok = self
            .hashing(move || password::verify(&pw, &check_hash))
            .await?;
        let user = match user {
            Some(u) if ok && !u.disabled => u,
            _ => return Err(AuthError::BadCredentials),
        };
        if password::kind_of(&user.password_hash) == password::HashKind::Bcrypt {
            self.upgrade(&user, password).await;
        }
        let identity = identity_of(&user, "local");
        if let Some(cache) = &self.cache {
            cache.insert(
                key,
                CachedCredential {
                    user_id: user.id,
                    epoch: user.epoch,
                    identity: identity.clone(),
                    generation: None,
                },
            );
        }
        Ok(Authenticated::local(Some(user.id), identity))
    }

    /// Re-hashes a bcrypt password with argon2id after a successful login.
    async fn upgrade(&self, user: &UserRecord, password: SecretString) {
        match self.hashing(move || password::hash(&password)).await {
            Ok(Ok(new)) => {
                if let Err(e) = self
                    .store
                    .upgrade_hash(user.id, &user.password_hash, &new)
                    .await
                {
                    tracing::warn!(user = %user.username, error = %e, "could not upgrade bcrypt hash");
                } else {
                    tracing::info!(user = %user.username, "upgraded bcrypt password hash to argon2id");
                }
            }
            Ok(Err(e)) | Err(AuthError::Internal(e)) => {
                tracing::warn!(user = %user.username, error = %e, "could not upgrade bcrypt hash")
            }
            Err(_) => {}
        }
    }
}
