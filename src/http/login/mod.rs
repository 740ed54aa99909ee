//! The browser sign-in at `/login`: authorization code flow with PKCE at the
//! identity provider, then a page that mints, lists and revokes the user's tokens
//! for `docker login`.
//!
//! HTTP-side invariants: cookies are `HttpOnly`, `SameSite=Lax`, scoped to
//! `/login`, and `Secure` whenever berth's public URL is https; every POST carries
//! the session's CSRF token (compared in constant time) and, when the browser
//! sends `Origin`, it must be berth's own; pages are `no-store`, not framable, and
//! send no referrer to other sites (`same-origin`: with `no-referrer`, browsers
//! send `Origin: null` on form posts). The flow's checks (state, nonce, PKCE) are
//! `authn::oidc`'s.

mod pages;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::app::AppState;
use crate::authn::oidc::browser::BrowserSession;
use crate::authn::oidc::pat::{NewToken, Owner};
use crate::authn::oidc::{Oidc, OidcError};

const SESSION_COOKIE: &str = "berth_session";
const FLOW_COOKIE: &str = "berth_login_flow";
const MAX_FORM: usize = 4096;

/// The `/login` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(page))
        .route("/login/start/{provider}", get(start))
        .route("/login/callback", get(callback))
        .route("/login/tokens", post(create))
        .route("/login/tokens/revoke", post(revoke))
        .route("/login/logout", post(logout))
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
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

fn problem(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, pages::problem(title, text))
}

fn redirect(to: &str, cookies: &[String]) -> Response {
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
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    res
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

fn cookie(state: &AppState, name: &str, value: &str, max_age: u64) -> String {
    format!(
        "{name}={value}; Path=/login; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure(state) { "; Secure" } else { "" }
    )
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn oidc(state: &AppState) -> Result<&Arc<Oidc>, Box<Response>> {
    state.auth.oidc().ok_or_else(|| {
        Box::new(problem(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "berth has no [[oidc]] provider configured, so there is no browser sign-in.",
        ))
    })
}

async fn session(state: &AppState, headers: &HeaderMap) -> Option<(String, Arc<BrowserSession>)> {
    let id = read_cookie(headers, SESSION_COOKIE)?;
    let s = state.auth.oidc()?.browser_session(&id).await?;
    Some((id, s))
}

fn registry_host(state: &AppState) -> String {
    let name = &state.config.services[0].name;
    if name.contains('.') || name.contains(':') {
        name.clone()
    } else {
        "REGISTRY".to_owned()
    }
}

async fn render_tokens(
    state: &AppState,
    oidc: &Oidc,
    s: &BrowserSession,
    minted: Option<pages::Minted<'_>>,
    message: Option<&str>,
) -> Response {
    match oidc
        .list_tokens(&s.provider.cfg.name, &s.user.subject)
        .await
    {
        Ok(list) => html(
            StatusCode::OK,
            pages::tokens(s, &list, minted, message, now()),
        ),
        Err(e) => failure(state, e),
    }
}

fn failure(_state: &AppState, e: OidcError) -> Response {
    match e {
        OidcError::Rejected(why) => {
            tracing::info!(reason = %why, "sign-in refused");
            problem(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                &format!("The sign-in was refused: {why}."),
            )
        }
        OidcError::Token(why) => {
            tracing::warn!(reason = %why, "sign-in: provider token refused");
            problem(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The identity provider's answer did not verify. Start again.",
            )
        }
        OidcError::Unavailable(why) | OidcError::Config(why) => {
            tracing::error!(error = %why, "sign-in: identity provider unreachable");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Identity provider unreachable",
                "The identity provider is unreachable. Try again shortly.",
            )
        }
        OidcError::Store(e) => {
            tracing::error!(error = %e, "sign-in: database failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The database is unavailable. Try again shortly.",
            )
        }
        OidcError::Internal(e) => {
            tracing::error!(error = %e, "sign-in failed internally");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "Internal error.",
            )
        }
    }
}

/// `GET /login`: the token page when signed in, else the sign-in choices.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o.clone(),
        Err(r) => return *r,
    };
    match session(&state, &headers).await {
        Some((_, s)) => render_tokens(&state, &oidc, &s, None, None).await,
        None => html(
            StatusCode::OK,
            pages::sign_in(&oidc.login_providers(), None),
        ),
    }
}

