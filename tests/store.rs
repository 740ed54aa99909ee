//! The store's test suite, run against both databases berth supports: an SQLite
//! file and a real PostgreSQL (Debian's, started by `scripts/start-postgres.sh`;
//! its admin URL comes in `BERTH_TEST_POSTGRES_URL`). Every area is its own
//! test on each database, on a database of its own (`tests/common/db.rs`), so
//! one failure never hides another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

#[path = "store/accounts.rs"]
mod accounts;
#[path = "store/audit.rs"]
mod audit;
#[path = "store/erase.rs"]
mod erase;
#[path = "store/federated.rs"]
mod federated;
#[path = "store/generation.rs"]
mod generation;
#[path = "store/open.rs"]
mod open;
#[path = "store/replay.rs"]
mod replay;

pub use berth::authn::Username;
pub use berth::config::Database;
pub use berth::store::{AuditQuery, AuditRecord, Store, StoreError};
pub use common::db::TestDb;
pub use sqlx::Connection;

pub fn user(s: &str) -> Username {
    s.parse().unwrap()
}

/// A fresh, migrated store on `t`; opening it a second time must be a no-op.
pub async fn open_store(t: &TestDb) -> Store {
    let store = Store::open(&t.database()).await.unwrap();
    store.ping().await.unwrap();
    Store::open(&t.database()).await.unwrap().close().await;
    store
}

/// A plain connection to the same database, to tamper with it.
pub async fn store_pool(db: &Database) -> Box<sqlx::AnyConnection> {
    sqlx::any::install_default_drivers();
    let url = match db {
        Database::Sqlite(p) => format!("sqlite://{}", p.display()),
        Database::Postgres(u) => u.clone(),
    };
    Box::new(sqlx::AnyConnection::connect(&url).await.unwrap())
}

/// One test per area and database: `AREA::sqlite` and `AREA::postgres`, each
/// on a fresh database, running `|store, db| body` (a future).
macro_rules! on_both_databases {
    ($($area:ident: |$store:ident, $db:ident| $body:expr;)*) => {$(
        mod $area {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                run(TestDb::sqlite_at("nested/dir/berth.db")).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(t) = TestDb::postgres(concat!("store ", stringify!($area))) {
                    run(t).await;
                }
            }

            async fn run(t: TestDb) {
                let store = open_store(&t).await;
                {
                    let $store = &store;
                    let $db = &t.database();
                    $body.await;
                }
                store.close().await;
            }
        }
    )*};
}

on_both_databases! {
    users_and_refresh_tokens: |store, _db| accounts::users_and_refresh_tokens(store);
    robots: |store, _db| accounts::robots(store);
    access_tokens: |store, _db| accounts::access_tokens(store);
    refresh_cap: |store, _db| accounts::refresh_cap(store);
    audit_log: |store, _db| audit::audit(store);
    login_failures: |store, _db| audit::login_failures(store);
    federated_sessions: |store, _db| federated::federated(store);
    auth_generation: |store, db| generation::generation(store, db);
    refuses_a_newer_database: |store, db| open::newer_database_is_refused(store, db);
    audit_replay: |store, db| replay::replay(store, db);
}
