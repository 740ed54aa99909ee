//! Password-guessing limits. Every password sign-in takes an attempt under
//! three counters in the database *before* the password is checked:
//!
//! - the account from this client address (`login_failure_limit`, default 10
//!   per `login_failure_window`);
//! - the account from any address (`login_failure_account_limit`, default 100),
//!   against guesses spread over many addresses;
//! - the address for any account (`login_failure_address_limit`, default 100),
//!   against one address trying many accounts.
//!
//! Taking is one atomic statement per counter, so at most that many password
//! checks per window ever reach the hash or an identity provider, whatever the
//! parallelism and however many replicas share the database. A request that
//! finds a counter full is refused with 429 without a password check. A wrong
//! password keeps its attempts; a right one clears the account's counter for
//! its address and gives the other two back, and so does an attempt that never
//! reached a verdict (a backend failure, a full hash queue).
//!
//! What is never counted: credentials that cannot be guessed (robot secrets,
//! personal access tokens, sign-in page tokens and provider tokens, all
//! 256-bit or signed; a wrong one is a plain 401), refresh tokens (another
//! grant), and credentials already in the cache. So failures from one address
//! never lock the same account out from another address below the account-wide
//! threshold, and never lock out a robot. Addresses are counted per IPv4
//! address and per IPv6 /64. `berth user unlock NAME` clears an account's
//! counters.
//!
//! The counters' keys hold digests of the name and the address, never the
//! values: whatever was typed as a user name (a password, now and then) and
//! who typed it stay out of the table.

use std::net::IpAddr;

use ring::digest::{digest, SHA256};
use secrecy::{ExposeSecret, SecretString};

use super::flight::{self, Role, Shared};
use super::{machine, oidc, AuthError, Authenticated, Authenticator};
use crate::store::{Store, StoreError, Take};

/// The client address as counted: IPv4, or the /64 of IPv6 (IPv4-mapped IPv6
/// counts as IPv4).
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The account as counted: case-folded and bounded, so `Alice` and `alice`
/// share their counters.
fn account_key(username: &str) -> String {
    username
        .chars()
        .take(128)
        .collect::<String>()
        .to_lowercase()
}

/// A name or address as it appears in a counter key: 128 bits of its SHA-256,
/// in hex. Every digest has the same length, so one account's prefix never
/// starts another's key.
fn hidden(value: &str) -> String {
    let h = digest(&SHA256, value.as_bytes());
    data_encoding::HEXLOWER.encode(&h.as_ref()[..16])
}

/// The prefix of every per-address counter of one account.
fn pair_prefix(account: &str) -> String {
    format!("pair:{}:", hidden(account))
}

/// The three counters of one attempt, narrowest first.
fn keys(username: &str, ip: IpAddr) -> [String; 3] {
    let account = account_key(username);
    let addr = hidden(&address_key(ip));
    [
        format!("{}{addr}", pair_prefix(&account)),
        format!("account:{}", hidden(&account)),
        format!("ip:{addr}"),
    ]
}

/// Clears every counter of an account, from every address (`berth user
/// unlock`); returns how many there were. Works for any name that was tried,
/// local or federated.
pub async fn unlock(store: &Store, username: &str) -> Result<u64, StoreError> {
    let account = account_key(username);
    // Counters an older berth keyed by the name itself last one window at most.
    let older = store
        .clear_login_keys(&format!("account:{account}"), &pair_prefix(&account))
        .await?;
    let now = store
        .clear_login_keys(
            &format!("account:{}", hidden(&account)),
            &pair_prefix(&account),
        )
        .await?;
    Ok(older + now)
}

/// Attempts taken for one sign-in, settled with its outcome.
#[derive(Debug, Default)]
#[must_use = "an attempt must be settled with finish_login"]
struct Attempt {
    /// Counter key and the window start each attempt went into.
    taken: Vec<(String, i64)>,
}

