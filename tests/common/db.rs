//! A fresh database per test: an SQLite file in a temp directory, or a
//! PostgreSQL database made on the server that `BERTH_TEST_POSTGRES_URL` names
//! (`scripts/start-postgres.sh` prints it) and dropped, with its connections,
//! when the fixture is dropped. Without that variable a PostgreSQL test is
//! skipped with the reason printed; under `BERTH_E2E=require` it fails.
//!
//! The admin statements run on a thread of their own with its own runtime, so
//! the fixture works the same from synchronous and asynchronous tests, and
//! while it is dropped at the end of either.

use std::path::{Path, PathBuf};

use berth::config::Database;
use sqlx::Connection;

/// A database for one test.
pub struct TestDb {
    /// What `database` / `BERTH_DATABASE` is set to.
    pub url: String,
    /// `(admin URL, database name)` of a PostgreSQL database to drop.
    pg: Option<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// An SQLite file, `berth.db` in a fresh temp directory.
    pub fn sqlite() -> TestDb {
        TestDb::sqlite_at("berth.db")
    }

    /// An SQLite file at `relative` inside a fresh temp directory (its parent
    /// directories are left for berth to make).
    pub fn sqlite_at(relative: &str) -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("berth-db.")
            .tempdir()
            .expect("tempdir");
        TestDb {
            url: dir.path().join(relative).display().to_string(),
            pg: None,
            dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database; `None` (with the reason printed)
    /// without `BERTH_TEST_POSTGRES_URL`, a failure instead under
    /// `BERTH_E2E=require`.
    pub fn postgres(test: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("BERTH_TEST_POSTGRES_URL") else {
            let why = "BERTH_TEST_POSTGRES_URL is not set (scripts/start-postgres.sh prints it)";
            if std::env::var("BERTH_E2E").as_deref() == Ok("require") {
                panic!("{test}: {why}");
            }
            eprintln!("SKIPPED {test} on PostgreSQL: {why}");
            return None;
        };
        let mut raw = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .expect("random name");
        let name = format!("berth_t_{}", data_encoding::HEXLOWER.encode(&raw));
        admin_sql(&admin, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{test}: cannot create a database on {admin}: {e}"));
        let (base, _) = admin
            .rsplit_once('/')
            .expect("BERTH_TEST_POSTGRES_URL ends in /DATABASE");
        Some(TestDb {
            url: format!("{base}/{name}"),
            pg: Some((admin, name)),
            dir: None,
        })
    }

    /// SQLite, then PostgreSQL when one is configured: the databases a test
    /// that must hold on both runs against.
    pub fn both(test: &str) -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite()];
        dbs.extend(TestDb::postgres(test));
        dbs
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// `sqlite` or `postgres`, for messages.
    pub fn kind(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// The database as berth's configuration holds it.
    pub fn database(&self) -> Database {
        if self.is_postgres() {
            Database::Postgres(self.url.clone())
        } else {
            Database::Sqlite(PathBuf::from(&self.url))
        }
    }

    /// The temp directory holding an SQLite database.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            let _ = admin_sql(
                &admin,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Runs one statement on the admin connection, on its own thread and runtime.
fn admin_sql(admin: &str, sql: String) -> Result<(), String> {
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conn.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the admin thread panicked".into()))
}
