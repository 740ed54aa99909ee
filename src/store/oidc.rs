//! Federated (OIDC) state: refresh sessions of federated users and the tokens they
//! mint on the sign-in page. Rows hold SHA-256 hashes of berth's tokens and the
//! provider's refresh token sealed by `authn::oidc` — never a secret in clear.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};

/// A federated user as remembered with a session or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedOwner {
    /// Provider name from the configuration.
    pub provider: String,
    /// The provider's `sub`.
    pub subject: String,
    /// Username at the provider.
    pub username: String,
    /// Groups as last seen.
    pub groups: Vec<String>,
}

/// A federated refresh session.
#[derive(Clone)]
pub struct OidcSessionRecord {
    /// Owner.
    pub owner: FederatedOwner,
    /// Service the token is bound to.
    pub service: String,
    /// Sealed provider refresh token.
    pub idp_refresh: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last use.
    pub last_used_at: i64,
    /// Unix seconds of the last check with the provider.
    pub checked_at: i64,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for OidcSessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSessionRecord")
            .field("owner", &self.owner)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// A token minted on the sign-in page.
#[derive(Clone)]
pub struct OidcTokenRecord {
    /// Row id.
    pub id: i64,
    /// Owner.
    pub owner: FederatedOwner,
    /// Free text from the owner.
    pub description: String,
    /// Actions the token may be granted at most.
    pub actions: Vec<String>,
    /// Repository limits (`repository:NAME:ACTIONS`, the syntax of
    /// [`crate::policy::limit::Limit`]); empty: limited by `actions` only.
    pub limits: Vec<String>,
    /// Sealed provider refresh token.
    pub idp_refresh: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// Unix seconds of the last check with the provider.
    pub checked_at: i64,
    /// Unix seconds of the last use.
    pub last_used_at: Option<i64>,
}

impl std::fmt::Debug for OidcTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcTokenRecord")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("actions", &self.actions)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn owner_from_row(row: &AnyRow) -> Result<FederatedOwner, sqlx::Error> {
    let groups: String = row.try_get("groups")?;
    Ok(FederatedOwner {
        provider: row.try_get("provider")?,
        subject: row.try_get("subject")?,
        username: row.try_get("username")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
    })
}

