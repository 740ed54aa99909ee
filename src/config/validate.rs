//! Checks and defaults: turns the merged [`RawConfig`] into a [`Config`], one
//! function per section. Each takes its keys out of the raw settings, checks
//! them and writes them over the defaults of [`Config::default`]; an error
//! names the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawConfig, RawService};
use super::types::{parse_duration, Database, KeyIdMode, ServiceConfig, TlsFiles};
use super::{invalid, Config, ConfigError, Env, MIN_TOKEN_TTL};

/// Every section, in an order where a setting's dependencies come first.
pub(super) fn validate(mut raw: RawConfig, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut c = Config::default();
    network(&mut raw, &mut c)?;
    storage(&mut raw, &mut c)?;
    tokens(&mut raw, &mut c)?;
    sign_in(&mut raw, &mut c)?;
    lockout(&mut raw, &mut c)?;
    audit(&mut raw, &mut c)?;
    services(std::mem::take(&mut raw.services), env, &mut c)?;
    identity(&mut raw, &mut c)?;
    edge(&mut raw, &mut c)?;
    Ok(c)
}

/// A duration setting: `90s`, `5m`, `12h`, `30d` or seconds.
fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        Some(v) => parse_duration(&v).map_err(|p| invalid(key, p)),
        None => Ok(default),
    }
}

/// A short wait, which may also be given in milliseconds (`250ms`).
fn short_duration(
    key: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(v) => match v.trim().strip_suffix("ms") {
            Some(ms) => ms
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| invalid(key, format!("{v:?} is not a duration like 250ms or 2s"))),
            None => parse_duration(&v).map_err(|p| invalid(key, p)),
        },
        None => Ok(default),
    }
}

/// A number within `range`.
fn bounded<T>(
    key: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        return Err(invalid(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
    Ok(v)
}

/// Listeners, TLS, the public URL, metrics and trusted proxies.
fn network(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    if let Some(s) = raw.listen.take() {
        c.listen = s.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{s:?} is not an address like 127.0.0.1:5001"),
            )
        })?;
    }
    c.tls = match (raw.tls_cert.take(), raw.tls_key.take()) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (Some(_), None) => {
            return Err(invalid(
                "tls_key",
                "tls_cert is set, so tls_key is needed too",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tls_cert",
                "tls_key is set, so tls_cert is needed too",
            ))
        }
    };
    let scheme = if c.tls.is_some() { "https" } else { "http" };
    c.public_url = raw
        .public_url
        .take()
        .unwrap_or_else(|| format!("{scheme}://{}", c.listen))
        .trim_end_matches('/')
        .to_owned();
    if !(c.public_url.starts_with("http://") || c.public_url.starts_with("https://")) {
        return Err(invalid("public_url", "must start with http:// or https://"));
    }
    c.metrics_listen = match raw.metrics_listen.take() {
        Some(s) if !s.trim().is_empty() => Some(s.trim().parse().map_err(|_| {
            invalid(
                "metrics_listen",
                format!("{s:?} is not an address like 127.0.0.1:9101"),
            )
        })?),
        _ => None,
    };
    if c.metrics_listen == Some(c.listen) {
        return Err(invalid("metrics_listen", "must differ from listen"));
    }
    c.trusted_proxies = raw
        .trusted_proxies
        .take()
        .unwrap_or_default()
        .iter()
        .map(|s| crate::net::proxy::parse_network(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|p| invalid("trusted_proxies", p))?;
    c.shutdown_timeout = duration(
        "shutdown_timeout",
        raw.shutdown_timeout.take(),
        c.shutdown_timeout,
    )?;
    if c.shutdown_timeout > Duration::from_secs(3600) {
        return Err(invalid("shutdown_timeout", "must be at most 1h"));
    }
    Ok(())
}

/// The database and the key and policy directories.
fn storage(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    if let Some(db) = raw.database.take() {
        c.database = Database::parse(&db).map_err(|p| invalid("database", p))?;
    }
    if let Some(dir) = raw.keys_dir.take() {
        c.keys_dir = dir;
    }
    if let Some(dir) = raw.policies_dir.take() {
        c.policies_dir = dir;
    }
    Ok(())
}