impl Authenticator {
    /// Whether a credential cannot be guessed, so that password-failure
    /// counters never apply to it: robot logins (only ever checked as 256-bit
    /// secrets), personal access tokens (only ever checked as such by the local
    /// backend), and, with a provider configured, sign-in page tokens and
    /// provider tokens (never tried as local passwords).
    fn unguessable(&self, username: &str, password: &SecretString) -> bool {
        let pw = password.expose_secret();
        username.starts_with(self.settings.robot_prefix.as_str())
            || pw.starts_with(machine::ACCESS_TOKEN_PREFIX)
            || (self.oidc.is_some() && (oidc::pat::is_token(pw) || oidc::jwt::peek(pw).is_some()))
    }

    /// A password sign-in: one check per distinct credential in flight (see
    /// `flight`), with an attempt taken before it and settled with its outcome.
    ///
    /// A wrong name or password is answered no sooner than `refusal_floor`
    /// after the request began, whatever was checked: a local account costs a
    /// hash, an unknown name the same dummy hash plus, with a provider or a
    /// directory configured, a round trip there. Without the floor the time to
    /// refuse tells which local accounts exist.
    pub async fn login(
        &self,
        username: &str,
        password: SecretString,
        ip: IpAddr,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        let started = tokio::time::Instant::now();
        let outcome = self.shared_login(username, password, ip, now).await;
        if matches!(outcome, Err(AuthError::BadCredentials)) {
            tokio::time::sleep_until(started + self.settings.refusal_floor).await;
        }
        outcome
    }

    async fn shared_login(
        &self,
        username: &str,
        password: SecretString,
        ip: IpAddr,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        // The common case, a credential already in the cache, costs no hash and
        // takes no attempt: it skips the flight table too.
        if self.is_cached(username, &password) {
            return self.password(username, password).await;
        }
        match self.flights.join(self.cache_key(username, &password)) {
            Role::Follower(slot) => match flight::wait(slot).await {
                Shared::Ok(auth) => Ok(*auth),
                Shared::BadCredentials => Err(AuthError::BadCredentials),
                Shared::RateLimited(retry_after) => Err(AuthError::RateLimited { retry_after }),
                Shared::Retry => self.counted_login(username, password, ip, now).await,
            },
            Role::Leader(leader) => {
                let outcome = self.counted_login(username, password, ip, now).await;
                leader.finish(Shared::of(&outcome));
                outcome
            }
        }
    }

    async fn counted_login(
        &self,
        username: &str,
        password: SecretString,
        ip: IpAddr,
        now: i64,
    ) -> Result<Authenticated, AuthError> {
        let attempt = self.begin_login(username, &password, ip, now).await?;
        let outcome = self.password(username, password).await;
        self.finish_login(attempt, &outcome).await;
        outcome
    }

    /// Takes an attempt for a password sign-in, or refuses it with
    /// [`AuthError::RateLimited`] before any password check.
    async fn begin_login(
        &self,
        username: &str,
        password: &SecretString,
        ip: IpAddr,
        now: i64,
    ) -> Result<Attempt, AuthError> {
        let mut attempt = Attempt::default();
        if self.unguessable(username, password) {
            return Ok(attempt);
        }
        let window = self.window();
        let limits = [
            self.settings.login_failure_limit,
            self.settings.login_failure_account_limit,
            self.settings.login_failure_address_limit,
        ];
        for (key, limit) in keys(username, ip).into_iter().zip(limits) {
            match self
                .store
                .take_login_attempt(&key, now, window, limit)
                .await
            {
                Ok(Take::Taken { window_start }) => attempt.taken.push((key, window_start)),
                Ok(Take::Full { window_end }) => {
                    self.refund(&attempt.taken).await;
                    return Err(AuthError::RateLimited {
                        retry_after: u64::try_from((window_end - now).max(1)).unwrap_or(1),
                    });
                }
                Err(e) => {
                    self.refund(&attempt.taken).await;
                    return Err(e.into());
                }
            }
        }
        Ok(attempt)
    }

