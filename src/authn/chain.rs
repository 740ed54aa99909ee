//! The authentication chain for passwords: local accounts, `[[oidc]]` providers
//! and `[[ldap]]` directories in `auth_order`, with `name_conflict` deciding what
//! a federated or directory name that is also a local account gets.
//!
//! Security invariants kept here: with clashes refused, a local account's
//! password never leaves berth (neither to a provider nor to a directory);
//! berth's own high-entropy secrets (robots, access tokens) and provider tokens
//! never go to a directory; and a backend that could not answer outweighs one
//! that refused, so users of an unreachable source get 503, not "wrong password".

use secrecy::{ExposeSecret, SecretString};

use super::{
    directory_error, federated_error, ldap, machine, oidc, AuthError, Authenticated, Authenticator,
    Username,
};

/// Of two failures along the chain, the one to report: a backend that could not
/// answer outweighs one that refused, so users of an unreachable source get 503,
/// not a misleading "wrong password".
fn keep_worst(current: AuthError, next: AuthError) -> AuthError {
    match next {
        AuthError::BadCredentials => current,
        other => other,
    }
}

impl Authenticator {
    /// Checks a username and password along the chain: local accounts, OIDC
    /// providers and LDAP/AD directories in `auth_order`. A provider or directory
    /// that cannot be reached gives [`AuthError::IdpUnavailable`] or
    /// [`AuthError::DirectoryUnavailable`] unless another backend accepts the
    /// password.
    pub async fn password(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<Authenticated, AuthError> {
        if self.oidc.is_none() && self.ldap.is_none() {
            return self.local_password(username, password).await;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let refuse_clash = self.name_conflict == oidc::NameConflict::Refuse;
        // Directories match names without case: `Alice` is local `alice` too.
        let local_name = match Username::clash_form(username) {
            Some(name) if refuse_clash => self.store.find_user(&name).await?.is_some(),
            _ => false,
        };
        let (federated_only, machine_secret) = {
            let pw = password.expose_secret();
            (
                // Sign-in page tokens and provider access tokens are never local
                // passwords: skip the (deliberately slow) hash for them.
                oidc::pat::is_token(pw) || oidc::jwt::peek(pw).is_some(),
                // Robots and personal access tokens are berth's own.
                username.starts_with(self.settings.robot_prefix.as_str())
                    || pw.starts_with(machine::ACCESS_TOKEN_PREFIX),
            )
        };
        // A directory login remembered within its cache_ttl needs neither the
        // local hash nor the directory. Only when no local account has the name
        // and clashes are refused, so the local backend could not have accepted.
        if let Some(ldap) = &self.ldap {
            if refuse_clash && !local_name && !federated_only && !machine_secret {
                if let Some(login) = ldap.cached(username, &password) {
                    return self.directory(login, refuse_clash).await;
                }
            }
        }
        let mut failure = AuthError::BadCredentials;
        for backend in &self.order {
            match backend {
                oidc::Backend::Local if federated_only => {}
                oidc::Backend::Local => {
                    match self.local_password(username, password.clone()).await {
                        Err(AuthError::BadCredentials) => {}
                        other => return other,
                    }
                }
                oidc::Backend::Oidc => {
                    // A local name is never tried at a provider when clashes are
                    // refused: its password must not leave berth.
                    let Some(oidc) = self.oidc.as_ref().filter(|_| !local_name) else {
                        continue;
                    };
                    match oidc.password(username, &password, now).await {
                        Ok(login) => return self.federated(login, refuse_clash).await,
                        Err(e) => failure = keep_worst(failure, federated_error(e)),
                    }
                }
                oidc::Backend::Ldap => {
                    // Same rule for directories; berth's own secrets and provider
                    // tokens never go there either.
                    let Some(ldap) = self
                        .ldap
                        .as_ref()
                        .filter(|_| !local_name && !federated_only && !machine_secret)
                    else {
                        continue;
                    };
                    match ldap.password(username, &password, now).await {
                        Ok(login) => return self.directory(login, refuse_clash).await,
                        Err(e) => failure = keep_worst(failure, directory_error(e)),
                    }
                }
            }
        }
        Err(failure)
    }

    /// Accepts a directory login unless its name is a local account and clashes
    /// are refused.
    pub(super) async fn directory(
        &self,
        login: ldap::DirectoryLogin,
        refuse_clash: bool,
    ) -> Result<Authenticated, AuthError> {
        if refuse_clash {
            if let Some(name) = Username::clash_form(&login.user.username) {
                if self.store.find_user(&name).await?.is_some() {
                    tracing::warn!(directory = %login.directory.cfg.name, user = %login.user.username, "directory login refused: a local account has this name (name_conflict = \"refuse\")");
                    return Err(AuthError::BadCredentials);
                }
            }
        }
        Ok(Authenticated {
            user_id: None,
            identity: login.identity(),
            allowed_actions: None,
            federated: None,
            directory: Some(Box::new(login)),
            limits: None,
            generation: None,
        })
    }

    /// Issues a refresh token for a directory authentication; `None` for others.
    pub async fn issue_directory_refresh(
        &self,
        auth: &Authenticated,
        service: &str,
        now: i64,
    ) -> Result<Option<SecretString>, AuthError> {
        match (&self.ldap, &auth.directory) {
            (Some(ldap), Some(login)) => ldap
                .issue_refresh(login, service, now)
                .await
                .map(Some)
                .map_err(directory_error),
            _ => Ok(None),
        }
    }

    /// Accepts a federated login unless its name is a local account and clashes
    /// are refused.
    pub(super) async fn federated(
        &self,
        login: oidc::FederatedLogin,
        refuse_clash: bool,
    ) -> Result<Authenticated, AuthError> {
        if refuse_clash {
            if let Some(name) = Username::clash_form(&login.user.username) {
                if self.store.find_user(&name).await?.is_some() {
                    tracing::warn!(provider = %login.provider.cfg.name, user = %login.user.username, "federated login refused: a local account has this name (name_conflict = \"refuse\")");
                    return Err(AuthError::BadCredentials);
                }
            }
        }
        Ok(Authenticated {
            user_id: None,
            identity: login.identity(),
            allowed_actions: login.allowed_actions.clone(),
            limits: login.limits.clone(),
            generation: None,
            federated: Some(Box::new(login)),
            directory: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_backend_outweighs_a_refusal() {
        let kind = |e: &AuthError| std::mem::discriminant(e);
        let down = || AuthError::DirectoryUnavailable("down".into());
        let idp = || AuthError::IdpUnavailable("down".into());
        // Refused after unreachable: still unreachable (503, not 401).
        let e = keep_worst(down(), AuthError::BadCredentials);
        assert_eq!(kind(&e), kind(&down()));
        let e = keep_worst(AuthError::BadCredentials, idp());
        assert_eq!(kind(&e), kind(&idp()));
        let e = keep_worst(AuthError::BadCredentials, AuthError::BadCredentials);
        assert!(matches!(e, AuthError::BadCredentials));
        let e = keep_worst(down(), AuthError::RateLimited { retry_after: 5 });
        assert!(matches!(e, AuthError::RateLimited { retry_after: 5 }));
    }
}
