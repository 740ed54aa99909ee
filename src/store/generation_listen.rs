//! PostgreSQL only: a listener that keeps the authentication generation in
//! memory, so warm requests need no database round trip to learn it.
//!
//! Migration `0140_auth_generation_notify.sql` makes every change of the
//! `auth_generation` row send a notification on [`CHANNEL`] when its
//! transaction commits. One background task per server holds a connection of
//! its own (`application_name` [`APPLICATION_NAME`]) that `LISTEN`s there,
//! then reads the value, and only then publishes it: a change committed before
//! the `LISTEN` is in the reading, one committed after it is notified. Each
//! notification withdraws the value at once (requests read the database
//! themselves meanwhile) and makes the task read it again on the same
//! connection (a transaction that moves the generation many times sends one
//! notification), so the published number is always one the database held,
//! never an arithmetic guess, and a restored database is followed as well.
//!
//! While that connection is known to be alive, [`Heard::get`] answers. It is
//! known to be alive because the task sends itself a heartbeat through the
//! server's pool every [`BEAT`] and must hear it back: a connection that
//! died without a word (a firewall dropping it, a failover) is given up after
//! [`LATE_BEATS`] unheard beats. A connection that fails, a heartbeat that
//! cannot be sent or a reading that fails makes the value unknown at once;
//! requests then read the database themselves (the coalesced readings in
//! `generation`), which stays correct, until a new connection has listened and
//! read again (retried with a backoff of [`BACKOFF_MIN`] doubling up to
//! [`BACKOFF_MAX`]). Dropping the task (server shutdown) makes the value
//! unknown too.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::Store;

/// The notification channel the migration's trigger sends on.
pub(super) const CHANNEL: &str = "berth_auth_generation";

/// The `application_name` of the listening connection (visible in
/// `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "berth-generation";

/// How often the listener sends itself a heartbeat.
const BEAT: Duration = Duration::from_secs(1);

/// Heartbeats sent but not heard back before the connection is given up.
const LATE_BEATS: u64 = 3;

/// Longest wait for connecting, `LISTEN`, a reading or a heartbeat.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// First wait before connecting again.
const BACKOFF_MIN: Duration = Duration::from_millis(500);

/// Longest wait before connecting again.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A connection that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// The value no reading can have: nothing is known.
const UNKNOWN: i64 = i64::MIN;

/// What the listener publishes: the generation while its connection is known
/// to be alive, else nothing.
///
/// A change this process commits itself withdraws the value at once
/// ([`Heard::changed_here`]), so the process that made a change never answers
/// from a value older than it, not even for the moment the notification takes.
/// Every withdrawal moves a stamp, and a reading publishes only if no
/// withdrawal came after it began: a reading already under way when a change
/// committed here cannot put back the value from before it.
#[derive(Debug)]
pub(super) struct Heard {
    value: AtomicI64,
    /// Withdrawals so far; held while publishing, so none slips in between.
    stamp: Mutex<u64>,
}

impl Default for Heard {
    fn default() -> Self {
        Heard {
            value: AtomicI64::new(UNKNOWN),
            stamp: Mutex::new(0),
        }
    }
}

impl Heard {
    /// The generation, if the listener vouches for it now.
    pub(super) fn get(&self) -> Option<i64> {
        Some(self.value.load(Ordering::Acquire)).filter(|v| *v != UNKNOWN)
    }

    fn stamp(&self) -> MutexGuard<'_, u64> {
        self.stamp.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A mark taken before a reading, for [`Heard::publish`].
    fn begin(&self) -> u64 {
        *self.stamp()
    }

    /// Publishes a reading begun at `began`, unless a withdrawal came since.
    fn publish(&self, began: u64, value: i64) -> bool {
        let stamp = self.stamp();
        let current = *stamp == began;
        if current {
            self.value.store(value, Ordering::Release);
        }
        current
    }

    /// Withdraws the value: requests read the database until it is read again.
    fn lose(&self) {
        let mut stamp = self.stamp();
        *stamp = stamp.wrapping_add(1);
        self.value.store(UNKNOWN, Ordering::Release);
    }

