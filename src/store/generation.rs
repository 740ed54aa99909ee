//! The authentication generation: one number that moves whenever a change could
//! revoke access (see `migrations/*/0101_auth_generation.sql`).
//!
//! Cached credentials carry the generation they were checked at, and token
//! reuse is keyed on it. Where a request learns the number:
//!
//! - **SQLite**: a reading made on the request's own thread (microseconds),
//!   whenever SQLite can answer it without waiting; else as below. While the
//!   WAL-index header shows nothing committed since the last such reading,
//!   that reading answers without a query (`inline`, `wal_index`).
//! - **PostgreSQL, listener up**: the value the listener task keeps
//!   (`generation_listen`): no round trip at all. The database announces each
//!   change at commit (`LISTEN`/`NOTIFY`, migration 0140) and the listener
//!   reads the new value at once, so a revoking change made on another replica
//!   or by the CLI is honoured once its notification has arrived and been read
//!   (on a local network well under a millisecond after the commit) rather than
//!   strictly by the next request that arrives after the commit. That is the
//!   one guarantee given up for the speed; it holds only while the listening
//!   connection is known to be alive (heartbeats every second), and a
//!   connection that died silently is given up within a few seconds.
//! - **Otherwise** (listener not started, connecting, or lost): a reading that
//!   *began after the request arrived*, so a change committed anywhere before
//!   it is seen. Concurrent requests share such readings: while one read runs,
//!   later arrivals queue, and the next read serves all of them: one round trip
//!   per burst, not per request.
//!
//! Token reuse and the credential caches stay correct in every mode: an entry
//! is used only while the generation it was made under is the one this
//! process knows now, so every change this process has learned of (announced,
//! or read) ends it. The listener publishes only values it read after it began
//! listening, so none is older than a change it could have missed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::generation_listen;
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
/// Without the listener: the first request that finds no reading running
/// makes one and publishes it to everyone waiting; the others wait on the
/// result.
#[derive(Debug)]
pub struct Generation {
    store: Store,
    state: Mutex<State>,
    last: watch::Sender<Reading>,
    /// Readings made through the pool, for metrics.
    reads: AtomicU64,
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
            reads: AtomicU64::new(0),
        }
    }

    /// PostgreSQL: the task that listens for changes and keeps the generation
    /// in memory while it is connected (see the module doc). It runs until
    /// dropped; the server spawns it and aborts it at shutdown. `None` on
    /// SQLite, which needs none.
    pub fn listener(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let target = self.store.listen.clone()?;
        Some(generation_listen::run(
            self.store.clone(),
            target,
            self.store.heard.clone(),
        ))
    }

    /// PostgreSQL: whether the listener vouches for the generation now
    /// (`None` on SQLite).
    pub fn listening(&self) -> Option<bool> {
        self.store
            .listen
            .as_ref()
            .map(|_| self.store.heard.get().is_some())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Database readings made so far, for metrics: through the pool, and on
    /// SQLite the request thread's own queries (not the answers it took from
    /// the WAL-index header).
    pub fn reads(&self) -> u64 {
        let inline = self.store.inline.as_ref().map_or(0, |r| r.queries());
        self.reads.load(Ordering::Relaxed) + inline
    }

    /// The generation as of a reading that began after this call did (on
    /// PostgreSQL with the listener up: as last announced, see the module doc).
    pub async fn current(&self) -> Result<i64, StoreError> {
        self.since(self.ticket()).await
    }

    /// A mark of this moment: [`Generation::since`] with it accepts any
    /// reading begun after now, so a request takes one when it arrives and
    /// later steps of the same request share the reading an earlier step made.
    pub fn ticket(&self) -> u64 {
        self.state().started
    }

    /// The generation as of a reading that began after `ticket` was taken (on
    /// PostgreSQL with the listener up: as last announced, see the module doc).
    pub async fn since(&self, ticket: u64) -> Result<i64, StoreError> {
        // SQLite: a fresh read on this thread costs less than sharing one.
        if let Some(value) = self.store.inline.as_ref().and_then(|r| r.generation()) {
            return Ok(value);
        }
        // PostgreSQL: the listener's value, while its connection is alive.
        if let Some(value) = self.store.heard.get() {
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
                self.reads.fetch_add(1, Ordering::Relaxed);
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
