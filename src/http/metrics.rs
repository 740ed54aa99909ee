//! `GET /metrics`, and the middleware that counts every request by endpoint
//! and outcome. What is counted and how it is rendered is in
//! [`crate::metrics`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::live::{self, Live};
use crate::metrics::{outcome_of_status, Endpoint, Metrics, Outcome};
use crate::state::AppState;

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

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// Renders every metric of `state`; see [`live::render`].
pub fn render(
    state: &AppState,
    openmetrics: bool,
) -> Result<(String, &'static str), std::fmt::Error> {
    let now = Live {
        policies: state.policies.clone(),
        signer: state.signer.clone(),
        auth: state.auth.clone(),
        audit: state.audit.clone(),
        tls: state.tls.clone(),
    };
    live::render(&state.metrics, now, openmetrics)
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
