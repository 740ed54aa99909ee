//! HTTP: the router and one file per endpoint. Only [`error::ApiError`] turns
//! into an error response.

pub mod error;
pub mod login;
pub mod meta;
pub mod request;
pub mod token;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use crate::app::AppState;

/// Largest request body accepted (OAuth forms are small).
pub const MAX_BODY: usize = 64 * 1024;

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/token", get(token::get).post(token::post))
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/healthz", get(meta::healthz))
        .merge(login::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
