//! The one error type that becomes an HTTP response. Bodies follow RFC 6749
//! (`{"error","error_description"}`); a 5xx body never carries the cause, which is
//! logged once by the handler that saw it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    basic_challenge: bool,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// 400 `invalid_scope`.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant(grant: &str) -> Self {
        let shown: String = grant.chars().take(40).collect();
        Self::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {shown:?} is not supported (use password or refresh_token)"),
        )
    }

    /// 400 `invalid_grant`: a refresh token that is unknown, expired or revoked.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    /// 401 with a Basic challenge: wrong username or password.
    pub fn unauthorized() -> Self {
        ApiError {
            basic_challenge: true,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid username or password",
            )
        }
    }

    /// A request body that could not be read: 408 when it stalled past
    /// `body_read_timeout`, else as [`ApiError::body_rejected`].
    pub fn body_unreadable(rejection: &axum::extract::rejection::BytesRejection) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return Self::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request",
                    "request body not received in time",
                );
            }
            cause = e.source();
        }
        Self::body_rejected(rejection.status())
    }

    /// A request body axum refused to buffer (too large, bad length).
    pub fn body_rejected(status: StatusCode) -> Self {
        let description = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body too large (at most {} bytes)", super::MAX_BODY)
        } else {
            "request body could not be read".to_owned()
        };
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, "invalid_request", description)
    }

    /// 429 with `Retry-After`: too many failed sign-ins.
    pub fn too_many_attempts(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                format!("too many failed sign-ins; try again in {retry_after} s"),
            )
        }
    }

    /// 503: a backend is unreachable.
    pub fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            format!("{what} is unavailable, try again shortly"),
        )
    }

    /// 503 with `Retry-After`: berth itself is saturated (every password-check
    /// slot busy); the client should retry shortly.
    pub fn busy(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many sign-ins at once, try again shortly",
            )
        }
    }

    /// 500 with no detail.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error",
        )
    }

    /// The same error with another client-facing description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The OAuth error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The client-facing description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // RFC 6749 fields for OAuth clients, plus the registry-style `errors` array
        // that docker prints as the reason.
        let registry_code = match self.status {
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            s if s.is_server_error() => "UNAVAILABLE",
            _ => "DENIED",
        };
        let body = Json(serde_json::json!({
            "error": self.code,
            "error_description": self.description,
            "errors": [{ "code": registry_code, "message": self.description }],
        }));
        let mut res = (self.status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"berth\", charset=\"UTF-8\""),
            );
        }
        res
    }
}
