//! Endpoints about berth itself: `/.well-known/jwks.json` and `/healthz`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use time::OffsetDateTime;

use crate::app::AppState;
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

/// `GET /healthz`: alive; reports a stale policy (last reload failed) as
/// `degraded` with the error, while the last good policy keeps serving.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let policy = state.policies.status();
    let status = if policy.stale { "degraded" } else { "ok" };
    (
        StatusCode::OK,
        Json(serde_json::json!({ "status": status, "policy": policy })),
    )
        .into_response()
}
