//! Prometheus metrics: what is counted on the request path (here) and what is
//! read at scrape time ([`live`]). The `/metrics` endpoint and the middleware
//! that counts requests are in `http::metrics`.
//!
//! Counted as requests happen: requests by endpoint and outcome, request
//! latency per endpoint, time spent per stage of a token request
//! (authentication, policy, signing), authentication backend errors. Read when
//! scraped: policy generation and reload status, days until each signing
//! certificate (and the TLS certificate) expires, credential-cache hits and
//! misses. Open and refused connections are counted by `net::limits`.
//!
//! Label values come from small fixed sets (endpoint names, OAuth error codes,
//! key file names chosen by the operator); never a username, scope or address,
//! which would be unbounded and personal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod live;

use axum::http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::authn::AuthError;

/// Latency buckets in seconds: sub-millisecond cache hits up to slow hashes and
/// database timeouts.
const BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The endpoints, as the `endpoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/token`
    Token,
    /// `/.well-known/jwks.json`
    Jwks,
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// `/metrics`
    Metrics,
    /// `/login` and below (the sign-in page).
    Login,
    /// Anything else (404s).
    Other,
}

impl Endpoint {
    const ALL: [Endpoint; 7] = [
        Endpoint::Token,
        Endpoint::Jwks,
        Endpoint::Healthz,
        Endpoint::Readyz,
        Endpoint::Metrics,
        Endpoint::Login,
        Endpoint::Other,
    ];

    /// The endpoint a request path belongs to.
    pub fn of(path: &str) -> Self {
        match path {
            "/token" => Endpoint::Token,
            "/.well-known/jwks.json" => Endpoint::Jwks,
            "/healthz" => Endpoint::Healthz,
            "/readyz" => Endpoint::Readyz,
            "/metrics" => Endpoint::Metrics,
            p if p == "/login" || p.starts_with("/login/") => Endpoint::Login,
            _ => Endpoint::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Jwks => "jwks",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::Login => "login",
            Endpoint::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The stages of a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Checking credentials (cache, database, password hash, identity provider).
    Authentication,
    /// Evaluating policy for every requested scope.
    Policy,
    /// Building and signing the JWT.
    Signing,
}

impl Stage {
    const ALL: [Stage; 3] = [Stage::Authentication, Stage::Policy, Stage::Signing];

    fn as_str(self) -> &'static str {
        match self {
            Stage::Authentication => "authentication",
            Stage::Policy => "policy",
            Stage::Signing => "signing",
        }
    }
}

/// What a response was, for the `outcome` label. A handler that knows better
/// than the status code (the token endpoint: `issued`, `invalid_grant`, …) puts
/// this into the response's extensions; otherwise the status class is used.
#[derive(Debug, Clone, Copy)]
pub struct Outcome(pub &'static str);

pub fn outcome_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        401 | 403 => "unauthorized",
        404 | 405 => "not_found",
        408 => "timed_out",
        413 => "too_large",
        429 => "rate_limited",
        503 => "unavailable",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// The metrics counted on the request path. Cheap to update: a few atomic
/// operations and one short lock per observation.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels2, Counter>,
    latency: Vec<Histogram>,
    stages: Vec<Histogram>,
    backend_errors: Family<Labels1, Counter>,
    /// Open and refused connections per listener (updated by the accept loop).
    pub connections: crate::net::limits::ConnectionMetrics,
    /// The last logged state of the health checks.
    pub health: HealthLog,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Metrics {
    /// A fresh set of metrics (one per server, so tests in one process do not mix).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<Labels2, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and outcome",
            requests.clone(),
        );
        let latency_family =
            Family::<Labels1, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response, by endpoint",
            latency_family.clone(),
        );
        let stage_family =
            Family::<Labels1, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "token_stage_duration_seconds",
            "Time spent per stage of a token request (authentication, policy, signing)",
            stage_family.clone(),
        );
        let backend_errors = Family::<Labels1, Counter>::default();
        registry.register(
            "auth_backend_errors",
            "Authentication requests that failed because a backend failed (not bad credentials)",
            backend_errors.clone(),
        );
        let connections = crate::net::limits::ConnectionMetrics::default();
        connections.register(&mut registry);
        // Resolved once, so the request path does no label lookups for these.
        let latency = Endpoint::ALL
            .iter()
            .map(|e| latency_family.get_or_create_owned(&[("endpoint", e.as_str())]))
            .collect();
        let stages = Stage::ALL
            .iter()
            .map(|s| stage_family.get_or_create_owned(&[("stage", s.as_str())]))
            .collect();
        Metrics {
            registry,
            requests,
            latency,
            stages,
            backend_errors,
            connections,
            health: HealthLog::default(),
        }
    }

    /// Counts one finished request.
    pub fn request(&self, endpoint: Endpoint, outcome: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&[("endpoint", endpoint.as_str()), ("outcome", outcome)])
            .inc();
        if let Some(h) = self.latency.get(endpoint.index()) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    /// Starts timing a stage; the time is recorded when the guard is dropped,
    /// also when the stage ends early with an error.
    pub fn time(&self, stage: Stage) -> StageTimer<'_> {
        StageTimer {
            histogram: self.stages.get(stage as usize),
            started: Instant::now(),
        }
    }

    /// Counts an authentication that failed because `backend` failed (not
    /// because of the caller's credentials).
    pub fn backend_error(&self, backend: &'static str) {
        self.backend_errors
            .get_or_create(&[("backend", backend)])
            .inc();
    }
}