    /// This process committed a change that can move the generation: withdraw
    /// the value now rather than when the notification arrives. The listener
    /// reads again on the notification, or on its next heartbeat if the change
    /// moved nothing.
    pub(super) fn changed_here(&self) {
        self.lose();
    }
}

/// Makes the value unknown when the task ends in any way (also when dropped).
struct Vouching<'a>(&'a Heard);

impl Drop for Vouching<'_> {
    fn drop(&mut self) {
        self.0.lose();
    }
}

/// Where the listener connects: the pool's own settings. Shows no password.
#[derive(Clone)]
pub(super) struct ListenTarget(pub(super) Arc<PgConnectOptions>);

impl std::fmt::Debug for ListenTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenTarget")
            .field("host", &self.0.get_host())
            .field("port", &self.0.get_port())
            .finish_non_exhaustive()
    }
}

/// Why a connection was given up.
type Lost = String;

/// Keeps `heard` up to date until dropped: listens, and after every loss
/// connects again with a backoff.
pub(super) async fn run(store: Store, target: ListenTarget, heard: Arc<Heard>) {
    let _vouching = Vouching(&heard);
    let mut raw = [0u8; 8];
    // Tells this task's heartbeats from other replicas'; any value will do.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
    let instance = u64::from_le_bytes(raw);
    let options = (*target.0).clone().application_name(APPLICATION_NAME);
    let mut backoff = BACKOFF_MIN;
    loop {
        let began = Instant::now();
        let lost = session(&store, &options, &heard, instance).await;
        heard.lose();
        tracing::warn!(
            error = %lost,
            retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "authentication generation listener lost; every burst of requests reads the database until it is back"
        );
        if began.elapsed() >= STABLE {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: listen, read, publish, then follow notifications until
/// something fails. Returns only on a failure.
async fn session(store: &Store, options: &PgConnectOptions, heard: &Heard, instance: u64) -> Lost {
    let mut listener = match timeout(STEP_TIMEOUT, subscribe(options)).await {
        Ok(Ok(listener)) => listener,
        Ok(Err(e)) => return format!("cannot listen: {e}"),
        Err(_) => return "cannot listen: no answer".into(),
    };
    if let Err(lost) = refresh(&mut listener, heard).await {
        return lost;
    }
    tracing::info!("authentication generation listener up: warm requests need no database reading");
    let heard_beat = AtomicU64::new(0);
    tokio::select! {
        lost = follow(&mut listener, heard, instance, &heard_beat) => lost,
        lost = watch(store, instance, &heard_beat) => lost,
    }
}

async fn subscribe(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // A pool of one, only because the listener is built on a pool.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(STEP_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection ends the session (and is reported): no silent redial.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The generation as committed now, read on the listening connection.
async fn read(listener: &mut PgListener) -> Result<i64, Lost> {
    let reading = sqlx::query_scalar::<_, i64>("SELECT value FROM auth_generation WHERE id = 1")
        .fetch_one(&mut *listener);
    match timeout(STEP_TIMEOUT, reading).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("cannot read the generation: {e}")),
        Err(_) => Err("cannot read the generation: no answer".into()),
    }
}

/// Reads the generation on the listening connection and publishes it, again
/// as long as a change made here withdrew the value while it was being read.
async fn refresh(listener: &mut PgListener, heard: &Heard) -> Result<(), Lost> {
    loop {
        let began = heard.begin();
        let value = read(listener).await?;
        if heard.publish(began, value) {
            return Ok(());
        }
    }
}

/// Whether a notification is a change (as opposed to a heartbeat); records
/// this task's own heartbeats in `heard_beat`.
fn is_change(payload: &str, instance: u64, heard_beat: &AtomicU64) -> bool {
    let Some(rest) = payload.strip_prefix("beat ") else {
        return true;
    };
    let mine = rest
        .split_once(' ')
        .filter(|(who, _)| who.parse() == Ok(instance))
        .and_then(|(_, number)| number.parse::<u64>().ok());
    if let Some(number) = mine {
        heard_beat.fetch_max(number, Ordering::AcqRel);
    }
    false
}

/// Reads the generation again after every change notified; returns when the
/// connection fails.
async fn follow(
    listener: &mut PgListener,
    heard: &Heard,
    instance: u64,
    heard_beat: &AtomicU64,
) -> Lost {
    loop {
        let first = match listener.try_recv().await {
            Ok(Some(n)) => n,
            Ok(None) => return "connection closed".into(),
            Err(e) => return format!("connection failed: {e}"),
        };
        let mut changed = is_change(first.payload(), instance, heard_beat);
        // Everything already received is answered by one reading.
        while let Some(n) = listener.next_buffered() {
            changed |= is_change(n.payload(), instance, heard_beat);
        }
        // A value withdrawn by a change made here (which may have moved
        // nothing, and then is never notified) is read again at the latest
        // on the next heartbeat.
        if changed || heard.get().is_none() {
            // Until the new value is read, requests read it themselves.
            heard.lose();
            if let Err(lost) = refresh(listener, heard).await {
                return lost;
            }
        }
    }
}

/// Sends a heartbeat every [`BEAT`] through the server's pool; returns when
/// one cannot be sent or too many went unheard.
async fn watch(store: &Store, instance: u64, heard_beat: &AtomicU64) -> Lost {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        if sent >= heard_beat.load(Ordering::Acquire) + LATE_BEATS {
            return format!("{LATE_BEATS} heartbeats not heard back");
        }
        sent += 1;
        let payload = format!("beat {instance} {sent}");
        match timeout(STEP_TIMEOUT, store.notify(CHANNEL, &payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("cannot send a heartbeat: {e}"),
            Err(_) => return "cannot send a heartbeat: no answer".into(),
        }
    }
}

impl Store {
    /// Sends a notification on `channel` (PostgreSQL only).
    async fn notify(&self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        // `pg_notify` returns void, which the portable driver cannot carry.
        sqlx::query("SELECT 1 FROM pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_listener_vouches() {
        let heard = Heard::default();
        assert_eq!(heard.get(), None);
        assert!(heard.publish(heard.begin(), 0));
        assert_eq!(heard.get(), Some(0));
        assert!(heard.publish(heard.begin(), 41));
        assert_eq!(heard.get(), Some(41));
        {
            let _vouching = Vouching(&heard);
        }
        assert_eq!(heard.get(), None);
    }

    #[test]
    fn a_change_made_here_withdraws_and_beats_a_reading_under_way() {
        let heard = Heard::default();
        assert!(heard.publish(heard.begin(), 5));
        // A reading begins, then this process commits a change.
        let began = heard.begin();
        heard.changed_here();
        assert_eq!(heard.get(), None, "withdrawn at once");
        // The reading from before the change does not come back.
        assert!(!heard.publish(began, 5));
        assert_eq!(heard.get(), None);
        // A reading begun after it does.
        assert!(heard.publish(heard.begin(), 6));
        assert_eq!(heard.get(), Some(6));
    }

    #[test]
    fn heartbeats_are_told_from_changes() {
        let heard = AtomicU64::new(0);
        // The trigger's notification, or anything unknown, is a change.
        assert!(is_change("", 7, &heard));
        assert!(is_change("something else", 7, &heard));
        // Our own heartbeat is heard and is no change; numbers only go up.
        assert!(!is_change("beat 7 3", 7, &heard));
        assert!(!is_change("beat 7 2", 7, &heard));
        assert_eq!(heard.load(Ordering::Acquire), 3);
        // Another replica's heartbeat, or a malformed one, proves nothing.
        assert!(!is_change("beat 8 9", 7, &heard));
        assert!(!is_change("beat 7 x", 7, &heard));
        assert!(!is_change("beat 7", 7, &heard));
        assert_eq!(heard.load(Ordering::Acquire), 3);
    }
}
