//! Application state, first-start bootstrap (keys, first admin) and the server loop.

use std::future::Future;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::authn::{self, AuthError, AuthSettings, Authenticator, Username};
use crate::config::Config;
use crate::policy::reload::PolicyHandle;
use crate::policy::PolicyError;
use crate::state::AppState;
use crate::store::{Store, StoreError};
use crate::token::{generate, keyset, Algorithm, KeyError, KeySet, Signer};

/// Why berth could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Keys missing, unreadable or invalid.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    /// Database problem.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Policy files invalid.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// Authenticator setup failed.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// An `[[oidc]]` provider could not be set up (client secret, CA file).
    #[error("{0}")]
    Oidc(#[from] authn::oidc::OidcError),
    /// An `[[ldap]]` directory could not be set up (bind password, CA file).
    #[error("{0}")]
    Ldap(#[from] authn::ldap::LdapError),
    /// TLS certificate or key unusable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::net::tls::TlsError),
    /// The default policy could not be written into a missing policy directory.
    #[error("cannot write the default policy into {dir}: {source}")]
    PolicyDir {
        /// The configured `policies_dir`.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What bootstrap did, for the operator.
#[derive(Debug, Default)]
pub struct Bootstrap {
    /// Name of a key generated on this start.
    pub generated_key: Option<String>,
    /// Password of the first admin, when berth chose it (print once).
    pub admin_password: Option<SecretString>,
    /// The first admin was created on this start.
    pub admin_created: bool,
    /// Policy warnings.
    pub policy_warnings: Vec<String>,
    /// The policy directory did not exist and the shipped default was written.
    pub wrote_policy: bool,
}

/// Renews the signing certificates that are due when berth's CA key is here,
/// and warns about those it cannot renew when it is not. Failures are logged:
/// the keys in use keep signing until their certificates expire.
pub fn renew_certificates(dir: &std::path::Path, now: OffsetDateTime) {
    if generate::ca_online(dir) {
        match generate::renew_due(dir, now, false) {
            Ok(renewed) if !renewed.is_empty() => {
                tracing::info!(keys = %renewed.join(" "), "signing certificates renewed");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "signing certificates could not be renewed"),
        }
    } else if let Ok(set) = KeySet::load(dir) {
        for warning in generate::unrenewable(&set, dir, now) {
            tracing::warn!("{warning}");
        }
    }
}

/// Ensures a signing key exists, generating an ES256 key on first start, and
/// rewrites the certificate bundle. Returns the keys and the generated name.
pub fn ensure_keys(
    config: &Config,
    now: OffsetDateTime,
) -> Result<(KeySet, Option<String>), KeyError> {
    let dir = &config.keys_dir;
    let lock = generate::lock(dir)?;
    let orphans = keyset::orphan_certificates(dir);
    if !keyset::has_signing_key(dir) && !orphans.is_empty() {
        // Generating a fresh key here would leave registries trusting only the
        // lost one: stop and say so instead.
        return Err(KeyError::Invalid {
            path: dir.clone(),
            problem: format!(
                "certificate(s) {} have no private key file; restore the .key files from backup (or remove the certificates to start with a new key)",
                orphans.join(", ")
            ),
        });
    }
    let generated = if keyset::has_signing_key(dir) {
        None
    } else {
        Some(generate::generate(dir, Algorithm::Es256, now, now)?)
    };
    drop(lock);
    renew_certificates(dir, now);
    let set = KeySet::load(dir)?;
    set.active(now)?;
    set.write_bundle(now)?;
    Ok((set, generated))
}

/// Opens the database, creating the first admin if there are no users.
pub async fn open_store(
    config: &Config,
    admin_password: Option<SecretString>,
    boot: &mut Bootstrap,
) -> Result<Store, StartError> {
    let store = Store::open(&config.database).await?;
    if store.user_count().await? == 0 {
        let chosen = admin_password.is_none();
        let password = match admin_password {
            Some(p) => p,
            None => random_password()?,
        };
        let pw = password.clone();
        let hash = tokio::task::spawn_blocking(move || authn::password::hash(&pw))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .map_err(AuthError::Internal)?;
        let admin: Username = "admin".parse().map_err(AuthError::Internal)?;
        store
            .create_user(
                &admin,
                &hash,
                &["admins".to_owned()],
                OffsetDateTime::now_utc().unix_timestamp(),
            )
            .await?;
        boot.admin_created = true;
        if chosen {
            boot.admin_password = Some(password);
        }
    }
    Ok(store)
}

/// A random 24-character password.
pub fn random_password() -> Result<SecretString, AuthError> {
    let mut raw = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| AuthError::Internal("no randomness".into()))?;
    Ok(SecretString::from(
        data_encoding::BASE64URL_NOPAD.encode(&raw),
    ))
}

/// Loads everything and builds the state.
pub async fn build(
    config: Config,
    admin_password: Option<SecretString>,
) -> Result<(AppState, Bootstrap), StartError> {
    let mut boot = Bootstrap::default();
    let now = OffsetDateTime::now_utc();
    let (keys, generated) = ensure_keys(&config, now)?;
    boot.generated_key = generated;
    boot.wrote_policy =
        crate::policy::default::write_if_missing(&config.policies_dir).map_err(|source| {
            StartError::PolicyDir {
                dir: config.policies_dir.display().to_string(),
                source,
            }
        })?;
    let policies = PolicyHandle::load(&config.policies_dir)?;
    boot.policy_warnings = policies.status().warnings;
    let store = open_store(&config, admin_password, &mut boot).await?;
    let sqlite = match &config.database {
        crate::config::Database::Sqlite(path) => Some(path.as_path()),
        crate::config::Database::Postgres(_) => None,
    };
    for warning in crate::custody::exposed(&crate::custody::secret_files(&config.keys_dir, sqlite))
    {
        tracing::warn!("{warning}");
    }
    let auth = Authenticator::new(
        store,
        AuthSettings {
            cache_ttl: config.credential_cache_ttl,
            cache_size: config.credential_cache_size,
            hash_concurrency: config.hash_concurrency,
            refresh_idle: config.refresh_idle,
            refresh_absolute: config.refresh_absolute,
            robot_prefix: config.robot_prefix.clone(),
            login_failure_limit: config.login_failure_limit,
            login_failure_window: config.login_failure_window,
            login_failure_account_limit: config.login_failure_account_limit,
            login_failure_address_limit: config.login_failure_address_limit,
            hash_queue_timeout: config.hash_queue_timeout,
            refusal_floor: config.refusal_floor,
        },
    )?;
    let oidc = authn::oidc::Oidc::new(
        &config.oidc,
        auth.store().clone(),
        authn::oidc::SessionLimits {
            idle: config.refresh_idle,
            absolute: config.refresh_absolute,
        },
    )?;
    let ldap = authn::ldap::Ldap::new(
        &config.ldap,
        auth.store().clone(),
        authn::ldap::SessionLimits {
            idle: config.refresh_idle,
            absolute: config.refresh_absolute,
        },
    )?;
    let auth = auth
        .with_oidc(oidc)
        .with_ldap(ldap, &config.oidc.order, config.oidc.name_conflict);
    let signer = Signer::new(keys, &config);
    let tls = match &config.tls {
        Some(files) => Some(crate::net::tls::CertStore::load(&files.cert, &files.key)?),
        None => None,
    };
    let audit = crate::audit::AuditSink::start(
        auth.store().clone(),
        config.shutdown_timeout,
        config.audit_queue,
        config.audit_required,
        config.audit_fold_window,
    );
    let signer = Arc::new(signer);
    let signing_slots = std::thread::available_parallelism().map_or(1, usize::from);
    let tokens = crate::token::Tokens::new(
        signer.clone(),
        config.token_reuse,
        config.token_ttl,
        signing_slots,
    );
    let state = AppState::new(crate::state::Shared {
        audit,
        config: Arc::new(config),
        signer,
        tokens: Arc::new(tokens),
        auth: Arc::new(auth),
        policies: Arc::new(policies),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        tls,
    });
    Ok((state, boot))
}

/// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests
/// (for at most `shutdown_timeout`). `/metrics` goes to `metrics_listen` when that
/// is configured (bound here), else to `listener`.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = match state.config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    serve_with(state, listener, metrics, shutdown).await
}

/// Like [`serve`], with the metrics listener bound by the caller.
pub async fn serve_with(
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use crate::net::server::{self, Listener};

    let mut background = vec![
        tokio::spawn(purge_loop(state.clone())),
        tokio::spawn(crate::watch::watch(
            state.policies.clone(),
            std::time::Duration::from_secs(1),
        )),
    ];
    // PostgreSQL: keeps the authentication generation in memory while connected.
    if let Some(listener) = state
        .auth
        .generation()
        .listener()
        .filter(|_| state.config.generation_listener)
    {
        background.push(tokio::spawn(listener));
    }
    let tls = match &state.tls {
        Some(store) => {
            background.push(tokio::spawn(crate::watch::watch(
                store.clone(),
                std::time::Duration::from_secs(10),
            )));
            Some(store.acceptor().map_err(std::io::Error::other)?)
        }
        None => None,
    };
    let grace = state.config.shutdown_timeout;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let separate_metrics = metrics_listener.is_some();
    let edge = state.config.edge;
    crate::net::limits::warn_if_files_short(&edge, 1 + usize::from(separate_metrics));
    let connections = |name: &'static str, exempt: Vec<ipnet::IpNet>| {
        crate::net::limits::Connections::new(name, edge, exempt, state.metrics.connections.clone())
    };
    let main = server::run(
        listener,
        Listener {
            name: "http",
            router: crate::http::router_with(state.clone(), !separate_metrics),
            tls,
            connections: connections("http", state.config.trusted_proxies.clone()),
        },
        stop_rx.clone(),
        grace,
    );
    let result = match metrics_listener {
        Some(tcp) => {
            let metrics = server::run(
                tcp,
                Listener {
                    name: "metrics",
                    router: crate::http::metrics_router(state.clone()),
                    // Meant for an internal address; scrapers rarely trust the
                    // public certificate's name there.
                    tls: None,
                    connections: connections("metrics", Vec::new()),
                },
                stop_rx,
                grace,
            );
            let (a, b) = tokio::join!(main, metrics);
            a.and(b)
        }
        None => main.await,
    };
    for task in background {
        task.abort();
    }
    state.audit.shutdown().await;
    result
}

