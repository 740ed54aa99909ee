//! SQLite only: the audit replay read by one blocking thread on its own
//! connection, handing rows over in batches.
//!
//! The pool's SQLite connections live on worker threads that hand every row of
//! a stream over one at a time; over millions of rows those handoffs were most
//! of a replay's time. This reader yields the same rows as
//! [`Store::audit_replay`](super::Store::audit_replay) (same query: decisions
//! only, not the records of erasures; same snapshot rules), a batch per handoff, through a bounded channel: memory
//! stays at a few batches however many rows there are.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::audit::groups_from;
use super::replay::{RecordedIdentity, ReplayRow};

/// Rows per handoff.
const BATCH: usize = 1024;
/// Batches in flight between the reader and the consumer.
const IN_FLIGHT: usize = 4;

const SQL: &str = "SELECT id, at, last_at, repeats, account, client, kind, via, service, requested,
        granted, outcome, subject, groups, snapshot
 FROM audit_log WHERE at >= ?1 AND outcome <> 'erased' ORDER BY id";

/// A failure of the replay reader.
#[derive(Debug, thiserror::Error)]
#[error("audit replay read failed: {0}")]
pub struct ReplayReadError(String);

/// Decodes one row of [`SQL`] (columns by position: by name costs a search per value).
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReplayRow> {
    let at: i64 = r.get(1)?;
    let snapshot = r.get::<_, i64>(14)? != 0;
    let subject: Option<String> = r.get(12)?;
    let groups = groups_from(r.get(13)?);
    let kind: String = r.get(6)?;
    let identity = match (snapshot, subject, groups) {
        (true, Some(subject), Some(groups)) if !kind.is_empty() => Some(RecordedIdentity {
            subject,
            kind,
            groups,
            via: r.get(7)?,
        }),
        _ => None,
    };
    Ok(ReplayRow {
        id: r.get(0)?,
        at,
        last_at: r.get::<_, Option<i64>>(2)?.unwrap_or(at),
        repeats: r.get(3)?,
        account: r.get(4)?,
        client: r.get(5)?,
        service: r.get(8)?,
        requested: r.get(9)?,
        granted: r.get(10)?,
        outcome: r.get(11)?,
        identity,
    })
}

fn read(
    path: &Path,
    since: i64,
    tx: &mpsc::Sender<Result<Vec<ReplayRow>, ReplayReadError>>,
) -> rusqlite::Result<()> {
    // Read-write flags without create: a WAL reader records its read mark in
    // the shared-memory file. Nothing is written.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut stmt = conn.prepare(SQL)?;
    let mut rows = stmt.query([since])?;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(r) = rows.next()? {
        batch.push(row(r)?);
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(()); // The consumer stopped.
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(Ok(batch));
    }
    Ok(())
}

/// Every audit row recorded at or after `since` in the SQLite database at
/// `path`, by id, in batches. Must be called within a Tokio runtime.
pub fn audit_replay_sqlite(
    path: &Path,
    since: i64,
) -> mpsc::Receiver<Result<Vec<ReplayRow>, ReplayReadError>> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = read(&path, since, &tx) {
            let _ = tx.blocking_send(Err(ReplayReadError(e.to_string())));
        }
    });
    rx
}