    /// Settles an attempt with the sign-in's outcome: a wrong password keeps
    /// it; a right one clears the account's counter for this address and gives
    /// the rest back; anything else (no verdict) gives everything back.
    async fn finish_login(&self, attempt: Attempt, outcome: &Result<Authenticated, AuthError>) {
        match outcome {
            Err(AuthError::BadCredentials) => {}
            Ok(_) => {
                let mut rest = attempt.taken.iter();
                if let Some((pair, _)) = rest.next() {
                    if let Err(e) = self.store.clear_login_failures(pair).await {
                        tracing::warn!(error = %e, "could not clear failed sign-ins");
                    }
                }
                let rest: Vec<_> = rest.cloned().collect();
                self.refund(&rest).await;
            }
            Err(_) => self.refund(&attempt.taken).await,
        }
    }

    async fn refund(&self, taken: &[(String, i64)]) {
        for (key, window_start) in taken {
            if let Err(e) = self.store.refund_login_attempt(key, *window_start).await {
                tracing::warn!(error = %e, "could not give back a sign-in attempt");
            }
        }
    }

    fn window(&self) -> i64 {
        i64::try_from(self.settings.login_failure_window.as_secs()).unwrap_or(300)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_fold_case_and_group_ipv6_by_64() {
        let a = keys(
            "Alice",
            "2001:db8:1:2:3:4:5:6"
                .parse()
                .unwrap_or(IpAddr::from([0; 4])),
        );
        let b = keys(
            "alice",
            "2001:db8:1:2:ffff::1"
                .parse()
                .unwrap_or(IpAddr::from([0; 4])),
        );
        assert_eq!(a, b);
        assert!(a[0].starts_with(&pair_prefix("alice")));
        assert_eq!(a[1], format!("account:{}", hidden("alice")));
        assert_eq!(a[2], format!("ip:{}", hidden("2001:db8:1:2::/64")));
        let mapped = keys(
            "x",
            "::ffff:10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4])),
        );
        assert_eq!(mapped[2], format!("ip:{}", hidden("10.0.0.1")));
        assert_ne!(a[1], keys("alice1", IpAddr::from([10, 0, 0, 1]))[1]);
    }

    #[tokio::test]
    async fn unlock_clears_every_counter_of_the_account_and_an_older_berths() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::config::Database::Sqlite(dir.path().join("berth.db"));
        let store = Store::open(&db).await.unwrap();
        let [pair, account, address] = keys("alice", IpAddr::from([10, 0, 0, 1]));
        let [other_pair, other_account, _] = keys("alice1", IpAddr::from([10, 0, 0, 1]));
        for key in [
            "account:alice",
            &pair,
            &account,
            &address,
            &other_pair,
            &other_account,
        ] {
            let taken = store.take_login_attempt(key, 100, 900, 10).await;
            assert!(matches!(taken, Ok(Take::Taken { .. })), "{key}: {taken:?}");
        }
        // Alice's own three (the one an older berth keyed by name included);
        // the address counter and alice1's stay.
        assert_eq!(unlock(&store, "Alice").await.ok(), Some(3));
        assert_eq!(unlock(&store, "alice").await.ok(), Some(0));
        assert_eq!(unlock(&store, "alice1").await.ok(), Some(2));
    }

    #[test]
    fn keys_hold_neither_the_name_nor_the_address() {
        for (name, ip) in [
            ("hunter2-typed-as-a-name", "192.0.2.7"),
            ("Alice", "2001:db8:1:2:3:4:5:6"),
        ] {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::from([0; 4]));
            for key in keys(name, ip) {
                let lower = key.to_lowercase();
                assert!(!lower.contains(&name.to_lowercase()), "{key}");
                assert!(
                    !lower.contains("192.0.2") && !lower.contains("2001:db8"),
                    "{key}"
                );
            }
        }
    }

    #[test]
    fn pair_prefixes_never_contain_one_another() {
        // `alice` and `alice1`: a prefix match for one never catches the other.
        let (a, b) = (pair_prefix("alice"), pair_prefix("alice1"));
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        assert_eq!(a.len(), b.len());
    }
}