/// The backend an authentication error comes from, as the `backend` label.
pub fn backend_of(error: &AuthError) -> &'static str {
    match error {
        AuthError::Unavailable(_) => "database",
        AuthError::IdpUnavailable(_) => "identity_provider",
        AuthError::DirectoryUnavailable(_) => "directory",
        // Not backend failures; never counted (they do not become a 5xx).
        AuthError::BadCredentials | AuthError::BadRefreshToken | AuthError::RateLimited { .. } => {
            "none"
        }
        AuthError::Internal(_) => "internal",
        AuthError::Overloaded => "hash_pool",
    }
}

/// The `outcome` label of a token response: `issued`, `unauthorized` (bad
/// credentials), `rate_limited`, or the OAuth error code.
pub fn token_outcome(code: &'static str, status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        429 => "rate_limited",
        _ => code,
    }
}

/// Records the time since its creation into a stage histogram when dropped.
pub struct StageTimer<'a> {
    histogram: Option<&'a Histogram>,
    started: Instant,
}

impl Drop for StageTimer<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.histogram {
            h.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// The last state of the health checks that was logged, so that each change
/// is logged once, not once per probe.
#[derive(Debug, Default)]
pub struct HealthLog {
    last: Mutex<String>,
}

impl HealthLog {
    /// Logs `problems` (with `causes`) when they differ from the last call's.
    pub fn note(&self, problems: &[&str], causes: &[(&'static str, String)]) {
        let now = problems.join(", ");
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if *last == now {
                return;
            }
            *last = now.clone();
        }
        if problems.is_empty() {
            tracing::info!("health: every check is ok again");
        } else {
            let causes: Vec<String> = causes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            tracing::warn!(problems = %now, causes = %causes.join("; "), "health changed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn endpoints_and_outcomes_are_a_closed_set() {
        assert_eq!(Endpoint::of("/token"), Endpoint::Token);
        assert_eq!(Endpoint::of("/token/"), Endpoint::Other);
        assert_eq!(Endpoint::of("/alice/secret"), Endpoint::Other);
        assert_eq!(Endpoint::of("/login/callback"), Endpoint::Login);
        assert_eq!(Endpoint::of("/loginx"), Endpoint::Other);
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(outcome_of_status(StatusCode::OK), "ok");
        assert_eq!(
            outcome_of_status(StatusCode::SERVICE_UNAVAILABLE),
            "unavailable"
        );
        assert_eq!(outcome_of_status(StatusCode::IM_A_TEAPOT), "client_error");
        assert_eq!(outcome_of_status(StatusCode::REQUEST_TIMEOUT), "timed_out");
    }

    #[test]
    fn a_health_state_is_remembered_until_it_changes() {
        let log = HealthLog::default();
        log.note(&["policy stale"], &[("policy", "x.toml:3".into())]);
        assert_eq!(*log.last.lock().unwrap(), "policy stale");
        log.note(&["policy stale"], &[("policy", "x.toml:4".into())]);
        assert_eq!(*log.last.lock().unwrap(), "policy stale");
        log.note(&[], &[]);
        assert_eq!(*log.last.lock().unwrap(), "");
    }

    #[test]
    fn stage_timer_records_on_drop() {
        let m = Metrics::new();
        {
            let _t = m.time(Stage::Policy);
        }
        m.request(Endpoint::Token, "issued", Duration::from_millis(3));
        m.backend_error(backend_of(&AuthError::Internal("x".into())));
        assert_eq!(
            backend_of(&AuthError::IdpUnavailable("down".into())),
            "identity_provider"
        );
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("berth_token_stage_duration_seconds_count{stage=\"policy\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("berth_token_stage_duration_seconds_count{stage=\"signing\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("berth_http_requests_total{endpoint=\"token\",outcome=\"issued\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("berth_auth_backend_errors_total{backend=\"internal\"} 1"),
            "{out}"
        );
        assert!(!out.contains("backend=\"database\""), "{out}");
    }
}
