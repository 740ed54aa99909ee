//! Tokens minted on the sign-in page: a federated user's docker password for
//! machines and for users who sign in with SSO or MFA. Limited to some actions,
//! and optionally to some repositories (limits in the syntax of
//! `berth token create --limit`, applied at the token endpoint as for local
//! access tokens), expiring, listed and revoked on the page.
//!
//! Each token keeps its own sealed copy of the provider's offline refresh token
//! from the browser sign-in; on use, at most every `revalidate`, berth refreshes it:
//! an owner who was disabled or deleted at the provider makes the token useless
//! (and it is deleted), and group changes take effect.

use crate::authn::machine::secret_hash;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::seal;
use super::session::{owner_of, user_of};
use super::{FederatedLogin, FederatedUser, Oidc, OidcError, Provider};
use crate::policy::limit::Limit;
use crate::store::oidc::OidcTokenRecord;

/// Prefix of sign-in page tokens, so secret scanners and berth recognise them.
pub const PREFIX: &str = "berth_oidc_";
/// Actions a token may be limited to.
pub const ACTIONS: [&str; 3] = ["pull", "push", "delete"];
/// Longest description kept.
pub const MAX_DESCRIPTION: usize = 100;
/// Most repository limits per token.
pub const MAX_LIMITS: usize = 20;
/// Most live tokens per user.
pub const MAX_TOKENS_PER_USER: usize = 50;

/// Whether a password is a sign-in page token.
pub fn is_token(s: &str) -> bool {
    s.starts_with(PREFIX) && s.len() == PREFIX.len() + 43
}

/// What the owner asked for.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Free text.
    pub description: String,
    /// Subset of [`ACTIONS`], non-empty.
    pub actions: Vec<String>,
    /// Lifetime in seconds.
    pub ttl: i64,
    /// Repository limits; empty: limited by `actions` only.
    pub limits: Vec<Limit>,
}

/// The owner of a sign-in page token, as the sign-in page knows them.
pub struct Owner<'a> {
    /// Provider.
    pub provider: &'a Arc<Provider>,
    /// User.
    pub user: &'a FederatedUser,
    /// Offline refresh token from the sign-in.
    pub idp_refresh: &'a SecretString,
}

