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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures::StreamExt;

    use super::*;
    use crate::config::Database;
    use crate::store::{AuditRecord, Store};

    fn record(i: i64, snapshot: bool, outcome: &str, repeats: i64) -> AuditRecord {
        AuditRecord {
            at: 1_000 + i,
            request_id: format!("r{i}"),
            client: format!("192.0.2.{i}"),
            account: format!("user{i}"),
            kind: if snapshot { "user" } else { "" }.into(),
            via: "local".into(),
            service: "registry".into(),
            requested: format!("repository:team/app{i}:pull,push"),
            granted: format!("repository:team/app{i}:pull"),
            outcome: outcome.into(),
            subject: snapshot.then(|| format!("user{i}")),
            groups: snapshot.then(|| vec!["b".to_owned(), "a".to_owned()]),
            repeats,
            last_at: (repeats > 1).then_some(2_000 + i),
            ..AuditRecord::default()
        }
    }

    /// The batched reader yields exactly what the store's stream yields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_match_the_store_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b.db");
        let store = Store::open(&Database::Sqlite(path.clone())).await.unwrap();
        let mut rows = Vec::new();
        for i in 0..2_500 {
            let outcome = match i % 7 {
                0 => "unauthorized",
                1 => "erased",
                _ => "issued",
            };
            rows.push(record(i, i % 5 != 0, outcome, 1 + i % 3));
        }
        for chunk in rows.chunks(500) {
            store.insert_audit(chunk).await.unwrap();
        }
        let since = 1_100;
        let expected: Vec<ReplayRow> = store
            .audit_replay(since)
            .map(|r| r.unwrap())
            .collect()
            .await;
        let mut got = Vec::new();
        let mut batches = audit_replay_sqlite(&path, since);
        while let Some(b) = batches.recv().await {
            got.extend(b.unwrap());
        }
        assert!(expected.len() > 2 * BATCH, "{}", expected.len());
        assert!(expected.iter().any(|r| r.identity.is_none()));
        assert!(expected.iter().any(|r| r.repeats > 1));
        assert_eq!(got, expected);
        store.close().await;
    }

    #[tokio::test]
    async fn a_missing_database_is_an_error_not_a_hang() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rx = audit_replay_sqlite(&tmp.path().join("none.db"), 0);
        assert!(rx.recv().await.unwrap().is_err());
        assert!(rx.recv().await.is_none());
    }
}
