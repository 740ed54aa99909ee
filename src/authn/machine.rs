//! Robot accounts and personal access tokens: high-entropy secrets (256 random
//! bits), so they are stored as SHA-256 and checked without a slow hash.

use std::sync::Arc;

use data_encoding::BASE64URL_NOPAD;
use ring::digest::{digest, SHA256};
use ring::rand::SecureRandom;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{identity_of, AuthError, Authenticated, Authenticator, Identity, Kind};
use crate::policy::limit::Limit;

/// Prefix of personal access tokens, so a token is recognised (and can be found
/// by secret scanners) wherever it leaks.
pub const ACCESS_TOKEN_PREFIX: &str = "berth_pat_";
/// Prefix of robot secrets.
pub const ROBOT_SECRET_PREFIX: &str = "berth_robot_";

/// SHA-256 of a high-entropy secret (robot secrets, access tokens, refresh
/// tokens, sign-in state): the only form in which berth stores or looks one up.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, secret.as_bytes()).as_ref());
    out
}

/// A new random secret with `prefix`, and its hash.
pub fn new_secret(prefix: &str) -> Result<(SecretString, Vec<u8>), AuthError> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| AuthError::Internal("no randomness".into()))?;
    let secret = format!("{prefix}{}", BASE64URL_NOPAD.encode(&raw));
    let hash = secret_hash(&secret);
    Ok((SecretString::from(secret), hash.to_vec()))
}

/// Validates a robot name: 1-64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn parse_robot_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && s.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid robot name {:?}: use 1-64 lowercase letters, digits, '.', '_' or '-'",
            s.chars().take(64).collect::<String>()
        ))
    }
}

impl Authenticator {
    /// Checks a robot's secret. `name` is the login name without the prefix.
    pub(super) async fn robot(
        &self,
        login: &str,
        name: &str,
        secret: &SecretString,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        let robot = self.store.find_robot(name).await?;
        let given = secret_hash(secret.expose_secret());
        // Compare even for unknown robots, so both paths do the same work.
        let stored = robot
            .as_ref()
            .map_or_else(|| vec![0u8; 32], |r| r.secret_hash.clone());
        let matches: bool = given.ct_eq(&stored).into();
        let robot = match robot {
            Some(r) if matches && !r.disabled && r.expires_at.is_none_or(|e| now < e) => r,
            _ => return Err(AuthError::BadCredentials),
        };
        if let Err(e) = self.store.touch_robot(robot.id, now).await {
            tracing::warn!(error = %e, "could not record robot use");
        }
        Ok(Authenticated {
            user_id: None,
            identity: Identity {
                subject: login.to_owned(),
                kind: Kind::Robot,
                groups: robot.groups,
                via: "robot",
            },
            allowed_actions: None,
            federated: None,
            directory: None,
            limits: None,
            generation: None,
        })
    }

    /// Checks a personal access token presented as the password of `username`.
    pub(super) async fn access_token(
        &self,
        username: &str,
        token: &SecretString,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        let Some((tok, user)) = self
            .store
            .find_access_token(&secret_hash(token.expose_secret()))
            .await?
        else {
            return Err(AuthError::BadCredentials);
        };
        // The token only works for its owner, while the owner is active.
        let owner_ok = user.username == username && !user.disabled;
        if !owner_ok || tok.expires_at.is_some_and(|e| now >= e) {
            return Err(AuthError::BadCredentials);
        }
        let limits: Vec<Limit> = tok
            .limits
            .iter()
            .map(|l| l.parse())
            .collect::<Result<_, String>>()
            .map_err(AuthError::Internal)?;
        if let Err(e) = self.store.touch_access_token(tok.id, now).await {
            tracing::warn!(error = %e, "could not record access token use");
        }
        Ok(Authenticated {
            user_id: Some(user.id),
            identity: identity_of(&user, "token"),
            allowed_actions: None,
            federated: None,
            directory: None,
            limits: Some(Arc::from(limits)),
            generation: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn secrets_are_prefixed_and_hashed() {
        let (s, h) = new_secret(ACCESS_TOKEN_PREFIX).unwrap();
        assert!(s.expose_secret().starts_with(ACCESS_TOKEN_PREFIX));
        assert!(s.expose_secret().len() >= ACCESS_TOKEN_PREFIX.len() + 43);
        assert_eq!(secret_hash(s.expose_secret()).to_vec(), h);
    }

    #[test]
    fn robot_names() {
        assert!(parse_robot_name("ci-deploy").is_ok());
        for bad in ["", "CI", "a/b", "a$b", "-x", "a b", "x;rm -rf /", "../x"] {
            assert!(parse_robot_name(bad).is_err(), "{bad}");
        }
    }
}
