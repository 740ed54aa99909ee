//! Opening a database: a newer schema is refused, and an unusable
//! PostgreSQL is named once with its cause.

use super::*;

pub async fn newer_database_is_refused(_store: &Store, db: &Database) {
    let insert =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                  VALUES (99999, 'from a newer berth', TRUE, $1, 0)";
    sqlx::query(insert)
        .bind(vec![0u8; 48])
        .execute(store_pool(db).await.as_mut())
        .await
        .unwrap();
    let err = Store::open(db).await.unwrap_err();
    assert!(matches!(err, StoreError::Migrate(_)), "{err}");
    assert!(err.to_string().contains("99999"), "{err}");
}

#[tokio::test]
async fn wrong_database_url_is_a_clear_error() {
    let db = Database::Postgres("postgres://nobody:wrong@127.0.0.1:1/none".into());
    let err = Store::open(&db).await.unwrap_err();
    assert!(err.is_unavailable());
    assert!(
        !err.to_string().contains("wrong"),
        "no password in errors: {err}"
    );
}

/// An unusable PostgreSQL is named once, with its cause, the way `psql` says
/// it: a port nothing listens on, a wrong password, a missing database.
#[tokio::test]
async fn unreachable_postgres_says_where_and_why() {
    let Some(t) = TestDb::postgres("unreachable_postgres_says_where_and_why") else {
        return;
    };
    let good = t.url.clone();
    let (_, after_scheme) = good.split_once("://").unwrap();
    let (userinfo, host_db) = after_scheme.rsplit_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let (hostport, _db) = host_db.split_once('/').unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases = [
        (
            format!("postgres://{user}:{password}@127.0.0.1:{closed_port}/berth"),
            format!("127.0.0.1:{closed_port}"),
            "connection refused",
        ),
        (
            format!("postgres://{user}:wrong-pw-x@{hostport}/postgres"),
            hostport.to_owned(),
            "password authentication failed",
        ),
        (
            format!("postgres://{user}:{password}@{hostport}/berth_no_such_db"),
            hostport.to_owned(),
            "database \"berth_no_such_db\" does not exist",
        ),
    ];
    for (url, at, cause) in cases {
        let started = std::time::Instant::now();
        let err = Store::open(&Database::Postgres(url)).await.unwrap_err();
        let e = err.to_string();
        assert!(err.is_unavailable(), "{e}");
        assert!(e.contains(&at) && e.contains(cause), "{cause}: {e}");
        assert_eq!(e.matches(cause).count(), 1, "said once: {e}");
        assert!(!e.contains("pool timed out"), "{e}");
        // (The test role's password equals its name, which the message names.)
        assert!(!e.contains("wrong-pw-x"), "no password: {e}");
        // Said at once, not after the pool's timeout.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{e}");
    }
    // The good URL still works.
    Store::open(&t.database()).await.unwrap().close().await;
}
