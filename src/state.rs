//! The state every request handler shares: configuration, signer,
//! authenticator, live policy, audit sink, metrics and TLS certificate. Built
//! by `app`; read by `http`.

use std::sync::Arc;

use crate::authn::Authenticator;
use crate::config::Config;
use crate::policy::reload::PolicyHandle;
use crate::policy::Policy;
use crate::token::Signer;

/// Shared state of the running server: one pointer, so the clone every
/// extractor and layer makes per request is one reference count, not one per
/// part.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] points to.
#[derive(Debug)]
pub struct Shared {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token signer.
    pub signer: Arc<Signer>,
    /// Issues tokens through `signer`, reusing recent ones (`token_reuse`).
    pub tokens: Arc<crate::token::Tokens>,
    /// Credential checks.
    pub auth: Arc<Authenticator>,
    /// The live policy.
    pub policies: Arc<PolicyHandle>,
    /// Decision records: log lines and audit rows.
    pub audit: crate::audit::AuditSink,
    /// Request metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The TLS certificate, when berth terminates TLS.
    pub tls: Option<Arc<crate::net::tls::CertStore>>,
}

impl AppState {
    /// The state made of its parts.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    /// The policy in force; a request keeps the one it started with.
    pub fn policy(&self) -> Arc<Policy> {
        self.policies.current()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