impl Oidc {
    /// Mints a token; returns the token (shown once) and the stored record.
    pub async fn mint_token(
        &self,
        owner: Owner<'_>,
        req: NewToken,
        now: i64,
    ) -> Result<(SecretString, OidcTokenRecord), OidcError> {
        if req.actions.is_empty() || req.actions.iter().any(|a| !ACTIONS.contains(&a.as_str())) {
            return Err(OidcError::Rejected("unknown action".into()));
        }
        if req.limits.len() > MAX_LIMITS {
            return Err(OidcError::Rejected(format!(
                "at most {MAX_LIMITS} repository limits per token"
            )));
        }
        let existing = self
            .store
            .list_oidc_tokens(&owner.provider.cfg.name, &owner.user.subject)
            .await?;
        if existing.iter().filter(|t| t.expires_at > now).count() >= MAX_TOKENS_PER_USER {
            return Err(OidcError::Rejected(format!(
                "at most {MAX_TOKENS_PER_USER} tokens per user; revoke some first"
            )));
        }
        let token = seal::new_token(&self.rng, PREFIX)
            .ok_or_else(|| OidcError::Internal("no randomness".into()))?;
        let sealed = seal::seal(&self.rng, token.expose_secret(), owner.idp_refresh)
            .ok_or_else(|| OidcError::Internal("cannot seal".into()))?;
        let description: String = req
            .description
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_DESCRIPTION)
            .collect();
        let mut rec = OidcTokenRecord {
            id: 0,
            owner: owner_of(owner.provider, owner.user),
            description,
            actions: req.actions,
            limits: req.limits.iter().map(ToString::to_string).collect(),
            idp_refresh: sealed,
            created_at: now,
            expires_at: now + req.ttl,
            checked_at: now,
            last_used_at: None,
        };
        rec.id = self
            .store
            .insert_oidc_token(&secret_hash(token.expose_secret()), &rec)
            .await?;
        tracing::info!(provider = %owner.provider.cfg.name, user = %owner.user.username, token_id = rec.id, actions = ?rec.actions, limits = ?rec.limits, "sign-in page token created");
        Ok((token, rec))
    }

    /// A user's tokens, newest first (never the secrets).
    pub async fn list_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Vec<OidcTokenRecord>, OidcError> {
        Ok(self.store.list_oidc_tokens(provider, subject).await?)
    }

    /// Revokes one of a user's tokens; false if it was not theirs or is gone.
    pub async fn revoke_token(
        &self,
        provider: &str,
        subject: &str,
        id: i64,
    ) -> Result<bool, OidcError> {
        let gone = self
            .store
            .delete_oidc_token(id, Some((provider, subject)))
            .await?;
        if gone {
            tracing::info!(provider, token_id = id, "sign-in page token revoked");
        }
        Ok(gone)
    }

    /// Authenticates with a sign-in page token as the password of `username`.
    pub(super) async fn token_login(
        &self,
        username: &str,
        token: &SecretString,
        now: i64,
    ) -> Result<FederatedLogin, OidcError> {
        let token = token.expose_secret();
        let Some(rec) = self.store.find_oidc_token(&secret_hash(token)).await? else {
            return Err(OidcError::Rejected("unknown sign-in page token".into()));
        };
        if now >= rec.expires_at {
            self.store.delete_oidc_token(rec.id, None).await?;
            return Err(OidcError::Rejected("sign-in page token expired".into()));
        }
        if rec.owner.username != username {
            return Err(OidcError::Rejected(
                "token belongs to another username".into(),
            ));
        }
        let Some(p) = self.provider_named(&rec.owner.provider).cloned() else {
            return Err(OidcError::Rejected(format!(
                "provider {:?} is no longer configured",
                rec.owner.provider
            )));
        };
        // Limits that no longer parse fail closed: the token is refused.
        let limits: Vec<Limit> = match rec.limits.iter().map(|l| l.parse()).collect() {
            Ok(limits) => limits,
            Err(e) => {
                tracing::error!(token_id = rec.id, error = %e, "sign-in page token has unreadable limits; refused");
                return Err(OidcError::Rejected("unreadable limits".into()));
            }
        };
        let mut user = user_of(&rec.owner);
        if now - rec.checked_at >= i64::try_from(p.cfg.revalidate.as_secs()).unwrap_or(300) {
            let Some(idp) = seal::open(token, &rec.idp_refresh) else {
                self.store.delete_oidc_token(rec.id, None).await?;
                return Err(OidcError::Rejected(
                    "sealed provider token unreadable".into(),
                ));
            };
            match self.recheck(&p, &rec.owner.subject, &idp, now).await {
                Ok((fresh, next)) => {
                    let sealed = seal::seal(&self.rng, token, &next)
                        .ok_or_else(|| OidcError::Internal("cannot seal".into()))?;
                    self.store
                        .update_oidc_token(rec.id, Some((&owner_of(&p, &fresh), &sealed)), now)
                        .await?;
                    user = fresh;
                }
                Err(e @ (OidcError::Rejected(_) | OidcError::Token(_))) => {
                    tracing::info!(provider = %p.cfg.name, user = %rec.owner.username, token_id = rec.id, error = %e, "provider refused the token's owner; token revoked");
                    self.store.delete_oidc_token(rec.id, None).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        } else if rec.last_used_at.is_none_or(|t| now - t >= 60) {
            self.store.update_oidc_token(rec.id, None, now).await?;
        }
        Ok(FederatedLogin {
            provider: p,
            user,
            idp_refresh: None,
            via: "oidc-pat",
            allowed_actions: Some(rec.actions),
            limits: (!limits.is_empty()).then(|| Arc::from(limits)),
        })
    }
}
