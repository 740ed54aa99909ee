//! Refresh tokens (docker's identity tokens) for federated users, tied to the
//! provider session that the login created.
//!
//! Each use within `revalidate` of the last check is answered from the database;
//! after that, berth refreshes the provider session: a user who was disabled,
//! logged out or deleted is refused and the berth session is deleted; new groups
//! take effect. A provider that cannot be reached gives 503, never stale access
//! beyond the window.

use crate::authn::machine::secret_hash;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::seal;
use super::{FederatedLogin, FederatedUser, Oidc, OidcError, Provider};
use crate::store::oidc::{FederatedOwner, OidcSessionRecord};

/// Prefix of federated refresh tokens (local ones have none).
pub const PREFIX: &str = "oidc.";
/// Longest federated refresh token accepted.
const MAX_LEN: usize = 128;

/// Whether a refresh token is a federated one.
pub fn is_session_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

pub(super) fn owner_of(p: &Provider, user: &FederatedUser) -> FederatedOwner {
    FederatedOwner {
        provider: p.cfg.name.clone(),
        subject: user.subject.clone(),
        username: user.username.clone(),
        groups: user.groups.clone(),
    }
}

pub(super) fn user_of(owner: &FederatedOwner) -> FederatedUser {
    FederatedUser {
        subject: owner.subject.clone(),
        username: owner.username.clone(),
        groups: owner.groups.clone(),
    }
}

impl Oidc {
    /// Re-checks a federated user with the provider through their provider refresh
    /// token. Returns the user as the provider sees them now and the provider's
    /// next refresh token.
    pub(super) async fn recheck(
        &self,
        p: &Arc<Provider>,
        subject: &str,
        idp_refresh: &SecretString,
        now: i64,
    ) -> Result<(FederatedUser, SecretString), OidcError> {
        let tokens = p.refresh_grant(idp_refresh).await?;
        let user = p.user_from_access_token(&tokens.access_token, now).await?;
        if user.subject != subject {
            return Err(OidcError::Rejected(
                "provider session now belongs to another subject".into(),
            ));
        }
        // Providers that do not rotate refresh tokens omit a new one.
        let next = tokens.refresh_token.unwrap_or_else(|| idp_refresh.clone());
        Ok((user, next))
    }

    /// Issues a refresh token for a federated login bound to `service`, when the
    /// login holds a provider session; `None` otherwise (token-as-password logins
    /// have nothing berth could re-check).
    pub async fn issue_refresh(
        &self,
        login: &FederatedLogin,
        service: &str,
        now: i64,
    ) -> Result<Option<SecretString>, OidcError> {
        let Some(idp) = &login.idp_refresh else {
            return Ok(None);
        };
        if login.allowed_actions.is_some() || login.limits.is_some() {
            return Ok(None);
        }
        let token = seal::new_token(&self.rng, PREFIX)
            .ok_or_else(|| OidcError::Internal("no randomness".into()))?;
        let sealed = seal::seal(&self.rng, token.expose_secret(), idp)
            .ok_or_else(|| OidcError::Internal("cannot seal".into()))?;
        let rec = OidcSessionRecord {
            owner: owner_of(&login.provider, &login.user),
            service: service.to_owned(),
            idp_refresh: sealed,
            created_at: now,
            last_used_at: now,
            checked_at: now,
            expires_at: now + secs(self.limits.absolute),
        };
        self.store
            .insert_oidc_session(&secret_hash(token.expose_secret()), &rec)
            .await?;
        Ok(Some(token))
    }

    /// Authenticates with a federated refresh token for `service`.
    pub async fn refresh(
        &self,
        token: &SecretString,
        service: &str,
        now: i64,
    ) -> Result<FederatedLogin, OidcError> {
        let token = token.expose_secret();
        if !is_session_token(token) || token.len() > MAX_LEN {
            return Err(OidcError::Rejected("not a federated refresh token".into()));
        }
        let hash = secret_hash(token);
        let Some(rec) = self.store.find_oidc_session(&hash).await? else {
            return Err(OidcError::Rejected("unknown refresh token".into()));
        };
        if now >= rec.expires_at || now - rec.last_used_at >= secs(self.limits.idle) {
            self.store.delete_oidc_session(&hash).await?;
            return Err(OidcError::Rejected("refresh token expired".into()));
        }
        if rec.service != service {
            return Err(OidcError::Rejected(
                "refresh token is for another service".into(),
            ));
        }
        let Some(p) = self.provider_named(&rec.owner.provider).cloned() else {
            return Err(OidcError::Rejected(format!(
                "provider {:?} is no longer configured",
                rec.owner.provider
            )));
        };
        let mut user = user_of(&rec.owner);
        if now - rec.checked_at >= secs(p.cfg.revalidate) {
            let Some(idp) = seal::open(token, &rec.idp_refresh) else {
                self.store.delete_oidc_session(&hash).await?;
                return Err(OidcError::Rejected(
                    "sealed provider token unreadable".into(),
                ));
            };
            match self.recheck(&p, &rec.owner.subject, &idp, now).await {
                Ok((fresh, next)) => {
                    let sealed = seal::seal(&self.rng, token, &next)
                        .ok_or_else(|| OidcError::Internal("cannot seal".into()))?;
                    self.store
                        .update_oidc_session(&hash, &owner_of(&p, &fresh), &sealed, now)
                        .await?;
                    if fresh.groups != user.groups {
                        tracing::info!(provider = %p.cfg.name, user = %fresh.username, groups = ?fresh.groups, "federated user's groups changed");
                    }
                    user = fresh;
                }
                Err(e @ (OidcError::Rejected(_) | OidcError::Token(_))) => {
                    tracing::info!(provider = %p.cfg.name, user = %rec.owner.username, error = %e, "provider ended the session; refresh token revoked");
                    self.store.delete_oidc_session(&hash).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        } else if now - rec.last_used_at >= 60 {
            self.store.touch_oidc_session(&hash, now).await?;
        }
        Ok(FederatedLogin {
            provider: p,
            user,
            idp_refresh: None,
            via: "oidc-refresh",
            allowed_actions: None,
            limits: None,
        })
    }
}
