//! The browser sign-in at `/login`: authorization code flow with PKCE at the
//! identity provider, then a page that mints, lists and revokes the user's tokens
//! for `docker login`. This file holds the routes and their thin handlers;
//! cookies, forms, HTML and responses live in the submodules.
//!
//! HTTP-side invariants: cookies are `HttpOnly`, `SameSite=Lax`, scoped to
//! `/login`, and `Secure` whenever berth's public URL is https; every POST carries
//! the session's CSRF token (compared in constant time) and, when the browser
//! sends `Origin`, it must be berth's own; pages are `no-store`, not framable, and
//! send no referrer to other sites (`same-origin`: with `no-referrer`, browsers
//! send `Origin: null` on form posts). Every POST answers with a redirect
//! (post/redirect/get), so reloading a page never re-sends a form: a token
//! minted reaches its page in a one-shot sealed cookie (see [`cookies`]).
//! Revoking asks for confirmation first. The flow's checks (state, nonce, PKCE)
//! are `authn::oidc`'s.

mod access_view;
mod cookies;
mod forms;
mod pages;
mod response;
mod token_page;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::{CookieJar, Form, FormRejection, Query, QueryRejection};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::authn::oidc::browser::{BrowserSession, PENDING_TTL, SESSION_MAX};
use crate::authn::oidc::pat::Owner;
use crate::authn::oidc::{NameConflict, Oidc, OidcError};
use crate::policy::{access, Identity, Kind};
use crate::state::AppState;
use access_view::ServiceAccess;
use forms::Notice;
use response::{html, see_other, PageError};
use token_page::{Registry, TokenPage};

/// The `/login` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(page))
        .route("/login/start/{provider}", get(start))
        .route("/login/callback", get(callback))
        .route("/login/tokens", post(create))
        .route("/login/tokens/revoke", post(revoke))
        .route("/login/logout", post(logout))
        .layer(DefaultBodyLimit::max(forms::MAX_FORM))
}

type PageResult = Result<Response, PageError>;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

fn oidc(state: &AppState) -> Result<Arc<Oidc>, PageError> {
    state.auth.oidc().cloned().ok_or_else(|| {
        PageError::problem(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "berth has no [[oidc]] provider configured, so there is no browser sign-in.",
        )
    })
}

async fn session(oidc: &Oidc, headers: &HeaderMap) -> Option<(String, Arc<BrowserSession>)> {
    let id = cookies::value(headers, cookies::SESSION)?;
    let s = oidc.browser_session(&id).await?;
    Some((id, s))
}

/// Each service's registry address for the login command.
fn registries(state: &AppState) -> Vec<Registry> {
    state
        .config
        .services
        .iter()
        .map(|s| Registry {
            service: s.name.clone(),
            address: s.registry_url.clone().unwrap_or_else(|| s.name.clone()),
        })
        .collect()
}

/// What the signed-in user may do on each registry under the live policy.
fn access_of(state: &AppState, s: &BrowserSession) -> Vec<ServiceAccess> {
    let policy = state.policy();
    let identity = Identity {
        subject: s.user.username.clone(),
        kind: Kind::Federated,
        groups: s.user.groups.clone(),
        via: "oidc",
    };
    state
        .config
        .services
        .iter()
        .map(|svc| ServiceAccess {
            service: svc.name.clone(),
            entries: access::access_for(&policy, &identity, &svc.name),
        })
        .collect()
}

/// `GET /login`: the token page when signed in, else the sign-in choices.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<forms::PageQuery>, QueryRejection>,
) -> PageResult {
    let oidc = oidc(&state)?;
    let Some((id, s)) = session(&oidc, &headers).await else {
        return Ok(html(
            StatusCode::OK,
            pages::sign_in(&oidc.login_providers(), None),
        ));
    };
    // An unknown notice code is a stale or made-up link: show none.
    let notice = query.ok().and_then(|Query(q)| q.notice);
    let (delete, minted) = cookies::take_minted(&headers, &id, now(), secure(&state));
    let tokens = oidc
        .list_tokens(&s.provider.cfg.name, &s.user.subject)
        .await?;
    let registries = registries(&state);
    let access = access_of(&state, &s);
    let body = token_page::render(&TokenPage {
        session: &s,
        access: &access,
        tokens: &tokens,
        minted,
        notice,
        registries: &registries,
        now: now(),
    });
    Ok((delete, html(StatusCode::OK, body)).into_response())
}

