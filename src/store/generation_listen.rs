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
use std::sync::Arc;
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
#[derive(Debug)]
pub(super) struct Heard {
    value: AtomicI64,
}

impl Default for Heard {
    fn default() -> Self {
        Heard {
            value: AtomicI64::new(UNKNOWN),
        }
    }
}

impl Heard {
    /// The generation, if the listener vouches for it now.
    pub(super) fn get(&self) -> Option<i64> {
        Some(self.value.load(Ordering::Acquire)).filter(|v| *v != UNKNOWN)
    }

    fn set(&self, value: i64) {
        self.value.store(value, Ordering::Release);
    }

    fn lose(&self) {
        self.value.store(UNKNOWN, Ordering::Release);
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
    match read(&mut listener).await {
        Ok(value) => heard.set(value),
        Err(lost) => return lost,
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
        if changed {
            // Until the new value is read, requests read it themselves.
            heard.lose();
            match read(listener).await {
                Ok(value) => heard.set(value),
                Err(lost) => return lost,
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
        heard.set(0);
        assert_eq!(heard.get(), Some(0));
        heard.set(41);
        assert_eq!(heard.get(), Some(41));
        {
            let _vouching = Vouching(&heard);
        }
        assert_eq!(heard.get(), None);
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