async fn purge_loop(state: AppState) {
    let idle = i64::try_from(state.config.refresh_idle.as_secs()).unwrap_or(i64::MAX / 2);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        match state.auth.store().purge_refresh(now, idle).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "expired refresh tokens removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge expired refresh tokens"),
        }
        let store = state.auth.store();
        let retention =
            i64::try_from(state.config.audit_retention.as_secs()).unwrap_or(i64::MAX / 2);
        match store.purge_audit(now - retention).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "audit records past retention removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge old audit records"),
        }
        renew_certificates(&state.config.keys_dir, OffsetDateTime::now_utc());
        let window = i64::try_from(state.config.login_failure_window.as_secs()).unwrap_or(300);
        if let Err(e) = store.purge_login_failures(now, window).await {
            tracing::warn!(error = %e, "could not purge failed sign-in counters");
        }
        if state.auth.ldap().is_some() {
            match state.auth.store().purge_ldap(now, idle).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired directory sessions removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not purge expired directory sessions"),
            }
        }
        if state.auth.oidc().is_some() {
            match state.auth.store().purge_oidc(now, idle).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired federated sessions removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not purge expired federated sessions"),
            }
            if let Err(e) = crate::authn::oidc::browser::purge(state.auth.store(), now).await {
                tracing::warn!(error = %e, "could not purge expired sign-in page state");
            }
        }
    }
}

