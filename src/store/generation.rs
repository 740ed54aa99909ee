//! The authentication generation: one number that moves whenever a change could
//! revoke access (see `migrations/*/0101_auth_generation.sql`).
//!
//! Cached credentials carry the generation they were checked at. A request
//! needs a reading of the generation that *began after the request arrived*, so
//! a change committed anywhere before it (another replica, the CLI) is seen.
//! Concurrent requests share such readings: while one read runs, later arrivals
//! queue, and the next read serves all of them. Under load that is one database
//! round trip per burst, not one per request, with the same guarantee. On
//! SQLite a reading made on the request's own thread is cheaper still, and is
//! used whenever SQLite can answer it without waiting.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::{Store, StoreError};

/// A finished reading: its number and what it found.
type Reading = (u64, Result<i64, String>);

#[derive(Debug, Default)]
struct State {
    /// Readings started so far; reading `n` began when this became `n`.
    started: u64,
    /// Whether a reading is running.
    reading: bool,
}

/// Shared, coalesced readings of the authentication generation.
///
/// No background task: the first request that finds no reading running makes
/// one and publishes it to everyone waiting; the others wait on the result.
#[derive(Debug)]
pub struct Generation {
    store: Store,
    state: Mutex<State>,
    last: watch::Sender<Reading>,
}

/// Ends a reading, also when the request making it is dropped midway, so the
/// waiters never wait on a reading nobody makes.
struct Leading<'a>(&'a Generation);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.state().reading = false;
        // Wake the waiters: one of them makes the next reading if still needed.
        self.0.last.send_modify(|_| {});
    }
}

impl Generation {
    /// Reads through `store`.
    pub fn new(store: Store) -> Self {
        Generation {
            store,
            state: Mutex::new(State::default()),
            last: watch::Sender::new((0, Ok(i64::MIN))),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation as of a reading that began after this call did.
    pub async fn current(&self) -> Result<i64, StoreError> {
        self.since(self.ticket()).await
    }

    /// A mark of this moment: [`Generation::since`] with it accepts any
    /// reading begun after now, so a request takes one when it arrives and
    /// later steps of the same request share the reading an earlier step made.
    pub fn ticket(&self) -> u64 {
        self.state().started
    }

    /// The generation as of a reading that began after `ticket` was taken.
    pub async fn since(&self, ticket: u64) -> Result<i64, StoreError> {
        // SQLite: a fresh read on this thread costs less than sharing one.
        if let Some(value) = self.store.inline.as_ref().and_then(|r| r.generation()) {
            return Ok(value);
        }
        let mut rx = self.last.subscribe();
        let arrived = ticket;
        loop {
            {
                let last = rx.borrow_and_update();
                if last.0 > arrived {
                    return last.1.clone().map_err(StoreError::Shared);
                }
            }
            let lead = {
                let mut st = self.state();
                (!st.reading).then(|| {
                    st.reading = true;
                    st.started += 1;
                    st.started
                })
            };
            if let Some(number) = lead {
                let _leading = Leading(self);
                let value = self.store.auth_generation().await;
                let shared = value.as_ref().copied().map_err(ToString::to_string);
                let _previous = self.last.send_replace((number, shared));
                return value;
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Shared("generation reader closed".into()));
            }
        }
    }
}

impl Store {
    /// Reads the authentication generation (one row).
    pub async fn auth_generation(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM auth_generation WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
