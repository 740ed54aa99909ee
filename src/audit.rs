//! One record per token decision. For now the record is a structured `tracing`
//! event on target `berth::decision`; it never holds a token, password or hash.

use std::net::IpAddr;
use std::time::Duration;

use crate::policy::Kind;

/// What happened to one token request.
#[derive(Debug)]
pub struct DecisionLog {
    /// Client address.
    pub client: IpAddr,
    /// Account as authenticated (or as claimed, when authentication failed).
    pub account: String,
    /// Identity kind, once known.
    pub kind: Option<Kind>,
    /// Authentication backend.
    pub via: &'static str,
    /// Service (audience).
    pub service: String,
    /// Requested scopes.
    pub requested: Vec<String>,
    /// Granted scopes (only those with at least one action).
    pub granted: Vec<String>,
    /// `issued`, or the OAuth error code.
    pub outcome: &'static str,
    /// Client-facing error description, if any.
    pub error: Option<String>,
    /// Time spent.
    pub latency: Duration,
}

impl DecisionLog {
    /// An empty record for a request from `client`.
    pub fn new(client: IpAddr) -> Self {
        DecisionLog {
            client,
            account: String::new(),
            kind: None,
            via: "",
            service: String::new(),
            requested: Vec::new(),
            granted: Vec::new(),
            outcome: "",
            error: None,
            latency: Duration::ZERO,
        }
    }
}

/// Emits the record as one log line.
pub fn record(log: &DecisionLog) {
    tracing::info!(
        target: "berth::decision",
        client = %log.client,
        account = %log.account,
        kind = log.kind.map(|k| k.to_string()).unwrap_or_default(),
        via = log.via,
        service = %log.service,
        requested = %log.requested.join(" "),
        granted = %log.granted.join(" "),
        outcome = log.outcome,
        error = log.error.as_deref().unwrap_or(""),
        latency_us = u64::try_from(log.latency.as_micros()).unwrap_or(u64::MAX),
        "token decision"
    );
}
