//! One password check per distinct credential in flight. Requests that present
//! the same username and password while a check of it is running wait for that
//! check and share its verdict, instead of each taking an attempt and a hash.
//!
//! Why: attempts are taken before the check (`throttle`), so twenty parallel
//! `docker pull`s of one CI job with a cold cache would otherwise take twenty
//! attempts at once and find the limit full, though every password is right.
//! Shared, they take one. A guesser gains nothing: identical guesses are one
//! guess. Written by hand because the credential cache (moka's sync cache)
//! has no asynchronous single-flight, and the map here holds only what is in
//! flight (bounded by concurrent requests), keyed by the same keyed hash as
//! the cache, so it never holds a password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::{AuthError, Authenticated};

/// A verdict that can be handed to every waiter.
#[derive(Debug, Clone)]
pub enum Shared {
    /// The credential is good.
    Ok(Box<Authenticated>),
    /// Wrong username or password.
    BadCredentials,
    /// Refused before the check.
    RateLimited(u64),
    /// Anything else: each waiter runs its own check.
    Retry,
}

impl Shared {
    /// What to hand to waiters for `outcome`.
    pub fn of(outcome: &Result<Authenticated, AuthError>) -> Shared {
        match outcome {
            Ok(a) => Shared::Ok(Box::new(a.clone())),
            Err(AuthError::BadCredentials) => Shared::BadCredentials,
            Err(AuthError::RateLimited { retry_after }) => Shared::RateLimited(*retry_after),
            Err(_) => Shared::Retry,
        }
    }
}

type Slot = watch::Receiver<Option<Shared>>;

/// The checks in flight.
#[derive(Debug, Default)]
pub struct Flights {
    map: Arc<Mutex<HashMap<[u8; 32], Slot>>>,
}

/// Whether this request runs the check or waits for another.
pub enum Role {
    /// Run the check, then [`Leader::finish`].
    Leader(Leader),
    /// Wait for the running check.
    Follower(Slot),
}

/// The request that runs the check. Dropped without `finish` (the request was
/// cancelled), it removes its entry and its waiters run their own checks.
pub struct Leader {
    key: [u8; 32],
    tx: watch::Sender<Option<Shared>>,
    map: Arc<Mutex<HashMap<[u8; 32], Slot>>>,
}

impl Flights {
    /// Joins the check of `key` in flight, or starts one.
    pub fn join(&self, key: [u8; 32]) -> Role {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(&key) {
            return Role::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key, rx);
        Role::Leader(Leader {
            key,
            tx,
            map: self.map.clone(),
        })
    }

    /// How many checks are in flight.
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no check is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Leader {
    /// Hands the verdict to every waiter.
    pub fn finish(self, verdict: Shared) {
        self.tx.send_replace(Some(verdict));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Waits for the leader's verdict; [`Shared::Retry`] when it went away without one.
pub async fn wait(mut slot: Slot) -> Shared {
    // The current value is checked first, so a verdict sent just before the
    // leader went away is still seen; an error means it left without one.
    let verdict = match slot.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    verdict.unwrap_or(Shared::Retry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn followers_share_the_leaders_verdict_and_the_entry_goes() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join([1; 32]) else {
            panic!("first is not the leader")
        };
        let Role::Follower(slot) = f.join([1; 32]) else {
            panic!("second is not a follower")
        };
        assert!(matches!(f.join([2; 32]), Role::Leader(_)));
        let waiter = tokio::spawn(wait(slot));
        leader.finish(Shared::BadCredentials);
        assert!(matches!(waiter.await.unwrap(), Shared::BadCredentials));
        assert!(f.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_leader_lets_followers_retry() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join([3; 32]) else {
            panic!()
        };
        let Role::Follower(slot) = f.join([3; 32]) else {
            panic!()
        };
        drop(leader);
        assert!(matches!(wait(slot).await, Shared::Retry));
        assert!(f.is_empty());
    }
}