/// Issuer, lifetimes of access and refresh tokens, and key rotation.
fn tokens(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    if let Some(issuer) = raw.issuer.take() {
        if issuer.trim().is_empty() {
            return Err(invalid("issuer", "must not be empty"));
        }
        c.issuer = issuer;
    }
    c.token_ttl = duration("token_ttl", raw.token_ttl.take(), c.token_ttl)?;
    if c.token_ttl < MIN_TOKEN_TTL {
        return Err(invalid(
            "token_ttl",
            "must be at least 60s (clients assume 60s)",
        ));
    }
    if c.token_ttl > Duration::from_secs(86_400) {
        return Err(invalid(
            "token_ttl",
            "must be at most 1d; use refresh tokens for long sessions",
        ));
    }
    // A reused token must still live at least MIN_TOKEN_TTL when handed out.
    let reuse_room = c.token_ttl.saturating_sub(MIN_TOKEN_TTL);
    c.token_reuse = match raw.token_reuse.take() {
        Some(text) => parse_duration(&text).map_err(|e| invalid("token_reuse", e))?,
        None => (c.token_ttl / 10)
            .min(Duration::from_secs(30))
            .min(reuse_room),
    };
    if c.token_reuse > reuse_room {
        return Err(invalid(
            "token_reuse",
            "must leave a reused token at least 60s to live (at most token_ttl - 60s)",
        ));
    }
    c.refresh_idle = duration("refresh_idle", raw.refresh_idle.take(), c.refresh_idle)?;
    c.refresh_absolute = duration(
        "refresh_absolute",
        raw.refresh_absolute.take(),
        c.refresh_absolute,
    )?;
    if c.refresh_idle.is_zero() || c.refresh_absolute < c.refresh_idle {
        return Err(invalid(
            "refresh_absolute",
            "must be at least refresh_idle, and refresh_idle must not be zero",
        ));
    }
    c.key_publish_delay = duration(
        "key_publish_delay",
        raw.key_publish_delay.take(),
        c.key_publish_delay,
    )?;
    Ok(())
}

/// The password check: credential cache, hashing, scopes per request and the
/// robot prefix.
fn sign_in(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    c.credential_cache_ttl = duration(
        "credential_cache_ttl",
        raw.credential_cache_ttl.take(),
        c.credential_cache_ttl,
    )?;
    if c.credential_cache_ttl > Duration::from_secs(3600) {
        return Err(invalid("credential_cache_ttl", "must be at most 1h"));
    }
    c.credential_cache_size = raw
        .credential_cache_size
        .take()
        .unwrap_or(c.credential_cache_size);
    c.max_scopes = bounded("max_scopes", raw.max_scopes.take(), c.max_scopes, 1..=256)?;
    c.hash_concurrency = bounded(
        "hash_concurrency",
        raw.hash_concurrency.take(),
        c.hash_concurrency,
        1..=64,
    )?;
    c.hash_queue_timeout = short_duration(
        "hash_queue_timeout",
        raw.hash_queue_timeout.take(),
        c.hash_queue_timeout,
    )?;
    if c.hash_queue_timeout.is_zero() || c.hash_queue_timeout > Duration::from_secs(60) {
        return Err(invalid("hash_queue_timeout", "must be between 1ms and 60s"));
    }
    c.refusal_floor = short_duration("refusal_floor", raw.refusal_floor.take(), c.refusal_floor)?;
    if c.refusal_floor > Duration::from_secs(5) {
        return Err(invalid("refusal_floor", "must be at most 5s"));
    }
    if let Some(prefix) = raw.robot_prefix.take() {
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 32
            && !prefix.contains(':')
            && !prefix.chars().any(|c| c.is_control() || c.is_whitespace())
            // A prefix a local username could start with would let a user pose as a robot.
            && prefix.parse::<crate::types::Username>().is_err()
            && prefix.chars().any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c)));
        if !prefix_ok {
            return Err(invalid(
                "robot_prefix",
                "must be 1-32 printable characters including one that local usernames cannot hold (e.g. `$`)",
            ));
        }
        c.robot_prefix = prefix;
    }
    Ok(())
}

