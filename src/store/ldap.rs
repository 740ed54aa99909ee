//! Directory ([[ldap]]) state: refresh sessions of directory users. Rows hold the
//! SHA-256 hash of berth's token, never the token, and no directory secret.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};

/// A directory user's refresh session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSessionRecord {
    /// Directory name from the configuration.
    pub directory: String,
    /// The user's entry.
    pub dn: String,
    /// The name the user signed in with.
    pub login: String,
    /// Account name policy sees.
    pub username: String,
    /// Groups as last seen.
    pub groups: Vec<String>,
    /// Service the token is bound to.
    pub service: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last use.
    pub last_used_at: i64,
    /// Unix seconds of the last check with the directory.
    pub checked_at: i64,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
}

const COLUMNS: &str = "directory, dn, login, username, groups, service, created_at, last_used_at, checked_at, expires_at";

fn from_row(row: &AnyRow) -> Result<LdapSessionRecord, sqlx::Error> {
    let groups: String = row.try_get("groups")?;
    Ok(LdapSessionRecord {
        directory: row.try_get("directory")?,
        dn: row.try_get("dn")?,
        login: row.try_get("login")?,
        username: row.try_get("username")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        service: row.try_get("service")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        checked_at: row.try_get("checked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Stores a directory refresh session.
    pub async fn insert_ldap_session(
        &self,
        token_hash: &[u8],
        rec: &LdapSessionRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ldap_sessions (token_hash, directory, dn, login, username, groups, service, created_at, last_used_at, checked_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(token_hash)
        .bind(&rec.directory)
        .bind(&rec.dn)
        .bind(&rec.login)
        .bind(&rec.username)
        .bind(json_list(&rec.groups))
        .bind(&rec.service)
        .bind(rec.created_at)
        .bind(rec.last_used_at)
        .bind(rec.checked_at)
        .bind(rec.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Looks a directory refresh session up by token hash.
    pub async fn find_ldap_session(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<LdapSessionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM ldap_sessions WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Records a successful re-check with the directory: the groups seen now.
    pub async fn update_ldap_session(
        &self,
        token_hash: &[u8],
        groups: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ldap_sessions SET groups = $1, checked_at = $2, last_used_at = $3 WHERE token_hash = $4",
        )
        .bind(json_list(groups))
        .bind(now)
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a use of a directory refresh session.
    pub async fn touch_ldap_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE ldap_sessions SET last_used_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes one directory refresh session.
    pub async fn delete_ldap_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM ldap_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes every refresh session of a directory user (by account name, in
    /// one directory or all); returns how many went.
    pub async fn revoke_ldap_username(
        &self,
        directory: Option<&str>,
        username: &str,
    ) -> Result<u64, StoreError> {
        let res = match directory {
            Some(d) => {
                sqlx::query("DELETE FROM ldap_sessions WHERE directory = $1 AND username = $2")
                    .bind(d)
                    .bind(username)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM ldap_sessions WHERE username = $1")
                    .bind(username)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(res.rows_affected())
    }

    /// Deletes sessions past their absolute expiry or idle for `idle` seconds.
    pub async fn purge_ldap(&self, now: i64, idle: i64) -> Result<u64, StoreError> {
        let res =
            sqlx::query("DELETE FROM ldap_sessions WHERE expires_at <= $1 OR last_used_at <= $2")
                .bind(now)
                .bind(now - idle)
                .execute(&self.pool)
                .await?;
        Ok(res.rows_affected())
    }
}
