//! HTTP: the router and one file per endpoint. Errors become responses through
//! one type per surface: [`error::ApiError`] (JSON) for the token endpoint, the
//! sign-in pages' `PageError` (HTML) under [`login`].
//!
//! The router also carries the request timeouts of [`crate::net::limits`]:
//! tower-http's body timeout (a body that stalls longer than
//! `body_read_timeout` fails to read, and the endpoint answers 408) and its
//! whole-request timeout (`request_timeout`, 408). Outermost,
//! [`request_id`] gives every request its id and span.

pub mod client;
pub mod error;
pub mod health;
pub mod login;
pub mod meta;
pub mod metrics;
pub mod request;
pub mod request_id;
pub mod token;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::state::AppState;
use health::Detail;

/// Largest request body accepted (OAuth forms are small).
pub const MAX_BODY: usize = 64 * 1024;

/// Builds the router; `/metrics` is on it unless `metrics_listen` puts it on
/// its own address.
pub fn router(state: AppState) -> Router {
    let with_metrics = state.config.metrics_listen.is_none();
    router_with(state, with_metrics)
}

/// Builds the router, with or without `/metrics`. Health endpoints here say
/// only a status.
pub fn router_with(state: AppState, with_metrics: bool) -> Router {
    let mut router = Router::new()
        .route("/token", get(token::get).post(token::post))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/healthz", get(|s| health::healthz(s, Detail::Status)))
        .merge(login::routes())
        .route("/readyz", get(|s| health::readyz(s, Detail::Status)));
    if with_metrics {
        router = router.route("/metrics", get(metrics::endpoint));
    }
    edge(router.layer(DefaultBodyLimit::max(MAX_BODY)), &state).with_state(state)
}

/// The router of the separate metrics address: `/metrics`, and `/healthz` and
/// `/readyz` with every check and cause.
pub fn metrics_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics::endpoint))
        .route("/healthz", get(|s| health::healthz(s, Detail::Full)))
        .route("/readyz", get(|s| health::readyz(s, Detail::Full)));
    edge(router, &state).with_state(state)
}

/// The request timeouts, inside the metrics middleware so that a timed-out
/// request is counted with its 408; outermost, the request id and its span.
fn edge(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let limits = state.config.edge;
    let router = router
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ));
    request_id::layer(router, state)
}