/// `GET /login/start/{provider}`: redirect to the provider, with a flow cookie
/// that binds the callback to this browser. Writes nothing: anyone may call it,
/// as often as they like, before authenticating (the flow is in the cookie).
pub async fn start(State(state): State<AppState>, Path(provider): Path<String>) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o.clone(),
        Err(r) => return *r,
    };
    let redirect_uri = format!("{}/login/callback", state.config.public_url);
    match oidc.begin_login(&provider, &redirect_uri).await {
        Ok(started) => redirect(
            &started.url,
            &[cookie(
                &state,
                FLOW_COOKIE,
                &started.cookie,
                crate::authn::oidc::browser::PENDING_TTL.as_secs(),
            )],
        ),
        Err(e) => failure(&state, e),
    }
}

fn query_params(raw: Option<&str>) -> Vec<(String, String)> {
    let raw = raw.unwrap_or("");
    if raw.len() > 8192 {
        return Vec::new();
    }
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    let mut it = params.iter().filter(|(k, _)| k == key);
    let first = it.next().map(|(_, v)| v.as_str());
    // A repeated parameter is an attack or a bug; take neither.
    if it.next().is_some() {
        return None;
    }
    first
}

/// `GET /login/callback`: the provider sends the browser back with `code` and
/// `state` (or `error`).
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o.clone(),
        Err(r) => return *r,
    };
    let params = query_params(query.as_deref());
    let clear_flow = cookie(&state, FLOW_COOKIE, "", 0);
    if let Some(err) = param(&params, "error") {
        let shown: String = err.chars().take(60).collect();
        tracing::info!(error = %shown, "identity provider reported a sign-in error");
        let mut res = problem(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            &format!("The identity provider reported: {shown}."),
        );
        if let Ok(v) = HeaderValue::from_str(&clear_flow) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
        return res;
    }
    let (Some(st), Some(code)) = (param(&params, "state"), param(&params, "code")) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The callback lacks state or code.",
        );
    };
    let Some(flow) = read_cookie(&headers, FLOW_COOKIE).filter(|f| !f.is_empty()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This sign-in was not started in this browser (or it expired). Start again.",
        );
    };
    match oidc.finish_login(st, &flow, code, now()).await {
        Ok((id, session)) if local_clash(&state, &oidc, &session.user.username).await => {
            clash_refusal(&oidc, &id, &session.user.username).await
        }
        Ok((id, _)) => redirect(
            "/login",
            &[
                clear_flow,
                cookie(
                    &state,
                    SESSION_COOKIE,
                    &id,
                    crate::authn::oidc::browser::SESSION_MAX.as_secs(),
                ),
            ],
        ),
        Err(e) => failure(&state, e),
    }
}

/// A checked form POST.
struct Post {
    id: String,
    session: Arc<BrowserSession>,
    form: Vec<(String, String)>,
}

/// Whether `username` is a local account that a federated user may not shadow
/// (`name_conflict = "refuse"`): tokens minted for it would be refused anyway.
async fn local_clash(state: &AppState, oidc: &Oidc, username: &str) -> bool {
    if oidc.name_conflict() != crate::authn::oidc::NameConflict::Refuse {
        return false;
    }
    match crate::authn::Username::clash_form(username) {
        // A database failure refuses too: better no session than a wrong one.
        Some(name) => !matches!(state.auth.store().find_user(&name).await, Ok(None)),
        None => false,
    }
}

/// Ends the page session of a federated user whose name is a local account.
async fn clash_refusal(oidc: &Oidc, id: &str, username: &str) -> Response {
    oidc.end_browser_session(id).await;
    tracing::warn!(user = %username, "sign-in page refused: a local account has this name (name_conflict = \"refuse\")");
    problem(
        StatusCode::FORBIDDEN,
        "Sign-in refused",
        "A local berth account has the same name; ask the administrator.",
    )
}

