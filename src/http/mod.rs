//! HTTP: the router and one file per endpoint. Only [`error::ApiError`] turns
//! into an error response.

pub mod client;
pub mod error;
pub mod login;
pub mod meta;
pub mod metrics;
pub mod readyz;
pub mod request;
pub mod token;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use crate::app::AppState;

/// Largest request body accepted (OAuth forms are small).
pub const MAX_BODY: usize = 64 * 1024;

/// Builds the router; `/metrics` is on it unless `metrics_listen` puts it on
/// its own address.
pub fn router(state: AppState) -> Router {
    let with_metrics = state.config.metrics_listen.is_none();
    router_with(state, with_metrics)
}

/// Builds the router, with or without `/metrics`.
pub fn router_with(state: AppState, with_metrics: bool) -> Router {
    let counted = state.metrics.clone();
    let mut router = Router::new()
        .route("/token", get(token::get).post(token::post))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/healthz", get(meta::healthz))
        .merge(login::routes())
        .route("/readyz", get(readyz::readyz));
    if with_metrics {
        router = router.route("/metrics", get(metrics::endpoint));
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            counted,
            metrics::track,
        ))
        .with_state(state)
}

/// The router of the separate metrics address: `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    let counted = state.metrics.clone();
    Router::new()
        .route("/metrics", get(metrics::endpoint))
        .layer(axum::middleware::from_fn_with_state(
            counted,
            metrics::track,
        ))
        .with_state(state)
}