/// Failed sign-ins counted per account, per address, and both.
fn lockout(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    c.login_failure_limit = raw
        .login_failure_limit
        .take()
        .unwrap_or(c.login_failure_limit);
    if !(1..=1_000_000).contains(&c.login_failure_limit) {
        return Err(invalid(
            "login_failure_limit",
            "must be between 1 and 1000000",
        ));
    }
    c.login_failure_window = duration(
        "login_failure_window",
        raw.login_failure_window.take(),
        c.login_failure_window,
    )?;
    if c.login_failure_window.is_zero() {
        return Err(invalid("login_failure_window", "must not be zero"));
    }
    // Wider scopes get a wider default: ten times the per-address limit.
    let limit = c.login_failure_limit;
    let wide_limit = |key: &'static str, value: Option<i64>| {
        let wide = value.unwrap_or(limit.saturating_mul(10));
        if wide < limit || wide > 10_000_000 {
            return Err(invalid(
                key,
                "must be at least login_failure_limit and at most 10000000",
            ));
        }
        Ok(wide)
    };
    c.login_failure_account_limit = wide_limit(
        "login_failure_account_limit",
        raw.login_failure_account_limit.take(),
    )?;
    c.login_failure_address_limit = wide_limit(
        "login_failure_address_limit",
        raw.login_failure_address_limit.take(),
    )?;
    Ok(())
}

/// How long audit rows are kept and what happens when they cannot be queued.
fn audit(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    c.audit_retention = duration(
        "audit_retention",
        raw.audit_retention.take(),
        c.audit_retention,
    )?;
    c.audit_queue = bounded(
        "audit_queue",
        raw.audit_queue.take(),
        c.audit_queue,
        1..=10_000_000,
    )?;
    c.audit_required = raw.audit_required.take().unwrap_or(c.audit_required);
    c.generation_listener = raw
        .generation_listener
        .take()
        .unwrap_or(c.generation_listener);
    c.audit_fold_window = short_duration(
        "audit_fold_window",
        raw.audit_fold_window.take(),
        c.audit_fold_window,
    )?;
    if c.audit_fold_window > Duration::from_secs(3600) {
        return Err(invalid(
            "audit_fold_window",
            "must be at most 1h (0 turns folding off)",
        ));
    }
    Ok(())
}

/// Checks a `registry_url`: what `docker login` takes as the registry, an
/// optional `https://` or `http://`, then `host[:port]` (an IPv6 host in
/// brackets) and an optional path. Only characters that need no quoting in a
/// shell, so the sign-in page's command line stays one plain line.
fn check_registry_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    if url.len() > 255
        || host.is_empty()
        || host.starts_with(['-', '.', ':'])
        || !rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:/[]".contains(c))
    {
        return Err(format!(
            "{url:?} is not a registry address like registry.example.com or registry.example.com:5000"
        ));
    }
    Ok(())
}

/// `[[service]]` tables, and `BERTH_SERVICE` (with `BERTH_SERVICE_KEY_ID`),
/// which puts one service first.
fn services(raw: Vec<RawService>, env: &dyn Env, c: &mut Config) -> Result<(), ConfigError> {
    let mut services: Vec<ServiceConfig> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let key = format!("service[{i}].name");
        if s.name.trim().is_empty() || s.name.len() > 255 || s.name.chars().any(char::is_control) {
            return Err(invalid(&key, "must be a non-empty printable name"));
        }
        if services.iter().any(|x| x.name == s.name) {
            return Err(invalid(
                &key,
                format!("service {:?} is listed twice", s.name),
            ));
        }
        let registry_url = s.registry_url.map(|u| u.trim().to_owned());
        if let Some(url) = &registry_url {
            check_registry_url(url)
                .map_err(|why| invalid(&format!("service[{i}].registry_url"), why))?;
        }
        services.push(ServiceConfig {
            name: s.name,
            key_id: s.key_id,
            expand_wildcard: s.expand_wildcard,
            audience_list: s.audience_list,
            registry_url,
        });
    }
    if let Some(name) = env.var("BERTH_SERVICE") {
        // A service the file already describes keeps its settings and moves
        // first; `BERTH_SERVICE_KEY_ID` still chooses its key id form.
        let key_id = match env.var("BERTH_SERVICE_KEY_ID") {
            Some(v) => Some(v.parse().map_err(|p| invalid("BERTH_SERVICE_KEY_ID", p))?),
            None => None,
        };
        let mut service = match services.iter().position(|s| s.name == name) {
            Some(i) => services.remove(i),
            None => ServiceConfig::new(name, KeyIdMode::default()),
        };
        if let Some(key_id) = key_id {
            service.key_id = key_id;
        }
        services.insert(0, service);
    }
    if !services.is_empty() {
        c.services = services;
    }
    Ok(())
}