/// `GET /login/start/{provider}`: redirect to the provider, with a flow cookie
/// that binds the callback to this browser. Writes nothing: anyone may call it,
/// as often as they like, before authenticating (the flow is in the cookie).
pub async fn start(State(state): State<AppState>, Path(provider): Path<String>) -> PageResult {
    let oidc = oidc(&state)?;
    let redirect_uri = format!("{}/login/callback", state.config.public_url);
    let started = oidc.begin_login(&provider, &redirect_uri).await?;
    let flow = cookies::build(cookies::FLOW, started.cookie, PENDING_TTL, secure(&state));
    Ok((CookieJar::new().add(flow), see_other(&started.url)).into_response())
}

/// `GET /login/callback`: the provider sends the browser back with `code` and
/// `state` (or `error`).
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<forms::Callback>, QueryRejection>,
) -> PageResult {
    let oidc = oidc(&state)?;
    let secure = secure(&state);
    let clear_flow = CookieJar::new().add(cookies::removal(cookies::FLOW, secure));
    let Ok(Query(q)) = query else {
        return Err(PageError::sign_in_failed(
            "The callback's parameters are malformed.",
        ));
    };
    if let Some(err) = q.error {
        let shown: String = err.chars().take(60).collect();
        tracing::info!(error = %shown, "identity provider reported a sign-in error");
        let page = PageError::sign_in_failed(format!("The identity provider reported: {shown}."));
        return Ok((clear_flow, page).into_response());
    }
    let (Some(st), Some(code)) = (q.state, q.code) else {
        return Err(PageError::sign_in_failed(
            "The callback lacks state or code.",
        ));
    };
    let Some(flow) = cookies::value(&headers, cookies::FLOW) else {
        return Err(PageError::sign_in_failed(
            "This sign-in was not started in this browser (or it expired). Start again.",
        ));
    };
    let (id, session) = oidc.finish_login(&st, &flow, &code, now()).await?;
    if local_clash(&state, &oidc, &session.user.username).await {
        return Err(clash_refusal(&oidc, &id, &session.user.username).await);
    }
    let session = cookies::build(cookies::SESSION, id, SESSION_MAX, secure);
    Ok((clear_flow.add(session), see_other("/login")).into_response())
}

/// Whether `username` is a local account that a federated user may not shadow
/// (`name_conflict = "refuse"`): tokens minted for it would be refused anyway.
async fn local_clash(state: &AppState, oidc: &Oidc, username: &str) -> bool {
    if oidc.name_conflict() != NameConflict::Refuse {
        return false;
    }
    match crate::types::Username::clash_form(username) {
        // A database failure refuses too: better no session than a wrong one.
        Some(name) => !matches!(state.auth.store().find_user(&name).await, Ok(None)),
        None => false,
    }
}

/// Ends the page session of a federated user whose name is a local account.
async fn clash_refusal(oidc: &Oidc, id: &str, username: &str) -> PageError {
    oidc.end_browser_session(id).await;
    tracing::warn!(user = %username, "sign-in page refused: a local account has this name (name_conflict = \"refuse\")");
    PageError::problem(
        StatusCode::FORBIDDEN,
        "Sign-in refused",
        "A local berth account has the same name; ask the administrator.",
    )
}

/// Checks a POST: same origin, signed in, a readable form, the CSRF token.
/// Returns the session id and session, and the form.
async fn check_post<T>(
    state: &AppState,
    oidc: &Oidc,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
    csrf: impl Fn(&T) -> &str,
) -> Result<(String, Arc<BrowserSession>, T), PageError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .map(|o| o == origin_of(&state.config.public_url))
            .unwrap_or(false);
        if !ok {
            return Err(PageError::refused("Cross-origin form submission refused."));
        }
    }
    let Some((id, s)) = session(oidc, headers).await else {
        return Err(PageError::SignedOut {
            secure: secure(state),
        });
    };
    let Form(form) = form.map_err(|r| PageError::unreadable(r.status()))?;
    if !bool::from(csrf(&form).as_bytes().ct_eq(s.csrf.as_bytes())) {
        return Err(PageError::refused(
            "The form is stale or was not sent from this page. Reload and try again.",
        ));
    }
    Ok((id, s, form))
}

fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

/// `POST /login/tokens`: mint a token, then redirect to the page that shows it
/// once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<forms::Create>, FormRejection>,
) -> PageResult {
    let oidc = oidc(&state)?;
    let (id, _, form) = check_post(&state, &oidc, &headers, form, |f| &f.csrf).await?;
    let mut req = match form.request() {
        Ok(r) => r,
        Err(notice) => return Ok(see_other(&notice.location())),
    };
    req.limits = form.limits(&req.actions).map_err(not_created)?;
    // The user as the provider sees them now, not as at sign-in: one disabled
    // or logged out since gets no token, and the token carries today's groups.
    let Some(s) = oidc.revalidated_session(&id).await? else {
        return Err(PageError::SignedOut {
            secure: secure(&state),
        });
    };
    if local_clash(&state, &oidc, &s.user.username).await {
        return Err(clash_refusal(&oidc, &id, &s.user.username).await);
    }
    // Repository limits within the access of today's groups, as "Your access"
    // shows it.
    if let Some(l) = access_view::outside(&req.limits, &access_of(&state, &s)) {
        return Err(not_created(format!(
            "{:?} is outside your access: write a repository name or pattern inside one that \"Your access\" lists",
            l.name()
        )));
    }
    let Some(idp) = s.idp_refresh.as_ref() else {
        return Ok(see_other(&Notice::NoOffline.location()));
    };
    let owner = Owner {
        provider: &s.provider,
        user: &s.user,
        idp_refresh: idp,
    };
    match oidc.mint_token(owner, req, now()).await {
        Ok((token, _)) => {
            let Some(jar) = cookies::put_minted(&id, &token, now(), secure(&state)) else {
                return Err(OidcError::Internal("cannot seal the minted token".into()).into());
            };
            Ok((jar, see_other("/login")).into_response())
        }
        Err(OidcError::Rejected(why)) => Err(PageError::problem(
            StatusCode::CONFLICT,
            "Token not created",
            format!("The token was not created: {why}."),
        )),
        Err(e) => Err(e.into()),
    }
}

/// 400 "Token not created", saying why.
fn not_created(why: String) -> PageError {
    PageError::problem(
        StatusCode::BAD_REQUEST,
        "Token not created",
        format!("The token was not created: {why}."),
    )
}

/// `POST /login/tokens/revoke`: without `confirm=yes`, the page that asks;
/// with it, revoke one of the user's tokens and say so.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<forms::Revoke>, FormRejection>,
) -> PageResult {
    let oidc = oidc(&state)?;
    let (_, s, form) = check_post(&state, &oidc, &headers, form, |f| &f.csrf).await?;
    let Some(id) = form.token_id() else {
        return Ok(see_other(&Notice::NoSuchToken.location()));
    };
    let (provider, subject) = (&s.provider.cfg.name, &s.user.subject);
    if !form.confirmed() {
        let tokens = oidc.list_tokens(provider, subject).await?;
        return Ok(match tokens.iter().find(|t| t.id == id) {
            Some(t) => html(StatusCode::OK, pages::confirm_revoke(&s.csrf, t)),
            None => see_other(&Notice::NoSuchToken.location()),
        });
    }
    let notice = if oidc.revoke_token(provider, subject, id).await? {
        Notice::Revoked
    } else {
        Notice::NoSuchToken
    };
    Ok(see_other(&notice.location()))
}

/// `POST /login/logout`: forget the browser session.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<forms::Plain>, FormRejection>,
) -> PageResult {
    let oidc = oidc(&state)?;
    let (id, _, _) = check_post(&state, &oidc, &headers, form, |f| &f.csrf).await?;
    oidc.end_browser_session(&id).await;
    let secure = secure(&state);
    let jar = CookieJar::new()
        .add(cookies::removal(cookies::SESSION, secure))
        .add(cookies::removal(cookies::MINTED, secure));
    Ok((jar, see_other("/login")).into_response())
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
