//! Prometheus metrics: what is counted on the request path, what is read at
//! scrape time, and the `/metrics` endpoint.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::authn::{AuthError, Authenticator};
use crate::net::tls::CertStore;
use crate::policy::reload::PolicyHandle;
use crate::token::Signer;

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

fn outcome_of_status(status: StatusCode) -> &'static str {
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
    pub health: super::health::HealthLog,
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
            health: super::health::HealthLog::default(),
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

/// Middleware: counts every request by endpoint and outcome, with its latency.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let endpoint = Endpoint::of(req.uri().path());
    let started = Instant::now();
    let res = next.run(req).await;
    let outcome = res
        .extensions()
        .get::<Outcome>()
        .map_or_else(|| outcome_of_status(res.status()), |o| o.0);
    metrics.request(endpoint, outcome, started.elapsed());
    res
}

/// Values read at scrape time from the live server.
#[derive(Debug)]
struct Live {
    policies: Arc<PolicyHandle>,
    signer: Arc<Signer>,
    auth: Arc<Authenticator>,
    audit: crate::audit::AuditSink,
    tls: Option<Arc<CertStore>>,
}

fn days_until(t: OffsetDateTime, now: OffsetDateTime) -> f64 {
    (t - now).as_seconds_f64() / 86_400.0
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = OffsetDateTime::now_utc();

        let status = self.policies.status();
        gauge(
            &mut encoder,
            "policy_generation",
            "Policy generation in force; increases at every successful reload",
            i64::try_from(status.generation).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "policy_rules",
            "Rules in the policy in force",
            i64::try_from(status.rules).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "policy_reload_failed",
            "1 when the last policy reload failed and the previous policy still serves",
            i64::from(status.stale),
        )?;

        let (queued, dropped) = self.audit.stats();
        gauge(
            &mut encoder,
            "audit_queue_depth",
            "Audit rows waiting for the database writer",
            i64::try_from(queued).unwrap_or(i64::MAX),
        )?;
        let c = ConstCounter::new(dropped);
        let m = encoder.encode_descriptor(
            "audit_dropped",
            "Audit rows dropped because the queue stayed full (the decision is still logged)",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;

        let keys = &self.signer.keys().keys;
        let active = self.signer.keys().active(now).ok().map(|k| k.name.clone());
        let expiry = ConstGauge::new(0.0f64);
        let mut m = encoder.encode_descriptor(
            "signing_key_expiry_days",
            "Days until the certificate of each signing key expires (negative: expired)",
            None,
            expiry.metric_type(),
        )?;
        for key in keys {
            let labels = [("key", key.name.as_str()), ("alg", key.alg.jose())];
            ConstGauge::new(days_until(key.not_after, now)).encode(m.encode_family(&labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "signing_key_active",
            "1 for the key that signs new tokens",
            None,
            expiry.metric_type(),
        )?;
        for key in keys {
            let labels = [("key", key.name.as_str())];
            let is_active = active.as_deref() == Some(key.name.as_str());
            ConstGauge::new(i64::from(is_active)).encode(m.encode_family(&labels)?)?;
        }
        gauge(
            &mut encoder,
            "signing_ca_online",
            "1 when berth's CA key is beside the signing keys and berth renews their certificates itself",
            i64::from(crate::token::generate::ca_online(&self.signer.keys().dir)),
        )?;
        if let Some(not_after) = self.tls.as_ref().and_then(|t| t.not_after()) {
            gauge(
                &mut encoder,
                "tls_certificate_expiry_days",
                "Days until the served TLS certificate expires",
                days_until(not_after, now),
            )?;
        }

        let (hits, misses, entries) = self.auth.cache_stats();
        let c = ConstCounter::new(0u64);
        let mut m = encoder.encode_descriptor(
            "credential_cache_lookups",
            "Password checks answered from the credential cache (hit) or by hashing (miss)",
            None,
            c.metric_type(),
        )?;
        for (result, n) in [("hit", hits), ("miss", misses)] {
            ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
        }
        gauge(
            &mut encoder,
            "credential_cache_entries",
            "Entries in the credential cache",
            i64::try_from(entries).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut encoder,
            "build_info",
            concat!("berth ", env!("CARGO_PKG_VERSION")),
            1i64,
        )
    }
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Renders every metric of `state`, in OpenMetrics text when `openmetrics`, else
/// in the Prometheus text format 0.0.4. Returns the body and its content type.
pub fn render(
    state: &AppState,
    openmetrics: bool,
) -> Result<(String, &'static str), std::fmt::Error> {
    let mut live = Registry::with_prefix("berth");
    live.register_collector(Box::new(Live {
        policies: state.policies.clone(),
        signer: state.signer.clone(),
        auth: state.auth.clone(),
        audit: state.audit.clone(),
        tls: state.tls.clone(),
    }));
    let mut body = String::with_capacity(8 * 1024);
    if openmetrics {
        use prometheus_client::encoding::text;
        text::encode_registry(&mut body, &state.metrics.registry)?;
        text::encode_registry(&mut body, &live)?;
        text::encode_eof(&mut body)?;
        Ok((
            body,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ))
    } else {
        use prometheus_client::encoding::prometheus_text;
        prometheus_text::encode(&mut body, &state.metrics.registry)?;
        prometheus_text::encode(&mut body, &live)?;
        Ok((body, prometheus_text::CONTENT_TYPE))
    }
}

/// `GET /metrics`.
pub async fn endpoint(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match render(&state, wants_openmetrics(&headers)) {
        Ok((body, content_type)) => {
            let mut res = body.into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode metrics");
            super::error::ApiError::internal().into_response()
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
