//! One SQLite connection read from the calling thread, for the single hottest
//! query: the authentication generation.
//!
//! The pool's SQLite connections each live on a worker thread, so every query
//! costs two thread handoffs; under load that is most of a token request. This
//! reader answers on the request's own thread in microseconds. It never waits
//! for a lock (a busy database makes it step aside, and the caller uses the
//! pool), so it cannot stall the async executor.
//!
//! Most requests need no query at all: the reader keeps its last reading with
//! the WAL-index header seen just before it was made, and while the header is
//! unchanged nothing has been committed since, so that reading is still the
//! generation (see [`super::wal_index`]). Any commit, berth's own audit rows
//! included, makes the next request read again.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::wal_index::{Header, WalIndex};

const GENERATION_SQL: &str = "SELECT value FROM auth_generation WHERE id = 1";

/// A read-only use of one SQLite connection beside the pool.
#[derive(Debug)]
pub(super) struct InlineReader {
    conn: Mutex<Connection>,
    /// The WAL index, when the database is in WAL mode (it always is for berth).
    index: Option<WalIndex>,
    /// The last reading, with the header seen before it was made.
    last: Mutex<Option<(Header, i64)>>,
    /// Queries made, for tests and metrics.
    queries: AtomicU64,
}

impl InlineReader {
    /// Opens the (existing, migrated) database file.
    pub(super) fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        // Read-write (never create): WAL readers record their read marks in the
        // shared-memory file. This connection only ever reads.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.prepare_cached(GENERATION_SQL)?;
        let wal = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))?
            .eq_ignore_ascii_case("wal");
        // A first reading maps the WAL index, so its header exists.
        let reader = InlineReader {
            conn: Mutex::new(conn),
            index: None,
            last: Mutex::new(None),
            queries: AtomicU64::new(0),
        };
        let _ = reader.query();
        let index = match wal.then(|| WalIndex::open(path)) {
            Some(Ok(index)) => Some(index),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "SQLite WAL index unreadable; the generation is read from the database on every request");
                None
            }
            None => None,
        };
        Ok(InlineReader { index, ..reader })
    }

    /// The authentication generation as committed now; `None` when SQLite
    /// would have to wait (or fails), so the caller asks the pool instead.
    pub(super) fn generation(&self) -> Option<i64> {
        // Seen before the query below, so a reading kept with this header
        // reflects every commit that made it.
        let seen = self.index.as_ref().and_then(WalIndex::header);
        if let Some(header) = &seen {
            if let Some((at, value)) = *self.last() {
                if at == *header {
                    return Some(value);
                }
            }
        }
        let value = self.query()?;
        if let Some(header) = seen {
            *self.last() = Some((header, value));
        }
        Some(value)
    }

    /// Queries made so far (readings answered from the WAL-index header are
    /// not counted).
    pub(super) fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<(Header, i64)>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the generation from the database.
    fn query(&self) -> Option<i64> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stmt = match conn.prepare_cached(GENERATION_SQL) {
            Ok(stmt) => stmt,
            Err(e) => {
                tracing::debug!(error = %e, "inline generation read unavailable");
                return None;
            }
        };
        match stmt.query_row([], |row| row.get(0)) {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::debug!(error = %e, "inline generation read stepped aside");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A database in WAL mode with the generation row, and a writer of its own.
    fn database(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("berth.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE auth_generation (id INTEGER PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO auth_generation VALUES (1, 7);
                 CREATE TABLE other (x INTEGER);",
            )
            .unwrap();
        (path, writer)
    }

    #[test]
    fn unchanged_header_answers_without_a_query_and_any_commit_reads_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = database(dir.path());
        let reader = InlineReader::open(&path).unwrap();
        assert!(reader.index.is_some(), "no WAL index in WAL mode");
        assert_eq!(reader.generation(), Some(7));
        let queries = reader.queries();
        for _ in 0..100 {
            assert_eq!(reader.generation(), Some(7));
        }
        assert_eq!(reader.queries(), queries, "queried with nothing committed");

        // Another connection's commit is seen by the very next reading.
        writer
            .execute("UPDATE auth_generation SET value = 8 WHERE id = 1", [])
            .unwrap();
        assert_eq!(reader.generation(), Some(8));
        assert_eq!(reader.queries(), queries + 1);
        assert_eq!(reader.generation(), Some(8));
        assert_eq!(reader.queries(), queries + 1);

        // A commit elsewhere reads again and finds the same value.
        writer.execute("INSERT INTO other VALUES (1)", []).unwrap();
        assert_eq!(reader.generation(), Some(8));
        assert_eq!(reader.queries(), queries + 2);

        // A checkpoint that restarts the log, then a change: still seen.
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        writer
            .execute("UPDATE auth_generation SET value = 9 WHERE id = 1", [])
            .unwrap();
        assert_eq!(reader.generation(), Some(9));

        // An open transaction that has not committed changes nothing.
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        writer
            .execute("UPDATE auth_generation SET value = 10 WHERE id = 1", [])
            .unwrap();
        assert_eq!(reader.generation(), Some(9));
        writer.execute_batch("ROLLBACK").unwrap();
        assert_eq!(reader.generation(), Some(9));
    }

    #[test]
    fn a_database_not_in_wal_mode_is_queried_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "CREATE TABLE auth_generation (id INTEGER PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO auth_generation VALUES (1, 3);",
            )
            .unwrap();
        let reader = InlineReader::open(&path).unwrap();
        assert!(reader.index.is_none());
        let queries = reader.queries();
        assert_eq!(reader.generation(), Some(3));
        assert_eq!(reader.generation(), Some(3));
        assert_eq!(reader.queries(), queries + 2);
    }

    #[test]
    fn a_replaced_index_file_is_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _writer) = database(dir.path());
        let index = WalIndex::open(&path).unwrap();
        assert!(index.header().is_some());
        let mut shm = path.as_os_str().to_owned();
        shm.push("-shm");
        let moved = dir.path().join("moved-shm");
        std::fs::rename(&shm, &moved).unwrap();
        std::fs::copy(&moved, &shm).unwrap();
        // Checked at most once a second.
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while index.header().is_some() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            index.header().is_none(),
            "a replaced -shm file still trusted"
        );
    }
}
