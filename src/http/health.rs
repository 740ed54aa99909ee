//! `GET /healthz` (the process is alive) and `GET /readyz` (this replica
//! should get traffic: the database answers, a signing key is valid now, a
//! policy is loaded).
//!
//! Two views of the same checks. The public listener answers only a status
//! (`ok`, `degraded`, `not ready`): a policy error names a file and line, and a
//! database error may quote its URL, which strangers have no business reading.
//! The metrics listener (`metrics_listen`), meant for an internal address,
//! also names each check and the policy error. Causes go to the log once per
//! change of the checks' state, not once per probe, so a probe every second
//! does not flood the log.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;

use crate::state::AppState;

/// How long the database may take to answer the readiness ping.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a health endpoint tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The status word only (public listener).
    Status,
    /// Every check and the policy error (metrics listener).
    Full,
}

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
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_error: Option<String>,
}

fn no_store(code: StatusCode, body: impl Serialize) -> Response {
    let mut res = (code, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn status_only(code: StatusCode, status: &'static str) -> Response {
    no_store(code, serde_json::json!({ "status": status }))
}

/// `GET /healthz`: 200, `ok`, or `degraded` while the last policy reload
/// failed (the last good policy keeps serving). With [`Detail::Full`] also
/// the policy status with its error.
pub async fn healthz(State(state): State<AppState>, detail: Detail) -> Response {
    let policy = state.policies.status();
    let status = if policy.stale { "degraded" } else { "ok" };
    let causes: Vec<_> = policy
        .error
        .iter()
        .filter(|_| policy.stale)
        .map(|e| ("policy", e.clone()))
        .collect();
    let problems: &[&str] = if policy.stale { &["policy stale"] } else { &[] };
    state.metrics.health.note(problems, &causes);
    match detail {
        Detail::Status => status_only(StatusCode::OK, status),
        Detail::Full => no_store(
            StatusCode::OK,
            serde_json::json!({ "status": status, "policy": policy }),
        ),
    }
}

/// `GET /readyz`: 200 `ok` (or `degraded` with a stale policy) when ready,
/// else 503 `not ready`. With [`Detail::Full`] also each check, the reasons
/// and the policy error; causes that could hold a secret (a database error
/// may quote its URL) are only logged.
pub async fn readyz(State(state): State<AppState>, detail: Detail) -> Response {
    let mut reason = Vec::new();
    let mut causes = Vec::new();
    let database = match tokio::time::timeout(DB_TIMEOUT, state.auth.store().ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            causes.push(("database", e.to_string()));
            reason.push("database unreachable");
            "unreachable"
        }
        Err(_) => {
            causes.push(("database", format!("no answer within {DB_TIMEOUT:?}")));
            reason.push("database did not answer in time");
            "timeout"
        }
    };
    let keys = match state.signer.keys().active(OffsetDateTime::now_utc()) {
        Ok(_) => "ok",
        Err(e) => {
            causes.push(("keys", e.to_string()));
            reason.push("no signing key is valid now");
            "missing"
        }
    };
    let policy = state.policies.status();
    let mut problems = reason.clone();
    // A failed reload keeps the last good policy serving: still ready, but say so.
    if policy.stale {
        problems.push("policy stale");
        if let Some(e) = &policy.error {
            causes.push(("policy", e.clone()));
        }
    }
    state.metrics.health.note(&problems, &causes);
    let ready = reason.is_empty();
    let status = match (ready, policy.stale) {
        (false, _) => "not ready",
        (true, true) => "degraded",
        (true, false) => "ok",
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match detail {
        Detail::Status => status_only(code, status),
        Detail::Full => no_store(
            code,
            Readiness {
                status,
                reason,
                checks: Checks {
                    database,
                    keys,
                    policy: if policy.stale { "stale" } else { "ok" },
                },
                policy_generation: policy.generation,
                policy_error: policy.error.filter(|_| policy.stale),
            },
        ),
    }
}
