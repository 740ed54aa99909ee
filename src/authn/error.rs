//! Why authentication failed, and how provider and directory failures map
//! onto it (refusals stay refusals; an outage is the backend's, never the
//! user's).

use super::{ldap, oidc};
use crate::store::StoreError;

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, or disabled account (never told apart).
    #[error("invalid credentials")]
    BadCredentials,
    /// The refresh token is unknown, expired, revoked, or for another service.
    #[error("invalid refresh token")]
    BadRefreshToken,
    /// A backend failed; the cause is logged where handled.
    #[error("authentication backend unavailable")]
    Unavailable(#[source] StoreError),
    /// The identity provider is unreachable, slow or misbehaving (the text is the
    /// cause, for the log). Federated users get 503 for this, never 401.
    #[error("identity provider unavailable: {0}")]
    IdpUnavailable(String),
    /// An LDAP/AD directory is unreachable, slow or refuses berth's service
    /// account (the text is the cause, for the log). Directory users get 503.
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(String),
    /// Too many failed sign-ins for this account or address.
    #[error("too many failed sign-ins; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until the counting window ends.
        retry_after: u64,
    },
    /// Every hashing slot stayed busy for `hash_queue_timeout`: the request is
    /// refused instead of joining an ever-growing queue.
    #[error("password checks are busy")]
    Overloaded,
    /// Internal failure (e.g. a hashing task died).
    #[error("internal authentication error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Unavailable(e)
    }
}

/// Maps a federated failure: refusals stay refusals (logged here, since the
/// client only learns "invalid credentials"), everything else is the provider's or
/// berth's problem.
pub(super) fn federated_error(e: oidc::OidcError) -> AuthError {
    match e {
        oidc::OidcError::Rejected(why) => {
            tracing::info!(reason = %why, "federated login refused");
            AuthError::BadCredentials
        }
        oidc::OidcError::Token(why) => {
            tracing::info!(reason = %why, "token given as password refused");
            AuthError::BadCredentials
        }
        oidc::OidcError::Unavailable(why) | oidc::OidcError::Config(why) => {
            AuthError::IdpUnavailable(why)
        }
        oidc::OidcError::Store(e) => AuthError::Unavailable(e),
        oidc::OidcError::Internal(why) => AuthError::Internal(why),
    }
}

/// Maps a directory failure like [`federated_error`].
pub(super) fn directory_error(e: ldap::LdapError) -> AuthError {
    match e {
        ldap::LdapError::Rejected(why) => {
            tracing::info!(reason = %why, "directory login refused");
            AuthError::BadCredentials
        }
        ldap::LdapError::Unavailable(why) | ldap::LdapError::Config(why) => {
            AuthError::DirectoryUnavailable(why)
        }
        ldap::LdapError::Store(e) => AuthError::Unavailable(e),
        ldap::LdapError::Internal(why) => AuthError::Internal(why),
    }
}
