//! Configuration: a TOML file (optional) plus `BERTH_*` environment overrides,
//! turned into a validated [`Config`].
//!
//! This module owns defaults and validation. It does not open files other than the
//! config itself; keys, policies and the database are loaded by their own modules.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Shortest token lifetime allowed: clients treat a missing `expires_in` as 60 s.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);

/// A configuration problem, naming the setting and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{path}: {message}")]
    Parse {
        /// File that failed.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// A setting has an invalid value.
    #[error("invalid setting `{key}`: {problem}")]
    Invalid {
        /// Name of the setting (TOML key or environment variable).
        key: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

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

/// How the signing key is named in the JWT header for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyIdMode {
    /// `kid` is the libtrust key ID (distribution 2.x).
    #[default]
    Libtrust,
    /// `kid` is the RFC 7638 JWK thumbprint (distribution 3.x with a JWKS file).
    Thumbprint,
    /// The header carries the certificate chain in `x5c`.
    X5c,
}

impl std::str::FromStr for KeyIdMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "libtrust" => Ok(Self::Libtrust),
            "thumbprint" => Ok(Self::Thumbprint),
            "x5c" => Ok(Self::X5c),
            other => Err(format!(
                "unknown key id mode {other:?} (expected libtrust, thumbprint or x5c)"
            )),
        }
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
}

impl ServiceConfig {
    /// A service with the default settings.
    pub fn new(name: impl Into<String>, key_id: KeyIdMode) -> Self {
        ServiceConfig {
            name: name.into(),
            key_id,
            expand_wildcard: false,
            audience_list: false,
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Base URL under which clients reach berth (realm = this + `/token`).
    pub public_url: String,
    /// Where state lives: an SQLite file or a PostgreSQL URL.
    pub database: Database,
    /// Directory with signing keys and certificates.
    pub keys_dir: PathBuf,
    /// Directory with policy files.
    pub policies_dir: PathBuf,
    /// Token issuer (`iss`).
    pub issuer: String,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// How long a signed token may be handed again to the same identity asking
    /// the same service for the same access; zero turns reuse off.
    pub token_reuse: Duration,
    /// Services (audiences); never empty.
    pub services: Vec<ServiceConfig>,
    /// Refresh tokens expire when unused for this long.
    pub refresh_idle: Duration,
    /// Refresh tokens expire this long after issue, used or not.
    pub refresh_absolute: Duration,
    /// How long a successful password check is remembered; zero disables the cache.
    pub credential_cache_ttl: Duration,
    /// Most entries in the credential cache.
    pub credential_cache_size: u64,
    /// Most scopes accepted in one token request.
    pub max_scopes: usize,
    /// Most password hashes computed at once.
    pub hash_concurrency: usize,
    /// Login-name prefix of robot accounts.
    pub robot_prefix: String,
    /// Failed sign-ins per account or per client address before 429.
    pub login_failure_limit: i64,
    /// Window in which failed sign-ins are counted.
    pub login_failure_window: Duration,
    /// Password checks per account from all addresses per window.
    pub login_failure_account_limit: i64,
    /// Password checks per client address for all accounts per window.
    pub login_failure_address_limit: i64,
    /// How long a password check waits for a hashing slot before a 503.
    pub hash_queue_timeout: Duration,
    /// Least time a refused sign-in takes, whatever the name.
    pub refusal_floor: Duration,
    /// How long audit records are kept.
    pub audit_retention: Duration,
    /// Audit rows that may wait for the database writer.
    pub audit_queue: usize,
    /// A request whose audit row cannot be queued fails with 503 (otherwise the
    /// row is dropped, counted and logged, and the request served).
    pub audit_required: bool,
    /// OIDC providers (`[[oidc]]`) and their place in the authentication chain.
    pub oidc: crate::authn::oidc::OidcSettings,
    /// LDAP/Active Directory directories (`[[ldap]]`), tried in order; their
    /// place in the chain is `oidc.order`.
    pub ldap: Vec<crate::authn::ldap::DirectoryConfig>,
    /// How long `berth key rotate` publishes a new key before it signs, so
    /// registries that read the bundle or JWKS file at start can be restarted.
    pub key_publish_delay: Duration,
    /// Where `/metrics` is served on its own; `None` serves it on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Proxies whose `X-Forwarded-For` is believed (see `net::proxy`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS certificate and key; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// How long SIGTERM waits for requests in flight before exiting.
    pub shutdown_timeout: Duration,
    /// Timeouts and connection caps at the listeners (see `net::limits`).
    pub edge: crate::net::limits::EdgeLimits,
}

/// PEM files for TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, RSA or EC).
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    public_url: Option<String>,
    database: Option<String>,
    keys_dir: Option<PathBuf>,
    policies_dir: Option<PathBuf>,
    issuer: Option<String>,
    token_ttl: Option<String>,
    token_reuse: Option<String>,
    refresh_idle: Option<String>,
    refresh_absolute: Option<String>,
    credential_cache_ttl: Option<String>,
    credential_cache_size: Option<u64>,
    max_scopes: Option<usize>,
    hash_concurrency: Option<usize>,
    robot_prefix: Option<String>,
    login_failure_limit: Option<i64>,
    login_failure_window: Option<String>,
    login_failure_account_limit: Option<i64>,
    login_failure_address_limit: Option<i64>,
    hash_queue_timeout: Option<String>,
    refusal_floor: Option<String>,
    audit_retention: Option<String>,
    audit_queue: Option<usize>,
    audit_required: Option<bool>,
    key_publish_delay: Option<String>,
    metrics_listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    shutdown_timeout: Option<String>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    #[serde(default)]
    oidc: Vec<crate::authn::oidc::config::RawProvider>,
    #[serde(default)]
    ldap: Vec<crate::authn::ldap::config::RawDirectory>,
    auth_order: Option<Vec<String>>,
    name_conflict: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    key_id: KeyIdMode,
    #[serde(default)]
    expand_wildcard: bool,
    #[serde(default)]
    audience_list: bool,
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

fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (Some(_), None) => Err(invalid(
            "tls_key",
            "tls_cert is set, so tls_key is needed too",
        )),
        (None, Some(_)) => Err(invalid(
            "tls_cert",
            "tls_key is set, so tls_cert is needed too",
        )),
    }
}

