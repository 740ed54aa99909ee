//! Failed sign-in throttling: failures are counted per account and per client
//! address (IPv6 per /64) in the database, so every replica sees the same counts.
//! Past the limit, sign-ins are refused with 429 before any password is hashed.

use std::net::IpAddr;

use secrecy::SecretString;

use super::{AuthError, Authenticator};

/// The keys a sign-in attempt is counted under.
fn keys(username: &str, ip: IpAddr) -> [String; 2] {
    let account: String = username
        .chars()
        .take(128)
        .collect::<String>()
        .to_lowercase();
    let addr = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    };
    [format!("account:{account}"), format!("ip:{addr}")]
}

/// What [`Authenticator::guard_login`] found.
#[derive(Debug, Clone, Copy)]
pub struct LoginGuard {
    /// Some failures are on record: clear the account's on success.
    pub had_failures: bool,
}

impl Authenticator {
    /// Refuses a sign-in attempt from an account or address past the limit.
    /// Credentials already in the cache skip the check (and the database).
    pub async fn guard_login(
        &self,
        username: &str,
        password: &SecretString,
        ip: IpAddr,
        now: i64,
    ) -> Result<LoginGuard, AuthError> {
        if self.is_cached(username, password) {
            return Ok(LoginGuard {
                had_failures: false,
            });
        }
        let [a, b] = keys(username, ip);
        let window = self.window();
        let (count, until) = self.store.login_failures(&[&a, &b], now, window).await?;
        if count >= self.settings.login_failure_limit {
            return Err(AuthError::RateLimited {
                retry_after: u64::try_from((until - now).max(1)).unwrap_or(1),
            });
        }
        Ok(LoginGuard {
            had_failures: count > 0,
        })
    }

    /// Counts a failed sign-in. Errors are logged, not returned: the client gets
    /// its 401 either way.
    pub async fn login_failed(&self, username: &str, ip: IpAddr, now: i64) {
        let [a, b] = keys(username, ip);
        if let Err(e) = self
            .store
            .record_login_failure(&[&a, &b], now, self.window())
            .await
        {
            tracing::warn!(error = %e, "could not count a failed sign-in");
        }
    }

    /// Forgets an account's failures after it signed in.
    pub async fn login_succeeded(&self, username: &str, ip: IpAddr) {
        let [a, _] = keys(username, ip);
        if let Err(e) = self.store.clear_login_failures(&a).await {
            tracing::warn!(error = %e, "could not clear failed sign-ins");
        }
    }

    fn window(&self) -> i64 {
        i64::try_from(self.settings.login_failure_window.as_secs()).unwrap_or(300)
    }
}