/// `[[oidc]]` and `[[ldap]]`, and their place in the authentication chain.
fn identity(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    c.oidc = crate::config::oidc::validate(
        std::mem::take(&mut raw.oidc),
        raw.auth_order.take(),
        raw.name_conflict.take(),
    )?;
    c.ldap = crate::config::ldap::validate(std::mem::take(&mut raw.ldap), &c.oidc.order)?;
    Ok(())
}

/// Timeouts and connection caps at the listeners.
fn edge(raw: &mut RawConfig, c: &mut Config) -> Result<(), ConfigError> {
    let d = &c.edge;
    let edge = crate::net::limits::EdgeLimits {
        header_read_timeout: duration(
            "header_read_timeout",
            raw.header_read_timeout.take(),
            d.header_read_timeout,
        )?,
        body_read_timeout: duration(
            "body_read_timeout",
            raw.body_read_timeout.take(),
            d.body_read_timeout,
        )?,
        request_timeout: duration(
            "request_timeout",
            raw.request_timeout.take(),
            d.request_timeout,
        )?,
        idle_timeout: duration("idle_timeout", raw.idle_timeout.take(), d.idle_timeout)?,
        max_connections: raw.max_connections.take().unwrap_or(d.max_connections),
        max_connections_per_address: raw
            .max_connections_per_address
            .take()
            .unwrap_or(d.max_connections_per_address),
    };
    edge.check()
        .map_err(|(key, problem)| invalid(key, problem))?;
    c.edge = edge;
    Ok(())
}

impl Default for Config {
    /// Every setting at its built-in default (what berth runs with and no file).
    fn default() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 5001));
        Config {
            listen,
            public_url: format!("http://{listen}"),
            database: Database::Sqlite(PathBuf::from("data/berth.db")),
            keys_dir: "keys".into(),
            policies_dir: "policies".into(),
            issuer: "berth".into(),
            token_ttl: Duration::from_secs(300),
            token_reuse: Duration::from_secs(30),
            services: vec![ServiceConfig::new("registry", KeyIdMode::default())],
            refresh_idle: Duration::from_secs(7 * 86_400),
            refresh_absolute: Duration::from_secs(30 * 86_400),
            credential_cache_ttl: Duration::from_secs(300),
            credential_cache_size: 10_000,
            max_scopes: 32,
            hash_concurrency: 2,
            robot_prefix: "robot$".into(),
            login_failure_limit: 10,
            login_failure_window: Duration::from_secs(300),
            login_failure_account_limit: 100,
            login_failure_address_limit: 100,
            hash_queue_timeout: Duration::from_secs(2),
            refusal_floor: Duration::from_millis(250),
            audit_retention: Duration::from_secs(90 * 86_400),
            audit_queue: 50_000,
            audit_required: false,
            audit_fold_window: Duration::from_secs(60),
            generation_listener: true,
            oidc: crate::config::oidc::OidcSettings::default(),
            ldap: Vec::new(),
            key_publish_delay: Duration::from_secs(3600),
            metrics_listen: None,
            trusted_proxies: Vec::new(),
            tls: None,
            shutdown_timeout: Duration::from_secs(10),
            edge: crate::net::limits::EdgeLimits::default(),
        }
    }
}
