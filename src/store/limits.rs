//! Failed sign-in counters in fixed windows, shared by every replica using the
//! same database.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Counts one failure for each key; returns nothing.
    pub async fn record_login_failure(
        &self,
        keys: &[&str],
        now: i64,
        window: i64,
    ) -> Result<(), StoreError> {
        for key in keys {
            sqlx::query(
                "INSERT INTO login_failures (key, window_start, count) VALUES ($1, $2, 1)
                 ON CONFLICT(key) DO UPDATE SET
                   count = CASE WHEN login_failures.window_start <= $3 THEN 1 ELSE login_failures.count + 1 END,
                   window_start = CASE WHEN login_failures.window_start <= $3 THEN $2 ELSE login_failures.window_start END",
            )
            .bind(*key)
            .bind(now)
            .bind(now - window)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// The largest failure count among `keys` within the current window, and when
    /// that window ends.
    pub async fn login_failures(
        &self,
        keys: &[&str],
        now: i64,
        window: i64,
    ) -> Result<(i64, i64), StoreError> {
        let mut worst = (0, now);
        for key in keys {
            let row = sqlx::query("SELECT window_start, count FROM login_failures WHERE key = $1 AND window_start > $2")
                .bind(*key)
                .bind(now - window)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                let count: i64 = row.try_get("count")?;
                let start: i64 = row.try_get("window_start")?;
                if count > worst.0 {
                    worst = (count, start + window);
                }
            }
        }
        Ok(worst)
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
