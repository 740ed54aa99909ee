//! Refresh tokens (docker's identity tokens) of directory users.
//!
//! The token is 256 random bits after the prefix `ldap.`, stored only as its
//! SHA-256 hash with the user's DN, sign-in name, groups and service. A use within
//! `revalidate` of the last check is answered from the database; after that the
//! user is looked up in the directory again (no password needed): a user who was
//! removed, renamed or switched off is refused and the session deleted; new
//! groups take effect. A directory that cannot be reached gives 503, never stale
//! access beyond the window.

use data_encoding::BASE64URL_NOPAD;
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretString};

use super::{DirectoryLogin, DirectoryUser, Ldap, LdapError};
use crate::authn::machine::secret_hash;
use crate::store::ldap::LdapSessionRecord;

/// Prefix of directory refresh tokens.
pub const PREFIX: &str = "ldap.";
/// Longest directory refresh token accepted (ours are 48 characters).
const MAX_LEN: usize = 128;
/// A use more recent than this many seconds is not written back.
const TOUCH_GRANULARITY: i64 = 60;

/// Whether a refresh token is a directory one.
pub fn is_session_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

impl Ldap {
    /// Issues a refresh token for a directory login, bound to `service`.
    pub async fn issue_refresh(
        &self,
        login: &DirectoryLogin,
        service: &str,
        now: i64,
    ) -> Result<SecretString, LdapError> {
        let mut raw = [0u8; 32];
        self.rng
            .fill(&mut raw)
            .map_err(|_| LdapError::Internal("no randomness".into()))?;
        let token = format!("{PREFIX}{}", BASE64URL_NOPAD.encode(&raw));
        let rec = LdapSessionRecord {
            directory: login.directory.cfg.name.clone(),
            dn: login.user.dn.clone(),
            login: login.login.clone(),
            username: login.user.username.clone(),
            groups: login.user.groups.clone(),
            service: service.to_owned(),
            created_at: now,
            last_used_at: now,
            checked_at: now,
            expires_at: now + secs(self.limits.absolute),
        };
        self.store
            .insert_ldap_session(&secret_hash(&token), &rec)
            .await?;
        Ok(SecretString::from(token))
    }

    /// Authenticates with a directory refresh token for `service`.
    pub async fn refresh(
        &self,
        token: &SecretString,
        service: &str,
        now: i64,
    ) -> Result<DirectoryLogin, LdapError> {
        let token = token.expose_secret();
        if !is_session_token(token) || token.len() > MAX_LEN {
            return Err(LdapError::Rejected("not a directory refresh token".into()));
        }
        let hash = secret_hash(token);
        let Some(rec) = self.store.find_ldap_session(&hash).await? else {
            return Err(LdapError::Rejected("unknown refresh token".into()));
        };
        if now >= rec.expires_at || now - rec.last_used_at >= secs(self.limits.idle) {
            self.store.delete_ldap_session(&hash).await?;
            return Err(LdapError::Rejected("refresh token expired".into()));
        }
        if rec.service != service {
            return Err(LdapError::Rejected(
                "refresh token is for another service".into(),
            ));
        }
        let Some(dir) = self.directory_named(&rec.directory).cloned() else {
            return Err(LdapError::Rejected(format!(
                "directory {:?} is no longer configured",
                rec.directory
            )));
        };
        let mut user = DirectoryUser {
            dn: rec.dn.clone(),
            username: rec.username.clone(),
            groups: rec.groups.clone(),
            groups_cut: false,
        };
        if now - rec.checked_at >= secs(dir.cfg.revalidate) {
            match dir.recheck(&rec.login, &rec.dn, now).await {
                Ok(fresh) if fresh.username == rec.username => {
                    self.store
                        .update_ldap_session(&hash, &fresh.groups, now)
                        .await?;
                    if fresh.groups != user.groups {
                        tracing::info!(directory = %dir.cfg.name, user = %fresh.username, groups = ?fresh.groups, "directory user's groups changed");
                    }
                    user = fresh;
                }
                Ok(_) => {
                    self.store.delete_ldap_session(&hash).await?;
                    return Err(LdapError::Rejected(
                        "the entry now has another account name".into(),
                    ));
                }
                Err(LdapError::Rejected(why)) => {
                    tracing::info!(directory = %dir.cfg.name, user = %rec.username, reason = %why, "directory user no longer valid; refresh token revoked");
                    self.store.delete_ldap_session(&hash).await?;
                    return Err(LdapError::Rejected(why));
                }
                Err(e) => return Err(e),
            }
        } else if now - rec.last_used_at >= TOUCH_GRANULARITY {
            self.store.touch_ldap_session(&hash, now).await?;
        }
        Ok(DirectoryLogin {
            directory: dir,
            login: rec.login,
            user,
            via: "ldap-refresh",
        })
    }
}
