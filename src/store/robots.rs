//! Robot accounts: machine credentials for CI, with optional expiry.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{groups_json, Store, StoreError};

/// A robot as stored (the secret only as its SHA-256).
#[derive(Clone, PartialEq, Eq)]
pub struct RobotRecord {
    /// Row id.
    pub id: i64,
    /// Robot name (without the login prefix).
    pub name: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// Groups.
    pub groups: Vec<String>,
    /// Free text.
    pub description: String,
    /// Disabled robots cannot sign in.
    pub disabled: bool,
    /// Changes with every secret, group or status change.
    pub epoch: i64,
    /// Unix seconds after which the robot is refused.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last successful sign-in, if any.
    pub last_used_at: Option<i64>,
}

impl std::fmt::Debug for RobotRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotRecord")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, name, secret_hash, groups, description, disabled, epoch, expires_at, created_at, last_used_at";

fn from_row(row: &AnyRow) -> Result<RobotRecord, sqlx::Error> {
    let groups: String = row.try_get("groups")?;
    Ok(RobotRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        description: row.try_get("description")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        epoch: row.try_get("epoch")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn missing(name: &str) -> StoreError {
    StoreError::NotFound(format!("no robot named {name:?}"))
}

impl Store {
    /// Creates a robot.
    pub async fn create_robot(
        &self,
        name: &str,
        secret_hash: &[u8],
        groups: &[String],
        description: &str,
        expires_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO robots (name, secret_hash, groups, description, expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(secret_hash)
        .bind(groups_json(groups))
        .bind(description)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Exists(format!("robot {name:?} exists already")));
        }
        Ok(())
    }

    /// Finds a robot by name.
    pub async fn find_robot(&self, name: &str) -> Result<Option<RobotRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM robots WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// The current `(epoch, disabled, expires_at)` of a robot, or `None` if deleted.
    pub async fn robot_state(
        &self,
        id: i64,
    ) -> Result<Option<(i64, bool, Option<i64>)>, StoreError> {
        let row = sqlx::query("SELECT epoch, disabled, expires_at FROM robots WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get("epoch")?,
                r.try_get::<i64, _>("disabled")? != 0,
                r.try_get("expires_at")?,
            ))
        })
        .transpose()
        .map_err(Into::into)
    }

    /// All robots, by name.
    pub async fn list_robots(&self) -> Result<Vec<RobotRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM robots ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Replaces a robot's secret.
    pub async fn set_robot_secret(
        &self,
        name: &str,
        secret_hash: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE robots SET secret_hash = $1, epoch = epoch + 1, updated_at = $2 WHERE name = $3",
        )
        .bind(secret_hash)
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(missing(name));
        }
        Ok(())
    }

    /// Disables or enables a robot.
    pub async fn set_robot_disabled(
        &self,
        name: &str,
        disabled: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE robots SET disabled = $1, epoch = epoch + 1, updated_at = $2 WHERE name = $3",
        )
        .bind(i64::from(disabled))
        .bind(now)
        .bind(name)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(missing(name));
        }
        Ok(())
    }

    /// Deletes a robot.
    pub async fn delete_robot(&self, name: &str) -> Result<(), StoreError> {
        let res = sqlx::query("DELETE FROM robots WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(missing(name));
        }
        Ok(())
    }

    /// Records a successful sign-in (at most once a minute per robot).
    pub async fn touch_robot(&self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE robots SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