fn session_from_row(row: &AnyRow) -> Result<OidcSessionRecord, sqlx::Error> {
    Ok(OidcSessionRecord {
        owner: owner_from_row(row)?,
        service: row.try_get("service")?,
        idp_refresh: row.try_get("idp_refresh")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        checked_at: row.try_get("checked_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn token_from_row(row: &AnyRow) -> Result<OidcTokenRecord, sqlx::Error> {
    let actions: String = row.try_get("actions")?;
    let limits: String = row.try_get("limits")?;
    Ok(OidcTokenRecord {
        id: row.try_get("id")?,
        owner: owner_from_row(row)?,
        description: row.try_get("description")?,
        actions: serde_json::from_str(&actions).unwrap_or_default(),
        // Unreadable limits fail closed: never an unlimited token.
        limits: serde_json::from_str(&limits).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        idp_refresh: row.try_get("idp_refresh")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        checked_at: row.try_get("checked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

const SESSION_COLUMNS: &str = "provider, subject, username, groups, service, idp_refresh, created_at, last_used_at, checked_at, expires_at";
const TOKEN_COLUMNS: &str = "id, provider, subject, username, groups, description, actions, limits, idp_refresh, created_at, expires_at, checked_at, last_used_at";

impl Store {
    /// Stores a federated refresh session.
    pub async fn insert_oidc_session(
        &self,
        token_hash: &[u8],
        rec: &OidcSessionRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oidc_sessions (token_hash, provider, subject, username, groups, service, idp_refresh, created_at, last_used_at, checked_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(token_hash)
        .bind(&rec.owner.provider)
        .bind(&rec.owner.subject)
        .bind(&rec.owner.username)
        .bind(json_list(&rec.owner.groups))
        .bind(&rec.service)
        .bind(&rec.idp_refresh)
        .bind(rec.created_at)
        .bind(rec.last_used_at)
        .bind(rec.checked_at)
        .bind(rec.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Looks a federated refresh session up by token hash.
    pub async fn find_oidc_session(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<OidcSessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM oidc_sessions WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_from_row).transpose()?)
    }

    /// Records a successful check with the provider: new groups, name and sealed
    /// provider refresh token.
    pub async fn update_oidc_session(
        &self,
        token_hash: &[u8],
        owner: &FederatedOwner,
        idp_refresh: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE oidc_sessions SET username = $1, groups = $2, idp_refresh = $3, checked_at = $4, last_used_at = $5
             WHERE token_hash = $6",
        )
        .bind(&owner.username)
        .bind(json_list(&owner.groups))
        .bind(idp_refresh)
        .bind(now)
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a use of a federated refresh session.
    pub async fn touch_oidc_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE oidc_sessions SET last_used_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes one federated refresh session.
    pub async fn delete_oidc_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM oidc_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes sessions past their absolute expiry or idle for `idle` seconds, and
    /// expired sign-in page tokens. Returns how many rows went.
    pub async fn purge_oidc(&self, now: i64, idle: i64) -> Result<u64, StoreError> {
        let a =
            sqlx::query("DELETE FROM oidc_sessions WHERE expires_at <= $1 OR last_used_at <= $2")
                .bind(now)
                .bind(now - idle)
                .execute(&self.pool)
                .await?;
        let b = sqlx::query("DELETE FROM oidc_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    /// Stores a token minted on the sign-in page; returns its id.
    pub async fn insert_oidc_token(
        &self,
        token_hash: &[u8],
        rec: &OidcTokenRecord,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO oidc_tokens (token_hash, provider, subject, username, groups, description, actions, limits, idp_refresh, created_at, expires_at, checked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(token_hash)
        .bind(&rec.owner.provider)
        .bind(&rec.owner.subject)
        .bind(&rec.owner.username)
        .bind(json_list(&rec.owner.groups))
        .bind(&rec.description)
        .bind(json_list(&rec.actions))
        .bind(json_list(&rec.limits))
        .bind(&rec.idp_refresh)
        .bind(rec.created_at)
        .bind(rec.expires_at)
        .bind(rec.checked_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Looks a sign-in page token up by hash.
    pub async fn find_oidc_token(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<OidcTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM oidc_tokens WHERE token_hash = $1");
        let row = sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(token_from_row).transpose()?)
    }

    /// The sign-in page tokens of one federated user, newest first.
    pub async fn list_oidc_tokens(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Vec<OidcTokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM oidc_tokens WHERE provider = $1 AND subject = $2 ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(provider)
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// Records a use, and optionally a check with the provider (new groups, name
    /// and sealed provider refresh token).
    pub async fn update_oidc_token(
        &self,
        id: i64,
        checked: Option<(&FederatedOwner, &[u8])>,
        now: i64,
    ) -> Result<(), StoreError> {
        match checked {
            Some((owner, sealed)) => {
                sqlx::query(
                    "UPDATE oidc_tokens SET username = $1, groups = $2, idp_refresh = $3, checked_at = $4, last_used_at = $5 WHERE id = $6",
                )
                .bind(&owner.username)
                .bind(json_list(&owner.groups))
                .bind(sealed)
                .bind(now)
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("UPDATE oidc_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes a sign-in page token; with an owner, only if it is theirs. Returns
    /// whether a token went.
    pub async fn delete_oidc_token(
        &self,
        id: i64,
        owner: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let res = match owner {
            Some((provider, subject)) => {
                sqlx::query(
                    "DELETE FROM oidc_tokens WHERE id = $1 AND provider = $2 AND subject = $3",
                )
                .bind(id)
                .bind(provider)
                .bind(subject)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM oidc_tokens WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(res.rows_affected() > 0)
    }

    /// Sign-in page tokens of every federated user, or of one provider or
    /// username, newest first.
    pub async fn list_all_oidc_tokens(
        &self,
        provider: Option<&str>,
        username: Option<&str>,
    ) -> Result<Vec<OidcTokenRecord>, StoreError> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM oidc_tokens
             WHERE ($1 = '' OR provider = $1) AND ($2 = '' OR username = $2)
             ORDER BY created_at DESC, id DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(provider.unwrap_or_default())
            .bind(username.unwrap_or_default())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(token_from_row).collect::<Result<_, _>>()?)
    }

    /// Deletes every federated session (docker login) and sign-in page token of
    /// the users named `username` (at one provider, or at all). Returns how many
    /// rows went.
    pub async fn revoke_oidc_username(
        &self,
        provider: Option<&str>,
        username: &str,
    ) -> Result<u64, StoreError> {
        let mut gone = 0;
        for table in ["oidc_sessions", "oidc_tokens"] {
            let res = sqlx::query(&format!(
                "DELETE FROM {table} WHERE ($1 = '' OR provider = $1) AND username = $2"
            ))
            .bind(provider.unwrap_or_default())
            .bind(username)
            .execute(&self.pool)
            .await?;
            gone += res.rows_affected();
        }
        Ok(gone)
    }

    /// Deletes every session and token of a federated user (the provider refused
    /// them). Returns how many rows went.
    pub async fn revoke_oidc_user(&self, provider: &str, subject: &str) -> Result<u64, StoreError> {
        let a = sqlx::query("DELETE FROM oidc_sessions WHERE provider = $1 AND subject = $2")
            .bind(provider)
            .bind(subject)
            .execute(&self.pool)
            .await?;
        let b = sqlx::query("DELETE FROM oidc_tokens WHERE provider = $1 AND subject = $2")
            .bind(provider)
            .bind(subject)
            .execute(&self.pool)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }

    /// Stores a signed-in browser (sealed by the caller).
    pub async fn insert_browser_session(
        &self,
        id_hash: &[u8],
        sealed: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oidc_browser_sessions (id_hash, sealed, created_at, last_used_at)
             VALUES ($1, $2, $3, $3)",
        )
        .bind(id_hash)
        .bind(sealed)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A signed-in browser: sealed state, created, last used.
    pub async fn find_browser_session(
        &self,
        id_hash: &[u8],
    ) -> Result<Option<(Vec<u8>, i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT sealed, created_at, last_used_at FROM oidc_browser_sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get("sealed")?,
                r.try_get("created_at")?,
                r.try_get("last_used_at")?,
            ))
        })
        .transpose()
        .map_err(StoreError::from)
    }

    /// Replaces a signed-in browser's sealed state after a check with the
    /// provider (fresh groups, the provider's next refresh token), as a use.
    pub async fn update_browser_session(
        &self,
        id_hash: &[u8],
        sealed: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE oidc_browser_sessions SET sealed = $1, last_used_at = $2 WHERE id_hash = $3",
        )
        .bind(sealed)
        .bind(now)
        .bind(id_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a use of a signed-in browser.
    pub async fn touch_browser_session(&self, id_hash: &[u8], now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE oidc_browser_sessions SET last_used_at = $1 WHERE id_hash = $2")
            .bind(now)
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Signs a browser out.
    pub async fn delete_browser_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM oidc_browser_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes browser sessions idle for `idle` or older than `max` seconds, and
    /// expired sign-ins in progress that an older berth kept in `oidc_pending`
    /// (berth now keeps them in the browser's cookie and writes none). Returns
    /// how many rows went.
    pub async fn purge_browser_flows(
        &self,
        now: i64,
        idle: i64,
        max: i64,
    ) -> Result<u64, StoreError> {
        let a = sqlx::query("DELETE FROM oidc_pending WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let b = sqlx::query(
            "DELETE FROM oidc_browser_sessions WHERE last_used_at <= $1 OR created_at <= $2",
        )
        .bind(now - idle)
        .bind(now - max)
        .execute(&self.pool)
        .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }
}