/// The `auth: token:` block a distribution registry needs to trust berth.
pub fn registry_config(config: &Config) -> String {
    let service = &config.services[0];
    crate::token::registry::config_block(
        config,
        service,
        crate::token::registry::Flavor::for_key_id(service.key_id),
        None,
    )
}

/// The lines printed on start: the first admin's password (once) and how to
/// point a registry at berth.
pub fn startup_banner(config: &Config, boot: &Bootstrap) -> String {
    let mut out = String::new();
    if let Some(name) = &boot.generated_key {
        out.push_str(&format!(
            "Generated signing key {name} in {}.\n",
            config.keys_dir.display()
        ));
    }
    if boot.generated_key.is_some() && generate::ca_online(&config.keys_dir) {
        out.push_str(&format!(
            "berth's CA key is {}: registries that trust x5c headers trust it, and berth renews its signing certificates (30 days) with it. To keep it offline, move it to a safe place and run `berth key renew` there every few weeks (see docs/security.md).\n",
            config.keys_dir.join("ca.key").display()
        ));
    }
    if boot.wrote_policy {
        out.push_str(&format!(
            "Wrote the default policy to {} (every user owns <name>/**, group admins may do anything, anonymous gets nothing); edit it there.\n",
            config.policies_dir.join("default.toml").display()
        ));
    }
    if boot.admin_created {
        match &boot.admin_password {
            Some(pw) => out.push_str(&format!(
                "Created user admin (group admins) with password: {}\nThis password is shown once; change it with `berth user passwd admin`.\n",
                pw.expose_secret()
            )),
            None => out.push_str("Created user admin (group admins) with the password from BERTH_ADMIN_PASSWORD.\n"),
        }
    }
    out.push_str(&format!(
        "\nberth is listening on {}. Add this to the registry's config.yml:\n\n{}\n",
        config.listen,
        registry_config(config)
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct KeysDir(String);
    impl crate::config::Env for KeysDir {
        fn var(&self, name: &str) -> Option<String> {
            (name == "BERTH_KEYS_DIR").then(|| self.0.clone())
        }
    }

    /// Eight replicas starting at once on one empty keys directory make one CA
    /// and one signing key between them, and all sign with it.
    #[test]
    fn concurrent_first_starts_share_one_ca_and_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let env = KeysDir(dir.display().to_string());
        let config = Config::load_with(None, &env).unwrap();
        let now = OffsetDateTime::now_utc();
        let starts: Vec<_> = (0..8)
            .map(|_| {
                let config = config.clone();
                std::thread::spawn(move || {
                    let (set, generated) = ensure_keys(&config, now).unwrap();
                    (set.active(now).unwrap().name.clone(), generated.is_some())
                })
            })
            .collect();
        let results: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|(_, generated)| *generated).count(),
            1
        );
        assert!(results.iter().all(|(name, _)| *name == results[0].0));
        let keys: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".key"))
            .collect();
        assert_eq!(keys.len(), 2, "one CA key and one signing key: {keys:?}");
    }
}
