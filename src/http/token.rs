//! The realm endpoint: `GET /token` and `POST /token`.
//!
//! One way through: parse → authenticate → evaluate policy per scope → sign →
//! log the decision. Nothing here knows SQL or key formats.

use std::net::IpAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::client::ClientIp;
use super::error::ApiError;
use super::request::{self, Credentials, Grant, TokenRequest};
use super::request_id::RequestId;
use crate::audit::DecisionLog;
use crate::authn::{AuthError, Authenticated, Identity};
use crate::metrics::{Metrics, Outcome, Stage};
use crate::policy::{self, Request};
use crate::state::AppState;
use crate::token::reuse::Order;
use crate::token::signer::IssuedToken;
use crate::token::{Access, TokenError};

#[derive(Serialize)]
struct TokenResponse<'a> {
    token: &'a str,
    access_token: &'a str,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

/// `GET /token`: Basic auth or anonymous.
pub async fn get(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestId(id): RequestId,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let started = Instant::now();
    let parsed = request::parse_get(
        query.as_deref().unwrap_or(""),
        headers.get(header::AUTHORIZATION),
        state.config.max_scopes,
    );
    respond(&state, parsed, ip, id, started).await
}

/// `POST /token`: OAuth2 password and refresh_token grants.
pub async fn post(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestId(id): RequestId,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let parsed = body
        .map_err(|rejection| ApiError::body_unreadable(&rejection))
        .and_then(|body| request::parse_post(&body, state.config.max_scopes));
    respond(&state, parsed, ip, id, started).await
}

async fn respond(
    state: &AppState,
    parsed: Result<TokenRequest, ApiError>,
    ip: IpAddr,
    id: String,
    started: Instant,
) -> Response {
    let mut log = DecisionLog::new(ip, id);
    let result = match parsed {
        Ok(req) => issue(state, req, ip, &mut log).await,
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(res) => {
            log.outcome = "issued";
            res
        }
        Err(e) => {
            log.outcome = e.code();
            log.error = Some(e.description().to_owned());
            e.into_response()
        }
    };
    // Room for the audit row before the answer goes out: with `audit_required`,
    // a decision that cannot be recorded grants nothing.
    let permit = match state.audit.reserve().await {
        Ok(permit) => permit,
        Err(e) => {
            let e = ApiError::busy(1).with_description(e.to_string());
            log.outcome = e.code();
            log.error = Some(e.description().to_owned());
            response = e.into_response();
            None
        }
    };
    log.latency = started.elapsed();
    let outcome = crate::metrics::token_outcome(log.outcome, response.status());
    response.extensions_mut().insert(Outcome(outcome));
    state.audit.record(&log, permit);
    response
}

/// [`auth_error`], counting backend failures (those that become a 5xx).
fn counted_auth_error(metrics: &Metrics, e: AuthError, grant: Grant) -> ApiError {
    let backend = crate::metrics::backend_of(&e);
    let error = auth_error(e, grant);
    if error.status().is_server_error() {
        metrics.backend_error(backend);
    }
    error
}

fn auth_error(e: AuthError, grant: Grant) -> ApiError {
    match e {
        AuthError::BadCredentials => ApiError::unauthorized(),
        AuthError::BadRefreshToken => {
            debug_assert_eq!(grant, Grant::RefreshToken);
            ApiError::invalid_grant("refresh token is invalid, expired or revoked; log in again")
        }
        AuthError::Unavailable(cause) => {
            tracing::error!(error = %cause, "authentication backend failed");
            ApiError::unavailable("the account database")
        }
        AuthError::Internal(cause) => {
            tracing::error!(error = %cause, "authentication failed internally");
            ApiError::internal()
        }
        AuthError::RateLimited { retry_after } => ApiError::too_many_attempts(retry_after),
        AuthError::Overloaded => {
            tracing::warn!("password check refused: every hashing slot stayed busy");
            ApiError::busy(1)
        }
        AuthError::IdpUnavailable(cause) => {
            tracing::error!(error = %cause, "identity provider unreachable");
            ApiError::unavailable("the identity provider")
        }
        AuthError::DirectoryUnavailable(cause) => {
            tracing::error!(error = %cause, "directory unreachable");
            ApiError::unavailable("the directory")
        }
    }
}

