//! `GET /readyz`: whether this replica should get traffic: the database
//! answers, a signing key is valid now, and a policy is loaded. `/healthz`
//! (in `meta`) only says the process is alive.
//!
//! The body names what is wrong but never a cause that could hold a secret
//! (a database error may quote its URL); the cause is logged.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;

use crate::app::AppState;

/// How long the database may take to answer the readiness ping.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct Checks {
    database: &'static str,
    keys: &'static str,
    policy: &'static str,
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reason: Vec<&'static str>,
    checks: Checks,
    policy_generation: u64,
}

/// `GET /readyz`: 200 when ready, else 503 with the reasons.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut reason = Vec::new();
    let database = match tokio::time::timeout(DB_TIMEOUT, state.auth.store().ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            reason.push("database unreachable");
            "unreachable"
        }
        Err(_) => {
            tracing::warn!(timeout = ?DB_TIMEOUT, "readiness: database did not answer in time");
            reason.push("database did not answer in time");
            "timeout"
        }
    };
    let keys = match state.signer.keys().active(OffsetDateTime::now_utc()) {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readiness: no valid signing key");
            reason.push("no signing key is valid now");
            "missing"
        }
    };
    let status = state.policies.status();
    // A failed reload keeps the last good policy serving: still ready, but say so.
    let policy = if status.stale { "stale" } else { "ok" };
    let ready = reason.is_empty();
    let body = Readiness {
        status: if ready { "ready" } else { "not ready" },
        reason,
        checks: Checks {
            database,
            keys,
            policy,
        },
        policy_generation: status.generation,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut res = (code, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
