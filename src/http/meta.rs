//! `/.well-known/jwks.json`: the keys registries verify tokens with. Health
//! endpoints are in [`super::health`].

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use time::OffsetDateTime;

use crate::state::AppState;
use crate::token::jwks;

/// `GET /.well-known/jwks.json`: every currently valid public key, once per key ID
/// form the configured services use.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let now = OffsetDateTime::now_utc();
    let modes: Vec<_> = state.config.services.iter().map(|s| s.key_id).collect();
    let body = jwks::jwks(state.signer.keys().published(now), &modes);
    let mut res = Json(body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    res
}