/// Checks a POST: signed in, same origin, CSRF token.
async fn check_post(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Post, Box<Response>> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .map(|o| o == origin_of(&state.config.public_url))
            .unwrap_or(false);
        if !ok {
            return Err(Box::new(problem(
                StatusCode::FORBIDDEN,
                "Refused",
                "Cross-origin form submission refused.",
            )));
        }
    }
    let Some((id, s)) = session(state, headers).await else {
        return Err(Box::new(redirect("/login", &[])));
    };
    if body.len() > MAX_FORM {
        return Err(Box::new(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Refused",
            "Form too large.",
        )));
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let csrf = param(&form, "csrf").unwrap_or("");
    if !bool::from(csrf.as_bytes().ct_eq(s.csrf.as_bytes())) {
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "Refused",
            "The form is stale or was not sent from this page. Reload and try again.",
        )));
    }
    Ok(Post {
        id,
        session: s,
        form,
    })
}

fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// `POST /login/tokens`: mint a token and show it once.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o.clone(),
        Err(r) => return *r,
    };
    let (id, form) = match check_post(&state, &headers, &body).await {
        Ok(p) => (p.id, p.form),
        Err(r) => return *r,
    };
    // The user as the provider sees them now, not as at sign-in: one disabled
    // or logged out since gets no token, and the token carries today's groups.
    let s = match oidc.revalidated_session(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return redirect("/login", &[cookie(&state, SESSION_COOKIE, "", 0)]),
        Err(e) => return failure(&state, e),
    };
    if local_clash(&state, &oidc, &s.user.username).await {
        return clash_refusal(&oidc, &id, &s.user.username).await;
    }
    let actions: Vec<String> = match param(&form, "access") {
        Some("pull") => vec!["pull".into()],
        Some("pull,push") => vec!["pull".into(), "push".into()],
        Some("pull,push,delete") => vec!["pull".into(), "push".into(), "delete".into()],
        _ => return render_tokens(&state, &oidc, &s, None, Some("Choose the access.")).await,
    };
    let days: i64 = match param(&form, "expires").and_then(|d| d.parse().ok()) {
        Some(d @ (1 | 7 | 30 | 90)) => d,
        _ => return render_tokens(&state, &oidc, &s, None, Some("Choose an expiry.")).await,
    };
    let Some(idp) = s.idp_refresh.as_ref() else {
        return render_tokens(
            &state,
            &oidc,
            &s,
            None,
            Some("No offline session from the identity provider; tokens cannot be created."),
        )
        .await;
    };
    let req = NewToken {
        description: param(&form, "description").unwrap_or("").to_owned(),
        actions,
        ttl: days * 86_400,
    };
    let owner = Owner {
        provider: &s.provider,
        user: &s.user,
        idp_refresh: idp,
    };
    match oidc.mint_token(owner, req, now()).await {
        Ok((token, _)) => {
            let registry = registry_host(&state);
            let minted = pages::Minted {
                token: token.expose_secret(),
                registry: &registry,
            };
            render_tokens(&state, &oidc, &s, Some(minted), None).await
        }
        Err(OidcError::Rejected(why)) => render_tokens(&state, &oidc, &s, None, Some(&why)).await,
        Err(e) => failure(&state, e),
    }
}

/// `POST /login/tokens/revoke`: revoke one of the user's tokens.
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o.clone(),
        Err(r) => return *r,
    };
    let (s, form) = match check_post(&state, &headers, &body).await {
        Ok(p) => (p.session, p.form),
        Err(r) => return *r,
    };
    let Some(id) = param(&form, "id").and_then(|v| v.parse::<i64>().ok()) else {
        return render_tokens(&state, &oidc, &s, None, Some("No such token.")).await;
    };
    match oidc
        .revoke_token(&s.provider.cfg.name, &s.user.subject, id)
        .await
    {
        Ok(true) => redirect("/login", &[]),
        Ok(false) => render_tokens(&state, &oidc, &s, None, Some("No such token.")).await,
        Err(e) => failure(&state, e),
    }
}

/// `POST /login/logout`: forget the browser session.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let oidc = match oidc(&state) {
        Ok(o) => o.clone(),
        Err(r) => return *r,
    };
    let id = match check_post(&state, &headers, &body).await {
        Ok(p) => p.id,
        Err(r) => return *r,
    };
    oidc.end_browser_session(&id).await;
    redirect("/login", &[cookie(&state, SESSION_COOKIE, "", 0)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins() {
        assert_eq!(
            super::origin_of("https://auth.example.com/x"),
            "https://auth.example.com"
        );
        assert_eq!(
            super::origin_of("http://127.0.0.1:5001"),
            "http://127.0.0.1:5001"
        );
    }
}
