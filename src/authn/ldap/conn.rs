//! Connections to one directory: TLS set-up, failover over its URLs, a bounded
//! pool, and the three operations berth needs (service bind, search, user bind),
//! each under a timeout.
//!
//! Owns: which failures mean "the directory is unavailable" (transport errors,
//! timeouts, busy/unavailable result codes) and which mean "no" (a refused user
//! bind). A connection that failed in transport is dropped, never reused; a
//! stopped directory therefore costs no restart: the next lease connects anew.
//! The service account's password lives here (as a [`SecretString`]) and never
//! enters an error or a log line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, SearchOptions};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::config::{DirectoryConfig, SecretSource, Transport};
use super::LdapError;

/// LDAP result codes berth tells apart (RFC 4511 appendix A).
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const REFERRAL: u32 = 10;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INAPPROPRIATE_AUTHENTICATION: u32 = 48;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS: u32 = 50;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

/// Reads the service account's password (first line of a file, or a variable).
fn read_secret(name: &str, source: &SecretSource) -> Result<SecretString, LdapError> {
    let value = match source {
        SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
            LdapError::Config(format!(
                "directory {name}: cannot read bind_password_file {}: {}",
                path.display(),
                e.kind()
            ))
        })?,
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            LdapError::Config(format!(
                "directory {name}: bind_password_env {var} is not set"
            ))
        })?,
    };
    let first = value.lines().next().unwrap_or("").to_owned();
    if first.is_empty() {
        // An empty password would turn the service bind into an anonymous one.
        return Err(LdapError::Config(format!(
            "directory {name}: the bind password is empty"
        )));
    }
    Ok(SecretString::from(first))
}

