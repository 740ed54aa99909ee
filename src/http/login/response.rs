//! What the sign-in pages answer: HTML with their security headers, redirects,
//! and [`PageError`], the one error type of these pages (the token endpoint's
//! is [`crate::http::error::ApiError`]). Every page is `no-store`, not
//! framable, sends no referrer to other sites, and runs no script but the copy
//! button's, allowed by its hash in the Content-Security-Policy.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use data_encoding::BASE64;
use ring::digest::{digest, SHA256};

use super::{cookies, pages};
use crate::authn::oidc::OidcError;

/// The one script of the pages: shows the copy buttons and copies the text of
/// the element a button names (falling back to selecting it).
pub const COPY_SCRIPT: &str = "for(const b of document.querySelectorAll('button[data-copy]')){b.hidden=false;b.addEventListener('click',()=>{const el=document.getElementById(b.dataset.copy);getSelection().selectAllChildren(el);const done=(t)=>{b.textContent=t;};if(navigator.clipboard){navigator.clipboard.writeText(el.textContent).then(()=>done('Copied'),()=>done('Selected: copy with Ctrl+C'));}else{done('Selected: copy with Ctrl+C');}});}";

/// The Content-Security-Policy: nothing from elsewhere, inline styles, and the
/// one script by its SHA-256.
pub static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = BASE64.encode(digest(&SHA256, COPY_SCRIPT.as_bytes()).as_ref());
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// An HTML page with the pages' headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(csp) = HeaderValue::from_str(&CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// 303 to `to` (a path of berth's own, or the provider's authorization URL).
pub fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// Why a sign-in page request failed, as the browser is told.
#[derive(Debug)]
pub enum PageError {
    /// A page that says what went wrong.
    Problem {
        /// HTTP status.
        status: StatusCode,
        /// Heading.
        title: &'static str,
        /// Text for the user (never a cause from inside berth).
        text: String,
    },
    /// The browser is not (or no longer) signed in: back to the sign-in page,
    /// forgetting its session cookie.
    SignedOut {
        /// Whether cookies are `Secure`.
        secure: bool,
    },
}

impl PageError {
    /// A page with `status`, `title` and `text`.
    pub fn problem(status: StatusCode, title: &'static str, text: impl Into<String>) -> Self {
        PageError::Problem {
            status,
            title,
            text: text.into(),
        }
    }

    /// 400 "Sign-in failed".
    pub fn sign_in_failed(text: impl Into<String>) -> Self {
        Self::problem(StatusCode::BAD_REQUEST, "Sign-in failed", text)
    }

    /// 403 "Refused".
    pub fn refused(text: impl Into<String>) -> Self {
        Self::problem(StatusCode::FORBIDDEN, "Refused", text)
    }

    /// A form or query axum-extra could not extract: its client status (413
    /// for a body over the limit, 415 for another content type), else 400.
    pub fn unreadable(status: StatusCode) -> Self {
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "Form too large."
        } else {
            "The form could not be read (a field given twice, or not a form). Reload the page and try again."
        };
        Self::problem(status, "Refused", text)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::Problem { status, .. } => *status,
            PageError::SignedOut { .. } => StatusCode::SEE_OTHER,
        }
    }
}

impl From<OidcError> for PageError {
    /// Logs the cause once and says only what the user can act on.
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Rejected(why) => {
                tracing::info!(reason = %why, "sign-in refused");
                Self::sign_in_failed(format!("The sign-in was refused: {why}."))
            }
            OidcError::Token(why) => {
                tracing::warn!(reason = %why, "sign-in: provider token refused");
                Self::sign_in_failed("The identity provider's answer did not verify. Start again.")
            }
            OidcError::Unavailable(why) | OidcError::Config(why) => {
                tracing::error!(error = %why, "sign-in: identity provider unreachable");
                Self::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Identity provider unreachable",
                    "The identity provider is unreachable. Try again shortly.",
                )
            }
            OidcError::Store(e) => {
                tracing::error!(error = %e, "sign-in: database failed");
                Self::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "The database is unavailable. Try again shortly.",
                )
            }
            OidcError::Internal(e) => {
                tracing::error!(error = %e, "sign-in failed internally");
                Self::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "Internal error.",
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Problem {
                status,
                title,
                text,
            } => html(status, pages::problem(title, &text)),
            PageError::SignedOut { secure } => (
                CookieJar::new().add(cookies::removal(cookies::SESSION, secure)),
                see_other("/login"),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    #[test]
    fn errors_are_html_pages_with_the_security_headers() {
        let res = super::PageError::refused("<nope>").into_response();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let h = res.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], super::CSP.as_str());
        let res = super::PageError::SignedOut { secure: true }.into_response();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[header::LOCATION], "/login");
        let cookie = res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap_or_default();
        assert!(
            cookie.starts_with("berth_session=;") && cookie.contains("Max-Age=0"),
            "{cookie}"
        );
        assert_eq!(
            super::PageError::unreadable(StatusCode::PAYLOAD_TOO_LARGE).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            super::PageError::unreadable(StatusCode::INTERNAL_SERVER_ERROR).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_csp_allows_exactly_the_copy_script() {
        use data_encoding::BASE64;
        use ring::digest::{digest, SHA256};
        let hash = BASE64.encode(digest(&SHA256, super::COPY_SCRIPT.as_bytes()).as_ref());
        assert!(super::CSP.contains(&format!("script-src 'sha256-{hash}';")));
        assert!(super::CSP.starts_with("default-src 'none';"));
        assert!(
            !super::CSP.contains("unsafe-eval")
                && !super::CSP.contains("script-src 'unsafe-inline'")
        );
    }
}