/// Where settings come from besides the file: normally the process environment.
pub trait Env {
    /// The value of a variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// Loads the file (if given) and applies environment overrides from the process.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, &ProcessEnv)
    }

    /// Loads the file (if given) and applies overrides from `env`.
    pub fn load_with(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse_raw(path, &text)?
            }
            None => RawConfig::default(),
        };
        Self::validate(raw, env)
    }

    /// Parses TOML text as if read from `path`.
    pub fn from_toml(path: &Path, text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        Self::validate(Self::parse_raw(path, text)?, env)
    }

    fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    fn validate(raw: RawConfig, env: &dyn Env) -> Result<Self, ConfigError> {
        let pick = |var: &str, file: Option<String>| env.var(var).or(file);
        let duration =
            |key: &str, var: &str, file: Option<String>, default: Duration| match pick(var, file) {
                Some(v) => parse_duration(&v).map_err(|p| invalid(key, p)),
                None => Ok(default),
            };
        // Short waits may also be given in milliseconds (`250ms`).
        let short_duration =
            |key: &str, var: &str, file: Option<String>, default: Duration| match pick(var, file) {
                Some(v) => match v.trim().strip_suffix("ms") {
                    Some(ms) => ms.parse().map(Duration::from_millis).map_err(|_| {
                        invalid(key, format!("{v:?} is not a duration like 250ms or 2s"))
                    }),
                    None => parse_duration(&v).map_err(|p| invalid(key, p)),
                },
                None => Ok(default),
            };

        let listen_s = pick("BERTH_LISTEN", raw.listen).unwrap_or_else(|| "127.0.0.1:5001".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_s:?} is not an address like 127.0.0.1:5001"),
            )
        })?;

        let tls = tls_files(
            env.var("BERTH_TLS_CERT")
                .map(PathBuf::from)
                .or(raw.tls_cert),
            env.var("BERTH_TLS_KEY").map(PathBuf::from).or(raw.tls_key),
        )?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = pick("BERTH_PUBLIC_URL", raw.public_url)
            .unwrap_or_else(|| format!("{scheme}://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("public_url", "must start with http:// or https://"));
        }

        let database =
            pick("BERTH_DATABASE", raw.database).unwrap_or_else(|| "data/berth.db".into());
        let database = Database::parse(&database).map_err(|p| invalid("database", p))?;

        let keys_dir = env
            .var("BERTH_KEYS_DIR")
            .map(PathBuf::from)
            .or(raw.keys_dir)
            .unwrap_or_else(|| "keys".into());
        let policies_dir = env
            .var("BERTH_POLICIES_DIR")
            .map(PathBuf::from)
            .or(raw.policies_dir)
            .unwrap_or_else(|| "policies".into());

        let issuer = pick("BERTH_ISSUER", raw.issuer).unwrap_or_else(|| "berth".into());
        if issuer.trim().is_empty() {
            return Err(invalid("issuer", "must not be empty"));
        }

        let token_ttl = duration(
            "token_ttl",
            "BERTH_TOKEN_TTL",
            raw.token_ttl,
            Duration::from_secs(300),
        )?;
        if token_ttl < MIN_TOKEN_TTL {
            return Err(invalid(
                "token_ttl",
                "must be at least 60s (clients assume 60s)",
            ));
        }
        if token_ttl > Duration::from_secs(86_400) {
            return Err(invalid(
                "token_ttl",
                "must be at most 1d; use refresh tokens for long sessions",
            ));
        }
        // A reused token must still live at least MIN_TOKEN_TTL when handed out.
        let reuse_room = token_ttl.saturating_sub(MIN_TOKEN_TTL);
        let token_reuse = match pick("BERTH_TOKEN_REUSE", raw.token_reuse) {
            Some(text) => parse_duration(&text).map_err(|e| invalid("token_reuse", e))?,
            None => (token_ttl / 10)
                .min(Duration::from_secs(30))
                .min(reuse_room),
        };
        if token_reuse > reuse_room {
            return Err(invalid(
                "token_reuse",
                "must leave a reused token at least 60s to live (at most token_ttl - 60s)",
            ));
        }
        let refresh_idle = duration(
            "refresh_idle",
            "BERTH_REFRESH_IDLE",
            raw.refresh_idle,
            Duration::from_secs(7 * 86_400),
        )?;
        let refresh_absolute = duration(
            "refresh_absolute",
            "BERTH_REFRESH_ABSOLUTE",
            raw.refresh_absolute,
            Duration::from_secs(30 * 86_400),
        )?;
        if refresh_idle.is_zero() || refresh_absolute < refresh_idle {
            return Err(invalid(
                "refresh_absolute",
                "must be at least refresh_idle, and refresh_idle must not be zero",
            ));
        }
        let credential_cache_ttl = duration(
            "credential_cache_ttl",
            "BERTH_CREDENTIAL_CACHE_TTL",
            raw.credential_cache_ttl,
            Duration::from_secs(300),
        )?;
        if credential_cache_ttl > Duration::from_secs(3600) {
            return Err(invalid("credential_cache_ttl", "must be at most 1h"));
        }
        let credential_cache_size = raw.credential_cache_size.unwrap_or(10_000);
        let max_scopes = raw.max_scopes.unwrap_or(32);
        if !(1..=256).contains(&max_scopes) {
            return Err(invalid("max_scopes", "must be between 1 and 256"));
        }
        let hash_concurrency = raw.hash_concurrency.unwrap_or(2);
        if !(1..=64).contains(&hash_concurrency) {
            return Err(invalid("hash_concurrency", "must be between 1 and 64"));
        }

        let key_publish_delay = duration(
            "key_publish_delay",
            "BERTH_KEY_PUBLISH_DELAY",
            raw.key_publish_delay,
            Duration::from_secs(3600),
        )?;

        let oidc =
            crate::authn::oidc::config::validate(raw.oidc, raw.auth_order, raw.name_conflict)?;
        let ldap = crate::authn::ldap::config::validate(raw.ldap, &oidc.order)?;
        let robot_prefix = raw.robot_prefix.unwrap_or_else(|| "robot$".into());
        let prefix_ok = !robot_prefix.is_empty()
            && robot_prefix.len() <= 32
            && !robot_prefix.contains(':')
            && !robot_prefix.chars().any(|c| c.is_control() || c.is_whitespace())
            // A prefix a local username could start with would let a user pose as a robot.
            && robot_prefix.parse::<crate::authn::Username>().is_err()
            && robot_prefix.chars().any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c)));
        if !prefix_ok {
            return Err(invalid(
                "robot_prefix",
                "must be 1-32 printable characters including one that local usernames cannot hold (e.g. `$`)",
            ));
        }
        let login_failure_limit = raw.login_failure_limit.unwrap_or(10);
        if !(1..=1_000_000).contains(&login_failure_limit) {
            return Err(invalid(
                "login_failure_limit",
                "must be between 1 and 1000000",
            ));
        }
        let login_failure_window = duration(
            "login_failure_window",
            "BERTH_LOGIN_FAILURE_WINDOW",
            raw.login_failure_window,
            Duration::from_secs(300),
        )?;
        if login_failure_window.is_zero() {
            return Err(invalid("login_failure_window", "must not be zero"));
        }
        // Wider scopes get a wider default: ten times the per-address limit.
        let wide_limit = |key: &'static str, value: Option<i64>| {
            let limit = value.unwrap_or(login_failure_limit.saturating_mul(10));
            if limit < login_failure_limit || limit > 10_000_000 {
                return Err(invalid(
                    key,
                    "must be at least login_failure_limit and at most 10000000",
                ));
            }
            Ok(limit)
        };
        let login_failure_account_limit = wide_limit(
            "login_failure_account_limit",
            raw.login_failure_account_limit,
        )?;
        let login_failure_address_limit = wide_limit(
            "login_failure_address_limit",
            raw.login_failure_address_limit,
        )?;
        let hash_queue_timeout = short_duration(
            "hash_queue_timeout",
            "BERTH_HASH_QUEUE_TIMEOUT",
            raw.hash_queue_timeout,
            Duration::from_secs(2),
        )?;
        let refusal_floor = short_duration(
            "refusal_floor",
            "BERTH_REFUSAL_FLOOR",
            raw.refusal_floor,
            Duration::from_millis(250),
        )?;
        if refusal_floor > Duration::from_secs(5) {
            return Err(invalid("refusal_floor", "must be at most 5s"));
        }
        if hash_queue_timeout.is_zero() || hash_queue_timeout > Duration::from_secs(60) {
            return Err(invalid("hash_queue_timeout", "must be between 1ms and 60s"));
        }
        let audit_retention = duration(
            "audit_retention",
            "BERTH_AUDIT_RETENTION",
            raw.audit_retention,
            Duration::from_secs(90 * 86_400),
        )?;
        let audit_queue = raw.audit_queue.unwrap_or(50_000);
        if !(1..=10_000_000).contains(&audit_queue) {
            return Err(invalid("audit_queue", "must be between 1 and 10000000"));
        }
        let audit_required = match env.var("BERTH_AUDIT_REQUIRED") {
            Some(v) => match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(invalid(
                        "audit_required",
                        "BERTH_AUDIT_REQUIRED must be true or false",
                    ))
                }
            },
            None => raw.audit_required.unwrap_or(false),
        };

        let mut services = Vec::new();
        for (i, s) in raw.services.into_iter().enumerate() {
            let key = format!("service[{i}].name");
            if s.name.trim().is_empty()
                || s.name.len() > 255
                || s.name.chars().any(char::is_control)
            {
                return Err(invalid(&key, "must be a non-empty printable name"));
            }
            if services.iter().any(|x: &ServiceConfig| x.name == s.name) {
                return Err(invalid(
                    &key,
                    format!("service {:?} is listed twice", s.name),
                ));
            }
            services.push(ServiceConfig {
                name: s.name,
                key_id: s.key_id,
                expand_wildcard: s.expand_wildcard,
                audience_list: s.audience_list,
            });
        }
        if let Some(name) = env.var("BERTH_SERVICE") {
            let key_id = match env.var("BERTH_SERVICE_KEY_ID") {
                Some(v) => v.parse().map_err(|p| invalid("BERTH_SERVICE_KEY_ID", p))?,
                None => KeyIdMode::default(),
            };
            services.retain(|s| s.name != name);
            services.insert(0, ServiceConfig::new(name, key_id));
        }
        if services.is_empty() {
            services.push(ServiceConfig::new("registry", KeyIdMode::default()));
        }

        let metrics_listen = match pick("BERTH_METRICS_LISTEN", raw.metrics_listen) {
            Some(s) if !s.trim().is_empty() => Some(s.trim().parse().map_err(|_| {
                invalid(
                    "metrics_listen",
                    format!("{s:?} is not an address like 127.0.0.1:9101"),
                )
            })?),
            _ => None,
        };
        if metrics_listen == Some(listen) {
            return Err(invalid("metrics_listen", "must differ from listen"));
        }
        let trusted_proxies = match env.var("BERTH_TRUSTED_PROXIES") {
            Some(list) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(crate::net::proxy::parse_network)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|p| invalid("BERTH_TRUSTED_PROXIES", p))?,
            None => raw
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|s| crate::net::proxy::parse_network(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|p| invalid("trusted_proxies", p))?,
        };
        let shutdown_timeout = duration(
            "shutdown_timeout",
            "BERTH_SHUTDOWN_TIMEOUT",
            raw.shutdown_timeout,
            Duration::from_secs(10),
        )?;
        if shutdown_timeout > Duration::from_secs(3600) {
            return Err(invalid("shutdown_timeout", "must be at most 1h"));
        }
        let edge = {
            use crate::net::limits::EdgeLimits;
            let d = EdgeLimits::default();
            let edge = EdgeLimits {
                header_read_timeout: duration(
                    "header_read_timeout",
                    "BERTH_HEADER_READ_TIMEOUT",
                    raw.header_read_timeout,
                    d.header_read_timeout,
                )?,
                body_read_timeout: duration(
                    "body_read_timeout",
                    "BERTH_BODY_READ_TIMEOUT",
                    raw.body_read_timeout,
                    d.body_read_timeout,
                )?,
                request_timeout: duration(
                    "request_timeout",
                    "BERTH_REQUEST_TIMEOUT",
                    raw.request_timeout,
                    d.request_timeout,
                )?,
                idle_timeout: duration(
                    "idle_timeout",
                    "BERTH_IDLE_TIMEOUT",
                    raw.idle_timeout,
                    d.idle_timeout,
                )?,
                max_connections: raw.max_connections.unwrap_or(d.max_connections),
                max_connections_per_address: raw
                    .max_connections_per_address
                    .unwrap_or(d.max_connections_per_address),
            };
            edge.check()
                .map_err(|(key, problem)| invalid(key, problem))?;
            edge
        };

        Ok(Config {
            listen,
            public_url,
            database,
            keys_dir,
            policies_dir,
            issuer,
            token_ttl,
            token_reuse,
            services,
            refresh_idle,
            refresh_absolute,
            credential_cache_ttl,
            credential_cache_size,
            max_scopes,
            hash_concurrency,
            robot_prefix,
            login_failure_limit,
            login_failure_window,
            login_failure_account_limit,
            login_failure_address_limit,
            hash_queue_timeout,
            refusal_floor,
            audit_retention,
            audit_queue,
            audit_required,
            oidc,
            ldap,
            key_publish_delay,
            metrics_listen,
            trusted_proxies,
            tls,
            shutdown_timeout,
            edge,
        })
    }

    /// The realm URL registries send clients to.
    pub fn realm(&self) -> String {
        format!("{}/token", self.public_url)
    }

    /// Looks up a configured service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }
    fn no_env() -> MapEnv {
        MapEnv(HashMap::new())
    }
    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("berth.toml"), text, &no_env())
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_with(None, &no_env()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5001");
        assert_eq!(c.database, Database::Sqlite(PathBuf::from("data/berth.db")));
        assert_eq!(c.token_ttl, Duration::from_secs(300));
        assert_eq!(c.services[0].name, "registry");
        assert_eq!(c.services[0].key_id, KeyIdMode::Libtrust);
        assert_eq!(c.realm(), "http://127.0.0.1:5001/token");
    }

    #[test]
    fn file_and_env() {
        let env = MapEnv(HashMap::from([("BERTH_ISSUER", "env-issuer")]));
        let c = Config::from_toml(
            Path::new("b.toml"),
            "issuer = 'file'\ntoken_ttl = '10m'\n[[service]]\nname = 'reg'\nkey_id = 'x5c'\n",
            &env,
        )
        .unwrap();
        assert_eq!(c.issuer, "env-issuer");
        assert_eq!(c.token_ttl, Duration::from_secs(600));
        assert_eq!(c.services[0].key_id, KeyIdMode::X5c);
        assert!(!c.services[0].expand_wildcard && !c.services[0].audience_list);
        assert_eq!(c.key_publish_delay, Duration::from_secs(3600));
    }

    #[test]
    fn per_service_settings() {
        let c = parse(
            "key_publish_delay = '5m'\n[[service]]\nname = 'zot'\nkey_id = 'x5c'\n\
             expand_wildcard = true\naudience_list = true\n[[service]]\nname = 'd2'\n",
        )
        .unwrap();
        assert!(c.services[0].expand_wildcard && c.services[0].audience_list);
        assert!(!c.services[1].expand_wildcard && !c.services[1].audience_list);
        assert_eq!(c.key_publish_delay, Duration::from_secs(300));
        assert!(parse("[[service]]\nname='a'\nexpand_wildcard='yes'").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("token_ttl = '30s'").unwrap_err().to_string();
        assert!(e.contains("token_ttl"), "{e}");
        let e = parse("listen = 'nope'").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("line"), "{e}");
        let e = parse("[[service]]\nname='a'\nkey_id='jwk'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("jwk"), "{e}");
        let e = parse("[[service]]\nname='a'\n[[service]]\nname='a'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("service[1]"), "{e}");
        let e = parse("database = 'mysql://x'").unwrap_err().to_string();
        assert!(e.contains("database"), "{e}");
        let c = parse("database = 'postgres://berth:s3cret@db:5432/berth'").unwrap();
        assert!(!format!("{:?} {}", c.database, c.database).contains("s3cret"));
        assert!(c.database.to_string().contains("berth:***@db:5432/berth"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    proptest::proptest! {
        #[test]
        fn config_parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }
    }
}
