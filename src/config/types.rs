//! The value types of berth's settings and their parsers: the database
//! location, services (token audiences), TLS files and durations.
//!
//! Each type here parses one value; rules that tie several settings together
//! are in `validate`.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::types::KeyIdMode;

/// Where berth keeps its state.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (embedded; one process).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (several replicas may share it). Kept private because the
    /// URL may hold a password.
    Postgres(String),
}

impl Database {
    /// Parses `postgres://…`, `sqlite://PATH` or a plain file path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Database::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("sqlite://").unwrap_or(s);
        if path.is_empty() {
            return Err("must not be empty".into());
        }
        if path.contains("://") {
            return Err(
                "use a SQLite file path, sqlite://PATH, or postgres://USER:PASSWORD@HOST/DB".into(),
            );
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    }
}

impl std::fmt::Display for Database {
    // Never shows a password: `postgres://user:***@host/db`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            Database::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                match rest.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let user = userinfo.split(':').next().unwrap_or("");
                        write!(f, "{scheme}://{user}:***@{host}")
                    }
                    None => write!(f, "{scheme}://{rest}"),
                }
            }
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// One registry (token audience) that berth issues tokens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The registry's `service` value; becomes the token's `aud`.
    pub name: String,
    /// How the key is named in the JWT header.
    pub key_id: KeyIdMode,
    /// Grant `*` on a repository as the literal actions too (`*`, `delete`, `pull`,
    /// `push`), for registries that do not read `*` as every action (zot).
    pub expand_wildcard: bool,
    /// Send `aud` as a one-element JSON list instead of a string (distribution 2.x
    /// accepts only a string).
    pub audience_list: bool,
    /// The address `docker login` uses for this registry (`host[:port]`, or an
    /// `https://`/`http://` URL), shown on the sign-in page; `None`: the name.
    pub registry_url: Option<String>,
}

impl ServiceConfig {
    /// A service with the default settings.
    pub fn new(name: impl Into<String>, key_id: KeyIdMode) -> Self {
        ServiceConfig {
            name: name.into(),
            key_id,
            expand_wildcard: false,
            audience_list: false,
            registry_url: None,
        }
    }
}

/// PEM files for TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

/// Parses a duration such as `90s`, `5m`, `12h`, `30d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 5m, 12h or 30d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown duration unit {unit:?} (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .filter(|secs| *secs <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Writes a duration the way the configuration accepts it (`250ms`, `90s`, `5m`,
/// `12h`, `30d`), in the largest unit that divides it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
