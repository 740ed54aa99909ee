//! Refresh tokens (what `docker login` keeps): stored as hashes, capped per
//! user, found with their user, touched on use, deleted and purged. Deleting
//! one moves the authentication generation (migration 0101's trigger).

use sqlx::Row;

use super::{user_from_row, RefreshRecord, Store, StoreError, MAX_REFRESH_PER_USER, USER_COLUMNS};

impl Store {
    /// Stores a refresh token hash, and revokes the user's oldest refresh tokens
    /// beyond [`MAX_REFRESH_PER_USER`], so that a script logging in in a loop
    /// cannot grow the table (or a user's sessions) without bound.
    pub async fn insert_refresh(
        &self,
        token_hash: &[u8],
        user_id: i64,
        service: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, service, created_at, last_used_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(service)
        .bind(now)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        let capped = sqlx::query(
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND token_hash NOT IN
               (SELECT token_hash FROM refresh_tokens WHERE user_id = $1
                ORDER BY created_at DESC, last_used_at DESC, token_hash DESC LIMIT $2)",
        )
        .bind(user_id)
        .bind(MAX_REFRESH_PER_USER)
        .execute(&self.pool)
        .await?;
        self.moved_generation(capped.rows_affected());
        Ok(())
    }

    /// Looks a refresh token up by hash, with its user.
    pub async fn find_refresh(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let sql = format!(
            "SELECT {USER_COLUMNS}, r.service, r.last_used_at, r.expires_at
             FROM refresh_tokens r JOIN users u ON u.id = r.user_id WHERE r.token_hash = $1"
        );
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshRecord {
            service: row.try_get("service")?,
            last_used_at: row.try_get("last_used_at")?,
            expires_at: row.try_get("expires_at")?,
            user: user_from_row(&row)?,
        }))
    }

    /// Records a use of a refresh token.
    pub async fn touch_refresh(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET last_used_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes one refresh token.
    pub async fn delete_refresh(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        let res = sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        self.moved_generation(res.rows_affected());
        Ok(())
    }

    /// Deletes refresh tokens past their absolute expiry or idle for `idle` seconds.
    pub async fn purge_refresh(&self, now: i64, idle: i64) -> Result<u64, StoreError> {
        let res =
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1 OR last_used_at <= $2")
                .bind(now)
                .bind(now - idle)
                .execute(&self.pool)
                .await?;
        self.moved_generation(res.rows_affected());
        Ok(res.rows_affected())
    }
}
