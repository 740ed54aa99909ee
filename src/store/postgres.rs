//! Why PostgreSQL cannot be used, said once and the way `psql` says it: which
//! server, which database and user, and the cause (connection refused,
//! authentication failed, database missing, no answer). The pool only reports
//! that it timed out, so one direct connection is tried before it is built.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use super::StoreError;

/// The settings the authentication-generation listener connects with: those
/// of the pool (`diagnose` has already shown that `url` parses).
pub(super) fn listen_target(url: &str) -> Option<super::generation_listen::ListenTarget> {
    PgConnectOptions::from_str(url)
        .ok()
        .map(|o| super::generation_listen::ListenTarget(std::sync::Arc::new(o)))
}

/// How long the first connection may take before berth gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects once to `url` and closes the connection; on failure, an error that
/// names the server and the cause. Never shows the password.
pub(super) async fn diagnose(url: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Unreachable(format!(
            "invalid PostgreSQL URL: {}",
            redact(&e.to_string(), url)
        ))
    })?;
    let target = format!(
        "PostgreSQL at {}:{} (database \"{}\", user \"{}\")",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username()),
        options.get_username(),
    );
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await;
    let cause = match attempt {
        Ok(Ok(conn)) => {
            // Closing politely is best effort; the pool opens its own.
            let _ = conn.close().await;
            return Ok(());
        }
        Ok(Err(e)) => cause(&e, &options),
        Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
    };
    Err(StoreError::Unreachable(format!(
        "cannot connect to {target}: {}",
        redact(&cause, url)
    )))
}

/// The cause of a failed connection in a few words.
fn cause(e: &sqlx::Error, options: &PgConnectOptions) -> String {
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (is the server running and accepting TCP connections on that port?)".into()
            }
            _ => io.to_string(),
        },
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_password
            Some("28P01") => format!(
                "password authentication failed for user \"{}\"",
                options.get_username()
            ),
            // invalid_catalog_name
            Some("3D000") => format!(
                "database \"{}\" does not exist",
                options.get_database().unwrap_or(options.get_username())
            ),
            _ => db.message().to_owned(),
        },
        sqlx::Error::Tls(t) => format!("TLS failed: {t}"),
        other => other.to_string(),
    }
}

/// `text` with the URL's password, if any, replaced.
fn redact(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, pw)| pw)
        .filter(|pw| !pw.is_empty());
    match password {
        Some(pw) => text.replace(pw, "***"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_named_with_its_cause() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://berth:s3cret-pw@127.0.0.1:{port}/berth");
        let e = diagnose(&url).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}")) && e.contains("connection refused"),
            "{e}"
        );
        assert!(
            e.contains("database \"berth\"") && !e.contains("s3cret-pw"),
            "{e}"
        );
        assert_eq!(e.matches("connection refused").count(), 1, "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("x hunter2 y", "postgres://u:hunter2@h/db"),
            "x *** y"
        );
        assert_eq!(redact("x", "postgres://u@h/db"), "x");
    }
}