/// The rustls client settings: the CA file's certificates, or the system's.
fn tls_config(cfg: &DirectoryConfig) -> Result<Arc<ClientConfig>, LdapError> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                LdapError::Config(format!(
                    "directory {}: cannot read ca_file {}: {e}",
                    cfg.name,
                    path.display()
                ))
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    LdapError::Config(format!(
                        "directory {}: ca_file {}: {e}",
                        cfg.name,
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    LdapError::Config(format!(
                        "directory {}: ca_file {}: {e}",
                        cfg.name,
                        path.display()
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(LdapError::Config(format!(
                    "directory {}: ca_file {} holds no certificate",
                    cfg.name,
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A broken system certificate is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapError::Config(format!("directory {}: TLS: {e}", cfg.name)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether an ldap3 error is the transport's (connection gone, timeout), after
/// which the connection is not reused.
fn transport(e: &ldap3::LdapError) -> bool {
    !matches!(
        e,
        ldap3::LdapError::LdapResult { .. } | ldap3::LdapError::FilterParsing
    )
}

/// One open connection and whom it is bound as.
struct Conn {
    ldap: Ldap,
    service_bound: bool,
    /// False while an operation is under way: a lease dropped then (a caller's
    /// timeout fired) does not return a connection with an answer pending.
    idle: bool,
}

/// The bounded pool of one directory's connections.
pub(super) struct Pool {
    cfg: Arc<DirectoryConfig>,
    tls: Arc<ClientConfig>,
    bind_password: Option<SecretString>,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    /// Index of the URL that answered last: tried first next time.
    preferred: AtomicUsize,
}

impl Pool {
    /// Reads the bind password and the CA file; connects to nothing.
    pub(super) fn new(cfg: Arc<DirectoryConfig>) -> Result<Pool, LdapError> {
        let bind_password = match &cfg.bind {
            Some((_, source)) => Some(read_secret(&cfg.name, source)?),
            None => None,
        };
        Ok(Pool {
            tls: tls_config(&cfg)?,
            bind_password,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(cfg.pool_size)),
            preferred: AtomicUsize::new(0),
            cfg,
        })
    }

    /// A connection for one sign-in: an idle one, or a new one. Waits for a free
    /// slot at most the connect timeout, then gives up (the directory is
    /// overloaded or hanging).
    pub(super) async fn lease(&self) -> Result<Lease<'_>, LdapError> {
        let permit = tokio::time::timeout(
            self.cfg.connect_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await
        .map_err(|_| LdapError::Unavailable("every directory connection is busy".into()))?
        .map_err(|_| LdapError::Internal("directory pool closed".into()))?;
        let reused = loop {
            let next = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            match next {
                Some(mut c) => {
                    // The driver ended (the server closed it): drop, take the next.
                    if !c.ldap.is_closed() {
                        break Some(c);
                    }
                }
                None => break None,
            }
        };
        let conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// Connects to the first URL that answers, starting with the last good one.
    async fn connect(&self) -> Result<Conn, LdapError> {
        let n = self.cfg.urls.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        for k in 0..n {
            let idx = (first + k) % n;
            let server = &self.cfg.urls[idx];
            let settings = LdapConnSettings::new()
                .set_conn_timeout(self.cfg.connect_timeout)
                .set_config(self.tls.clone())
                .set_starttls(server.transport == Transport::StartTls);
            let attempt = tokio::time::timeout(
                self.cfg.connect_timeout,
                LdapConnAsync::with_settings(settings, &server.url),
            )
            .await;
            match attempt {
                Ok(Ok((conn, ldap))) => {
                    ldap3::drive!(conn);
                    if idx != first {
                        tracing::warn!(directory = %self.cfg.name, url = %server.url, "directory failover: using this server");
                    }
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(Conn {
                        ldap,
                        service_bound: false,
                        idle: true,
                    });
                }
                Ok(Err(e)) => failures.push(format!("{}: {e}", server.url)),
                Err(_) => failures.push(format!(
                    "{}: no connection within {:?}",
                    server.url, self.cfg.connect_timeout
                )),
            }
        }
        Err(LdapError::Unavailable(format!(
            "no directory server answered ({})",
            failures.join("; ")
        )))
    }

    fn give_back(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.cfg.pool_size {
                idle.push(conn);
            }
        }
    }
}

/// A connection held for one operation sequence; goes back to the pool when
/// dropped unless an operation failed in transport.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.idle {
                self.pool.give_back(conn);
            }
        }
    }
}

/// What a search found: entries (at most the limit) and whether the directory
/// had more.
pub(super) struct Found {
    pub entries: Vec<SearchEntry>,
    pub truncated: bool,
}

impl Lease<'_> {
    fn name(&self) -> &str {
        &self.pool.cfg.name
    }

    fn ldap(&mut self) -> Result<&mut Conn, LdapError> {
        self.conn
            .as_mut()
            .ok_or_else(|| LdapError::Unavailable("directory connection lost".into()))
    }

    /// The connection, marked busy, with the operation timeout armed.
    fn start(&mut self) -> Result<&mut Ldap, LdapError> {
        let timeout = self.pool.cfg.search_timeout;
        let conn = self.ldap()?;
        conn.idle = false;
        conn.ldap.with_timeout(timeout);
        Ok(&mut conn.ldap)
    }

    fn done(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            c.idle = true;
        }
    }

    /// Maps an ldap3 error, dropping the connection when the transport failed.
    fn failed(&mut self, what: &str, e: ldap3::LdapError) -> LdapError {
        if transport(&e) {
            self.conn = None;
        }
        LdapError::Unavailable(format!("{what}: {e}"))
    }

    /// Binds as the service account (or anonymously without one), unless the
    /// connection already is.
    pub(super) async fn service(&mut self) -> Result<(), LdapError> {
        if self.ldap()?.service_bound {
            return Ok(());
        }
        let pool = self.pool;
        let (dn, pw) = match (&pool.cfg.bind, &pool.bind_password) {
            (Some((dn, _)), Some(pw)) => (dn.as_str(), pw.expose_secret()),
            _ => ("", ""),
        };
        let res = self.start()?.simple_bind(dn, pw).await;
        self.done();
        match res {
            Ok(r) if r.rc == rc::SUCCESS => {
                self.ldap()?.service_bound = true;
                Ok(())
            }
            Ok(r) if r.rc == rc::INVALID_CREDENTIALS => {
                self.conn = None;
                Err(LdapError::Config(format!(
                    "directory {}: the service account's bind was refused (check bind_dn and its password)",
                    self.name()
                )))
            }
            Ok(r) => {
                self.conn = None;
                Err(LdapError::Unavailable(format!(
                    "service bind: result {} {}",
                    r.rc,
                    r.text.chars().take(200).collect::<String>()
                )))
            }
            Err(e) => Err(self.failed("service bind", e)),
        }
    }

    /// Binds as `dn` with `password`: `Ok(true)` accepted, `Ok(false)` refused.
    /// The caller guarantees a non-empty password (an empty one would be an
    /// unauthenticated bind, which many servers report as success).
    pub(super) async fn bind_user(
        &mut self,
        dn: &str,
        password: &SecretString,
    ) -> Result<bool, LdapError> {
        let pw = password.expose_secret();
        if pw.is_empty() || dn.is_empty() {
            return Ok(false);
        }
        self.ldap()?.service_bound = false;
        let res = self.start()?.simple_bind(dn, pw).await;
        self.done();
        match res {
            Ok(r) if r.rc == rc::SUCCESS => Ok(true),
            Ok(r)
                if matches!(
                    r.rc,
                    rc::INVALID_CREDENTIALS
                        | rc::UNWILLING_TO_PERFORM
                        | rc::INAPPROPRIATE_AUTHENTICATION
                        | rc::INSUFFICIENT_ACCESS
                ) =>
            {
                Ok(false)
            }
            Ok(r) => Err(LdapError::Unavailable(format!(
                "user bind: result {} {}",
                r.rc,
                r.text.chars().take(200).collect::<String>()
            ))),
            Err(e) => Err(self.failed("user bind", e)),
        }
    }

    /// Searches as the service account, keeping at most `limit` entries.
    /// References and referrals are never followed.
    pub(super) async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Found, LdapError> {
        self.service().await?;
        let timelimit = i32::try_from(self.pool.cfg.search_timeout.as_secs()).unwrap_or(60);
        let sizelimit = i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX);
        let res = self
            .start()?
            .with_search_options(
                SearchOptions::new()
                    .sizelimit(sizelimit)
                    .timelimit(timelimit),
            )
            .search(base, scope, filter, attrs.to_vec())
            .await;
        self.done();
        let ldap3::SearchResult(raw, result) = match res {
            Ok(r) => r,
            Err(e) => return Err(self.failed("search", e)),
        };
        let truncated = match result.rc {
            rc::SUCCESS => false,
            rc::SIZE_LIMIT_EXCEEDED => true,
            rc::NO_SUCH_OBJECT => {
                return Ok(Found {
                    entries: Vec::new(),
                    truncated: false,
                })
            }
            rc::REFERRAL => {
                tracing::warn!(directory = %self.name(), base, "directory answered with a referral; referrals are not followed");
                return Ok(Found {
                    entries: Vec::new(),
                    truncated: false,
                });
            }
            other => {
                return Err(LdapError::Unavailable(format!(
                    "search: result {other} {}",
                    result.text.chars().take(200).collect::<String>()
                )))
            }
        };
        let mut entries = Vec::new();
        let mut more = truncated;
        for re in raw {
            if re.is_ref() || re.is_intermediate() {
                continue;
            }
            if entries.len() >= limit {
                more = true;
                break;
            }
            entries.push(SearchEntry::construct(re));
        }
        Ok(Found {
            entries,
            truncated: more,
        })
    }
}

/// How long a whole sign-in may take at most: connect plus a few operations.
pub(super) fn budget(cfg: &DirectoryConfig) -> Duration {
    cfg.connect_timeout * 2 + cfg.search_timeout * 4
}