/// The token for a decision: reused when `token_reuse` allows (see
/// `token::reuse`), else signed.
async fn signed(
    state: &AppState,
    arrived: u64,
    authenticated: &Authenticated,
    service: &str,
    access: &[Access],
    policy: &std::sync::Arc<policy::Policy>,
    now: OffsetDateTime,
) -> Result<IssuedToken, TokenError> {
    let auth_generation = if !state.tokens.reusing() {
        None
    } else if let Some(generation) = authenticated.generation {
        // Read by the credential check, after the request arrived.
        Some(generation)
    } else {
        match state.auth.generation_since(arrived).await {
            Ok(generation) => Some(generation),
            Err(e) => {
                // Signing fresh needs no generation: only reuse is skipped.
                tracing::debug!(error = %e, "authentication generation unreadable; token not reused");
                None
            }
        }
    };
    state
        .tokens
        .issue(Order {
            identity: &authenticated.identity,
            service,
            access,
            policy,
            auth_generation,
            now,
        })
        .await
}

async fn issue(
    state: &AppState,
    req: TokenRequest,
    ip: IpAddr,
    log: &mut DecisionLog,
) -> Result<Response, ApiError> {
    let now = OffsetDateTime::now_utc();
    // Marks the arrival: token reuse needs an authentication generation read
    // after it (shared with the one the credential check made, if any).
    let arrived = state.auth.generation_ticket();
    let service = match req.service {
        Some(s) => s,
        None => state.config.services[0].name.clone(),
    };
    log.service = service.clone();
    log.requested = req.scopes.iter().map(ToString::to_string).collect();
    state
        .signer
        .service_index(&service)
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;

    let timer = state.metrics.time(Stage::Authentication);
    // The name the client signed in with, which docker repeats as `account`.
    let mut typed: Option<String> = None;
    let authenticated = match req.credentials {
        Credentials::Anonymous => Authenticated::local(None, Identity::anonymous()),
        Credentials::Password { username, password } => {
            log.account = username.chars().take(64).collect();
            typed = Some(username.clone());
            state
                .auth
                .login(&username, password, ip, now.unix_timestamp())
                .await
                .map_err(|e| counted_auth_error(&state.metrics, e, req.grant))?
        }
        Credentials::Refresh(token) => state
            .auth
            .refresh_token(&token, &service, now.unix_timestamp())
            .await
            .map_err(|e| counted_auth_error(&state.metrics, e, req.grant))?,
    };
    drop(timer);
    let identity = &authenticated.identity;
    log.identify(identity);
    if let Some(account) = &req.account {
        // `account` names the sign-in, not the identity it resolved to: with
        // `token_username = "ignore"` a provider token is accepted under any
        // name, and docker sends that name. Directory names match without case
        // (`JSmith` signs in as jsmith).
        let same = typed.as_deref() == Some(account.as_str())
            || *account == identity.subject
            || (identity.kind == policy::Kind::Directory
                && account.eq_ignore_ascii_case(&identity.subject));
        if identity.kind != policy::Kind::Anonymous && !same {
            return Err(ApiError::invalid_request(
                "account does not match the authenticated user",
            ));
        }
    }

    let timer = state.metrics.time(Stage::Policy);
    let policy = state.policy();
    let request = Request {
        identity,
        service: &service,
        ip: Some(ip),
    };
    let decided = authenticated.authorize(&policy, &request, &req.scopes);
    drop(timer);
    log.granted = decided.granted();
    log.denied = decided.denied;
    log.rules = decided.rules;
    let access = decided.access;

    let timer = state.metrics.time(Stage::Signing);
    let issued = signed(
        state,
        arrived,
        &authenticated,
        &service,
        &access,
        &policy,
        now,
    )
    .await
    .map_err(|e| match e {
        TokenError::UnknownService(_) => ApiError::invalid_request(e.to_string()),
        TokenError::Key(cause) => {
            tracing::error!(error = %cause, "cannot sign token");
            ApiError::internal()
        }
    })?;
    drop(timer);

    let refresh = if req.offline && matches!(req.grant, Grant::Get | Grant::Password) {
        state
            .auth
            .refresh_for(&authenticated, &service, now.unix_timestamp())
            .await
            .map_err(|e| counted_auth_error(&state.metrics, e, req.grant))?
    } else {
        None
    };
    let body = TokenResponse {
        token: &issued.token,
        access_token: &issued.token,
        expires_in: issued.expires_in,
        issued_at: issued.issued_at.format(&Rfc3339).unwrap_or_default(),
        refresh_token: refresh.as_ref().map(|r| r.expose_secret()),
    };
    // Sized for the body at once: the token appears twice, and growing a
    // small buffer step by step copies it several times.
    let refresh_len = body.refresh_token.map_or(0, str::len);
    let mut json = Vec::with_capacity(2 * issued.token.len() + refresh_len + 160);
    serde_json::to_writer(&mut json, &body).map_err(|e| {
        tracing::error!(error = %e, "cannot write the token response");
        ApiError::internal()
    })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        json,
    )
        .into_response())
}
