//! Persistent state: local users, refresh tokens, robots, access tokens, the audit
//! log and failed-login counters, in SQLite (embedded) or PostgreSQL (replicas).
//!
//! This module owns SQL and migrations. The same queries serve both databases
//! (`$N` parameters, portable types); each has its own migrations directory. It
//! stores password and token hashes as given; it never sees a secret in clear
//! (hashing is `authn`'s).

mod audit;
mod generation;
mod generation_listen;
mod inline;
pub mod ldap;
mod limits;
pub mod oidc;
mod postgres;
mod refresh;
mod replay;
mod replay_sqlite;
mod robots;
mod tokens;
mod wal_index;

pub use audit::{AuditQuery, AuditRecord, ErasedColumn};
pub use generation::Generation;
pub use limits::Take;
pub use replay::{RecordedIdentity, ReplayRow};
pub use replay_sqlite::{audit_replay_sqlite, ReplayReadError};
pub use robots::RobotRecord;
pub use tokens::AccessTokenRecord;

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

use crate::config::Database;
use crate::types::Username;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable. Callers log this and answer 503/500.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed, or the database is newer than this berth.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The named user does not exist.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// The user exists already.
    #[error("user {0:?} exists already")]
    UserExists(String),
    /// The database directory could not be created.
    #[error("cannot create database directory: {0}")]
    Io(#[from] std::io::Error),
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A named object exists already.
    #[error("{0}")]
    Exists(String),
    /// A database failure met by a read that served several requests at once.
    #[error("database error: {0}")]
    Shared(String),
    /// PostgreSQL could not be reached or refused the login: where, and why.
    #[error("{0}")]
    Unreachable(String),
}

impl StoreError {
    /// Whether the database itself failed (unreachable, I/O), as opposed to a
    /// missing or duplicate record.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Db(_)
                | StoreError::Migrate(_)
                | StoreError::Io(_)
                | StoreError::Shared(_)
                | StoreError::Unreachable(_)
        )
    }
}

