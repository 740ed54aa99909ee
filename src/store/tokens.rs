//! Personal access tokens: stored as SHA-256, owned by a user, with scope limits.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError, UserRecord};
use crate::types::Username;

/// An access token as stored, with its owner.
#[derive(Clone)]
pub struct AccessTokenRecord {
    /// Row id.
    pub id: i64,
    /// Token name, unique per user.
    pub name: String,
    /// Owner's name.
    pub username: String,
    /// Scope limits as written (`type:name-glob:actions`).
    pub limits: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the token is refused.
    pub expires_at: Option<i64>,
    /// Unix seconds of the last use.
    pub last_used_at: Option<i64>,
}

impl std::fmt::Debug for AccessTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenRecord")
            .field("name", &self.name)
            .field("username", &self.username)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn from_row(row: &AnyRow) -> Result<AccessTokenRecord, sqlx::Error> {
    let limits: String = row.try_get("limits")?;
    Ok(AccessTokenRecord {
        id: row.try_get("token_id")?,
        name: row.try_get("token_name")?,
        username: row.try_get("username")?,
        limits: serde_json::from_str(&limits).unwrap_or_default(),
        created_at: row.try_get("token_created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

const COLUMNS: &str = "t.id AS token_id, t.name AS token_name, u.username, t.limits, t.created_at AS token_created_at, t.expires_at, t.last_used_at";

impl Store {
    /// Stores a new access token for `username`.
    pub async fn create_access_token(
        &self,
        username: &Username,
        name: &str,
        token_hash: &[u8],
        limits: &[String],
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO access_tokens (user_id, name, token_hash, limits, created_at, expires_at)
             SELECT id, $1, $2, $3, $4, $5 FROM users WHERE username = $6
             ON CONFLICT(user_id, name) DO NOTHING",
        )
        .bind(name)
        .bind(token_hash)
        .bind(serde_json::to_string(limits).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .bind(expires_at)
        .bind(username.as_str())
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return match self.find_user(username).await? {
                None => Err(StoreError::NoSuchUser(username.to_string())),
                Some(_) => Err(StoreError::Exists(format!(
                    "{username} already has a token named {name:?}"
                ))),
            };
        }
        Ok(())
    }

    /// Looks a token up by hash, with its owner.
    pub async fn find_access_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<(AccessTokenRecord, UserRecord)>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS}, {users} FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            users = super::USER_COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some((from_row(&row)?, super::user_from_row(&row)?)))
    }

    /// A user's tokens (never the secrets).
    pub async fn list_access_tokens(
        &self,
        username: &Username,
    ) -> Result<Vec<AccessTokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE u.username = $1 ORDER BY t.name"
        );
        let rows = sqlx::query(&sql)
            .bind(username.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Revokes (deletes) a token by owner and name.
    pub async fn revoke_access_token(
        &self,
        username: &Username,
        name: &str,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "DELETE FROM access_tokens WHERE name = $1 AND user_id = (SELECT id FROM users WHERE username = $2)",
        )
        .bind(name)
        .bind(username.as_str())
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "{username} has no token named {name:?}"
            )));
        }
        Ok(())
    }

    /// Whether a token still exists (for cached checks), by id.
    pub async fn access_token_exists(&self, id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM access_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Records a use (at most once a minute per token).
    pub async fn touch_access_token(&self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE access_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
