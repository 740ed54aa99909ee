//! Configuration: built-in defaults, a TOML file (optional) and `BERTH_*`
//! environment variables, merged into a validated [`Config`].
//!
//! `load` owns the layering and the source of each value, `raw` the keys as
//! written, `types` the value types, `validate` defaults and checks (one
//! function per section), and `show` the effective configuration for
//! `berth config show`. This module opens no file other than the
//! configuration and the secret files it names; keys, policies and the
//! database are loaded by their own modules.
//!
//! A new top-level setting is a field in `raw::RawConfig` (which gives it its
//! `BERTH_*` variable too), a field of [`Config`] with its default in
//! `Config::default`, a check in its section of `validate`, and a line in
//! `show` (a test fails until it is there).

pub mod ldap;
mod load;
pub mod oidc;
mod raw;
mod show;
mod types;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use load::{env_secret, Source, Sources};
pub use raw::env_var;
pub use show::render;
pub use types::{format_duration, parse_duration, Database, KeyIdMode, ServiceConfig, TlsFiles};

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
    /// Repeats of a grant within this window are folded into its first row
    /// (zero: every decision gets its own row).
    pub audit_fold_window: Duration,
    /// PostgreSQL: keep the authentication generation in memory by `LISTEN`
    /// (off: every burst of requests reads it, for poolers that cannot pass
    /// `LISTEN` through).
    pub generation_listener: bool,
    /// OIDC providers (`[[oidc]]`) and their place in the authentication chain.
    pub oidc: crate::config::oidc::OidcSettings,
    /// LDAP/Active Directory directories (`[[ldap]]`), tried in order; their
    /// place in the chain is `oidc.order`.
    pub ldap: Vec<crate::config::ldap::DirectoryConfig>,
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

/// A configuration with where each value came from, and warnings found while
/// loading it (secret files others can read).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The source of each top-level setting.
    pub sources: Sources,
    /// Problems that do not stop berth.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads the file (if given) and applies environment overrides from the
    /// process; warnings are logged.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let loaded = Self::load_explained(path, &ProcessEnv)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        Ok(loaded.config)
    }

    /// Loads the file (if given) and applies overrides from `env`.
    pub fn load_with(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self::load_explained(path, env)?.config)
    }

    /// Loads the file (if given) and applies overrides from `env`, keeping the
    /// source of every value.
    pub fn load_explained(path: Option<&Path>, env: &dyn Env) -> Result<Loaded, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::explain(Some((path, &text)), env)
            }
            None => Self::explain(None, env),
        }
    }

    /// Parses TOML text as if read from `path`.
    pub fn from_toml(path: &Path, text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self::explain(Some((path, text)), env)?.config)
    }

    fn explain(file: Option<(&Path, &str)>, env: &dyn Env) -> Result<Loaded, ConfigError> {
        let layered = load::layer(file, env)?;
        let sources = layered.sources;
        let mut warnings = layered.warnings;
        let config = validate::validate(layered.raw, env).map_err(|e| match e {
            // Say where a wrong value was set.
            ConfigError::Invalid { key, problem } => {
                let problem = match sources.of(&key) {
                    Source::Default => problem,
                    from => format!("{problem} (from {from})"),
                };
                ConfigError::Invalid { key, problem }
            }
            e => e,
        })?;
        warnings.extend(config.secret_file_warnings());
        Ok(Loaded {
            config,
            sources,
            warnings,
        })
    }

    /// Warnings about the `[[oidc]]` and `[[ldap]]` secret files that the group
    /// or others may read (they are read when the provider is built).
    fn secret_file_warnings(&self) -> Vec<String> {
        use crate::config::oidc::SecretSource;
        let files: Vec<PathBuf> = self
            .oidc
            .providers
            .iter()
            .map(|p| &p.client_secret)
            .chain(
                self.ldap
                    .iter()
                    .filter_map(|d| d.bind.as_ref().map(|b| &b.1)),
            )
            .filter_map(|s| match s {
                SecretSource::File(p) => Some(p.clone()),
                SecretSource::Env(_) => None,
            })
            .collect();
        crate::custody::exposed(&files)
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
mod tests;
