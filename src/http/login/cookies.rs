//! The sign-in pages' cookies, read and written through axum-extra's cookie
//! jars: every cookie is `HttpOnly`, scoped to `/login`, `SameSite=Lax` and
//! `Secure` whenever berth's public URL is https.
//!
//! Three cookies: the flow cookie of a sign-in in progress (sealed by
//! `authn::oidc::browser`, opaque here), the page session's id, and the one-shot
//! cookie that carries a token just minted across the redirect to the page that
//! shows it (post/redirect/get). That token is encrypted and authenticated
//! (AES-256-GCM, axum-extra's private jar) under a key derived from the page
//! session's id, which the database holds only as a hash: the cookie opens only
//! with the session it was minted in, only within [`MINTED_TTL`], and the page
//! that shows the token deletes it. The token is therefore never stored on the
//! server, and a refresh of the page finds no token to show and mints none.

use std::time::Duration;

use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, CookieJar, Key, PrivateCookieJar, SameSite};
use ring::digest::{digest, SHA512};
use secrecy::{ExposeSecret, SecretString};

/// The page session's id.
pub const SESSION: &str = "berth_session";
/// A sign-in in progress (sealed flow state).
pub const FLOW: &str = "berth_login_flow";
/// A token minted a moment ago, on its way to the page that shows it once.
pub const MINTED: &str = "berth_minted";
/// How long a minted token waits for its page.
pub const MINTED_TTL: Duration = Duration::from_secs(120);
/// Context of the minted cookie's key derivation.
const MINTED_KEY_CONTEXT: &[u8] = b"berth sign-in minted token v1\0";

/// A `/login` cookie with the common attributes.
pub fn build(
    name: &'static str,
    value: String,
    max_age: Duration,
    secure: bool,
) -> Cookie<'static> {
    let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX / 4);
    Cookie::build((name, value))
        .path("/login")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(time::Duration::seconds(secs))
        .build()
}

/// The cookie that deletes `name` (same path and attributes, expired).
pub fn removal(name: &'static str, secure: bool) -> Cookie<'static> {
    let mut c = build(name, String::new(), Duration::ZERO, secure);
    c.make_removal();
    c
}

/// The value of a plain cookie, if the browser sent it non-empty.
pub fn value(headers: &HeaderMap, name: &str) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

fn minted_key(session_id: &str) -> Option<Key> {
    let material = digest(
        &SHA512,
        &[MINTED_KEY_CONTEXT, session_id.as_bytes()].concat(),
    );
    Key::try_from(material.as_ref()).ok()
}

/// A jar that sets the one-shot cookie carrying `token`, minted at `now` in the
/// page session `session_id`.
pub fn put_minted(
    session_id: &str,
    token: &SecretString,
    now: i64,
    secure: bool,
) -> Option<PrivateCookieJar> {
    let key = minted_key(session_id)?;
    let expires = now + i64::try_from(MINTED_TTL.as_secs()).unwrap_or(120);
    let value = format!("{expires}.{}", token.expose_secret());
    let mut cookie = build(MINTED, value, MINTED_TTL, secure);
    // Sent back only on berth's own pages, never on a navigation from elsewhere.
    cookie.set_same_site(SameSite::Strict);
    Some(PrivateCookieJar::new(key).add(cookie))
}

/// Takes the token the one-shot cookie carries, if it opens under this page
/// session and has not expired; the returned jar deletes the cookie either way.
pub fn take_minted(
    headers: &HeaderMap,
    session_id: &str,
    now: i64,
    secure: bool,
) -> (Option<CookieJar>, Option<SecretString>) {
    if CookieJar::from_headers(headers).get(MINTED).is_none() {
        return (None, None);
    }
    let delete = Some(CookieJar::new().add(removal(MINTED, secure)));
    let Some(key) = minted_key(session_id) else {
        return (delete, None);
    };
    let token = PrivateCookieJar::from_headers(headers, key)
        .get(MINTED)
        .and_then(|c| {
            let (expires, token) = c.value().split_once('.')?;
            let expires: i64 = expires.parse().ok()?;
            (now < expires).then(|| SecretString::from(token.to_owned()))
        });
    (delete, token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;

    fn request_with(set_cookie: &[String]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let pairs: Vec<&str> = set_cookie
            .iter()
            .filter_map(|c| c.split(';').next())
            .collect();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).unwrap(),
        );
        h
    }

    fn set_cookies(jar: PrivateCookieJar) -> Vec<String> {
        let res = (jar, "").into_response();
        res.headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn minted_token_opens_only_in_its_session_and_in_time() {
        let token = SecretString::from("berth_oidc_x".to_owned());
        let jar = put_minted("session-one-0123456789", &token, 1_000, true).unwrap();
        let set = set_cookies(jar);
        assert_eq!(set.len(), 1);
        assert!(!set[0].contains("berth_oidc_x"), "sealed: {}", set[0]);
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/login",
            "Max-Age=120",
        ] {
            assert!(set[0].contains(attr), "{attr} in {}", set[0]);
        }
        let h = request_with(&set);
        let (del, got) = take_minted(&h, "session-one-0123456789", 1_010, true);
        assert_eq!(got.unwrap().expose_secret(), "berth_oidc_x");
        assert!(del.is_some());
        let (del, got) = take_minted(&h, "session-two-0123456789", 1_010, true);
        assert!(got.is_none() && del.is_some(), "another session's cookie");
        let (_, got) = take_minted(&h, "session-one-0123456789", 1_120, true);
        assert!(got.is_none(), "expired");
        let (del, got) = take_minted(&HeaderMap::new(), "session-one-0123456789", 1_010, true);
        assert!(got.is_none() && del.is_none());
    }
}