/// A local user as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Row id.
    pub id: i64,
    /// Account name.
    pub username: String,
    /// PHC (argon2id) or bcrypt hash.
    pub password_hash: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Disabled accounts cannot sign in.
    pub disabled: bool,
    /// Changes with every password, group or status change.
    pub epoch: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for UserRecord {
    // The hash is left out so it can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("groups", &self.groups)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A refresh token row joined with its user.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    /// Service the token is bound to.
    pub service: String,
    /// Unix seconds of the last use.
    pub last_used_at: i64,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
    /// The user.
    pub user: UserRecord,
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Refresh tokens (docker logins) one user may hold; a new one revokes the oldest.
pub const MAX_REFRESH_PER_USER: i64 = 100;

/// Handle to the database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the authentication generation read on the caller's thread.
    inline: Option<std::sync::Arc<inline::InlineReader>>,
    /// PostgreSQL only: where the authentication-generation listener connects.
    listen: Option<generation_listen::ListenTarget>,
    /// PostgreSQL only: the generation as the listener vouches for it.
    heard: std::sync::Arc<generation_listen::Heard>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const USER_COLUMNS: &str =
    "u.id, u.username, u.password_hash, u.groups, u.disabled, u.epoch, u.created_at, u.updated_at";

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    let groups: String = row.try_get("groups")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        groups: serde_json::from_str(&groups).unwrap_or_default(),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        epoch: row.try_get("epoch")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn groups_json(groups: &[String]) -> String {
    serde_json::to_string(groups).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Connects without migrating: for `berth db migrate` and version checks.
    pub async fn connect(db: &Database) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let mut listen = None;
        let (url, backend, max) = match db {
            Database::Sqlite(path) => {
                if let Some(parent) = path.parent() {
                    if !parent.as_os_str().is_empty() && !parent.exists() {
                        crate::custody::private_dir(parent)?;
                    }
                }
                // 0600 from the start; SQLite's -wal and -shm files follow it.
                crate::custody::private_file(path)?;
                let url = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .to_url_lossy();
                (url.to_string(), Backend::Sqlite, 4)
            }
            Database::Postgres(url) => {
                // One direct attempt first: the pool would only say it timed out.
                postgres::diagnose(url).await?;
                listen = postgres::listen_target(url);
                (url.clone(), Backend::Postgres, 8)
            }
        };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(2))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; NORMAL sync is
                        // durable across process crashes in WAL mode.
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store {
            pool,
            backend,
            inline: None,
            listen,
            heard: std::sync::Arc::default(),
        })
    }

    /// Connects and applies migrations. Refuses a database that holds migrations
    /// this berth does not know (a newer berth migrated it).
    pub async fn open(db: &Database) -> Result<Self, StoreError> {
        let mut store = Self::connect(db).await?;
        store.migrate().await?;
        if let Database::Sqlite(path) = db {
            match inline::InlineReader::open(path) {
                Ok(reader) => store.inline = Some(std::sync::Arc::new(reader)),
                // The pool still answers; only slower.
                Err(e) => tracing::warn!(error = %e, "SQLite inline reader unavailable"),
            }
        }
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Number of users.
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Creates a user.
    pub async fn create_user(
        &self,
        name: &Username,
        password_hash: &str,
        groups: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO users (username, password_hash, groups, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT(username) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(password_hash)
        .bind(groups_json(groups))
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::UserExists(name.to_string()));
        }
        Ok(())
    }

    /// Finds a user by name.
    pub async fn find_user(&self, name: &Username) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1");
        let row = sqlx::query(&sql)
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The current `(epoch, disabled)` of a user, or `None` if deleted.
    pub async fn user_state(&self, id: i64) -> Result<Option<(i64, bool)>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT epoch, disabled FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(e, d)| (e, d != 0)))
    }

    /// After a write that changed `rows` rows of a table whose changes move
    /// the authentication generation (the triggers of migration 0101): this
    /// process stops answering from the listener's value until it has read
    /// the new one (see `generation_listen`).
    fn moved_generation(&self, rows: u64) {
        if rows > 0 {
            self.heard.changed_here();
        }
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.username");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    async fn update_user(
        &self,
        name: &Username,
        set: &str,
        bind: Option<String>,
        now: i64,
    ) -> Result<(), StoreError> {
        // `set` uses $1 when it binds a value; the rest follow it.
        let first = if bind.is_some() { 2 } else { 1 };
        let sql = format!(
            "UPDATE users SET {set}, epoch = epoch + 1, updated_at = ${first} WHERE username = ${}",
            first + 1
        );
        let mut q = sqlx::query(&sql);
        if let Some(b) = bind {
            q = q.bind(b);
        }
        let res = q.bind(now).bind(name.as_str()).execute(&self.pool).await?;
        self.moved_generation(res.rows_affected());
        if res.rows_affected() == 0 {
            return Err(StoreError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// Sets a new password hash and revokes the user's refresh tokens.
    pub async fn set_password(
        &self,
        name: &Username,
        hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.update_user(name, "password_hash = $1", Some(hash.to_owned()), now)
            .await?;
        self.revoke_sessions(name).await?;
        Ok(())
    }

    /// Replaces a hash after a successful login (bcrypt → argon2id), unless the
    /// password changed meanwhile. Does not change the epoch: same password.
    pub async fn upgrade_hash(&self, id: i64, old: &str, new: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new)
            .bind(id)
            .bind(old)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Disables or enables a user; disabling revokes their refresh tokens.
    pub async fn set_disabled(
        &self,
        name: &Username,
        disabled: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let set = if disabled {
            "disabled = 1"
        } else {
            "disabled = 0"
        };
        self.update_user(name, set, None, now).await?;
        if disabled {
            self.revoke_sessions(name).await?;
        }
        Ok(())
    }

    /// Replaces a user's groups.
    pub async fn set_groups(
        &self,
        name: &Username,
        groups: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        self.update_user(name, "groups = $1", Some(groups_json(groups)), now)
            .await
    }

    /// Deletes a user (and, by cascade, their refresh tokens).
    pub async fn delete_user(&self, name: &Username) -> Result<(), StoreError> {
        let res = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(name.as_str())
            .execute(&self.pool)
            .await?;
        self.moved_generation(res.rows_affected());
        if res.rows_affected() == 0 {
            return Err(StoreError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// Deletes every refresh token of a user; returns how many.
    pub async fn revoke_sessions(&self, name: &Username) -> Result<u64, StoreError> {
        let res = sqlx::query(
            "DELETE FROM refresh_tokens WHERE user_id = (SELECT id FROM users WHERE username = $1)",
        )
        .bind(name.as_str())
        .execute(&self.pool)
        .await?;
        self.moved_generation(res.rows_affected());
        Ok(res.rows_affected())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
