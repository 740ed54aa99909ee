//! Sign-in attempt counters in fixed windows, shared by every replica using the
//! same database. An attempt is taken *before* the password is checked, by one
//! conditional upsert per counter, so the limit holds however many requests
//! race for it, on one replica or many.

use sqlx::Row;

use super::{Store, StoreError};

/// The answer of [`Store::take_login_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The attempt was counted; `window_start` identifies the window, for a refund.
    Taken {
        /// Start of the counting window the attempt went into.
        window_start: i64,
    },
    /// `limit` attempts are already on record in the current window.
    Full {
        /// When the current window ends.
        window_end: i64,
    },
}

impl Store {
    /// Counts one attempt under `key` unless `limit` attempts are on record in
    /// the current window (which starts at the first attempt and lasts `window`
    /// seconds). One statement: the row lock (PostgreSQL) or the write lock
    /// (SQLite) makes concurrent callers see each other's attempts, so at most
    /// `limit` of them are ever taken per window.
    pub async fn take_login_attempt(
        &self,
        key: &str,
        now: i64,
        window: i64,
        limit: i64,
    ) -> Result<Take, StoreError> {
        let taken = sqlx::query(
            "INSERT INTO login_failures (key, window_start, count) VALUES ($1, $2, 1)
             ON CONFLICT(key) DO UPDATE SET
               count = CASE WHEN login_failures.window_start <= $3 THEN 1 ELSE login_failures.count + 1 END,
               window_start = CASE WHEN login_failures.window_start <= $3 THEN $2 ELSE login_failures.window_start END
             WHERE login_failures.window_start <= $3 OR login_failures.count < $4
             RETURNING window_start",
        )
        .bind(key)
        .bind(now)
        .bind(now - window)
        .bind(limit)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = taken {
            return Ok(Take::Taken {
                window_start: row.try_get("window_start")?,
            });
        }
        let start: Option<i64> =
            sqlx::query_scalar("SELECT window_start FROM login_failures WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Take::Full {
            window_end: start.unwrap_or(now) + window,
        })
    }

    /// Gives back an attempt taken in the window that started at `window_start`
    /// (the check did not happen, or it succeeded). A later window is left alone.
    pub async fn refund_login_attempt(
        &self,
        key: &str,
        window_start: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_failures SET count = count - 1
             WHERE key = $1 AND window_start = $2 AND count > 0",
        )
        .bind(key)
        .bind(window_start)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes `key` and every key that starts with `prefix` (`berth user unlock`).
    /// Returns how many counters were removed.
    pub async fn clear_login_keys(&self, key: &str, prefix: &str) -> Result<u64, StoreError> {
        let len = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let res =
            sqlx::query("DELETE FROM login_failures WHERE key = $1 OR substr(key, 1, $2) = $3")
                .bind(key)
                .bind(len)
                .bind(prefix)
                .execute(&self.pool)
                .await?;
        Ok(res.rows_affected())
    }

    /// Forgets the failures of `key` (after a successful sign-in).
    pub async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes counters whose window has ended.
    pub async fn purge_login_failures(&self, now: i64, window: i64) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM login_failures WHERE window_start <= $1")
            .bind(now - window)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }
}
