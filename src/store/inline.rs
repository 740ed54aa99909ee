//! One SQLite connection read from the calling thread, for the single hottest
//! query: the authentication generation.
//!
//! The pool's SQLite connections each live on a worker thread, so every query
//! costs two thread handoffs; under load that is most of a token request. This
//! reader answers on the request's own thread in microseconds. It never waits
//! for a lock (a busy database makes it step aside, and the caller uses the
//! pool), so it cannot stall the async executor.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

const GENERATION_SQL: &str = "SELECT value FROM auth_generation WHERE id = 1";

/// A read-only use of one SQLite connection beside the pool.
#[derive(Debug)]
pub(super) struct InlineReader {
    conn: Mutex<Connection>,
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
        Ok(InlineReader {
            conn: Mutex::new(conn),
        })
    }

    /// The authentication generation as committed now; `None` when SQLite
    /// would have to wait (or fails), so the caller asks the pool instead.
    pub(super) fn generation(&self) -> Option<i64> {
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
