//! What must be refused: forged sign-in callbacks (wrong or replayed state, a
//! callback from another browser, a code without its PKCE verifier) against the
//! real Keycloak, and a broken identity provider (garbage answers, hanging).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::faulty::{Fault, FaultyIdp};
use super::fixture::{self, keycloak};
use super::{kc_password, start_berth, start_berth_for, LOCAL_PASSWORD, LOCAL_USER};
use crate::components::{rt, Berth};

pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) location: String,
    pub(super) cookies: Vec<(String, String)>,
    pub(super) body: String,
}

pub(super) fn request(
    url: &str,
    cookies: &[(String, String)],
    form: Option<&[(&str, &str)]>,
) -> Resp {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let mut req = match form {
            Some(f) => client.post(url).form(f),
            None => client.get(url),
        };
        if !cookies.is_empty() {
            let header = cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header("Cookie", header);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let body = resp.text().await.unwrap_or_default();
        Resp {
            status,
            location,
            cookies,
            body,
        }
    })
}

/// A sign-in driven by hand up to the callback: returns the callback URL the
/// provider sent the browser to, and berth's flow cookie.
pub(super) fn sign_in_until_callback(berth: &Berth, user: &str) -> (String, (String, String)) {
    let start = request(&format!("{}/login/start/keycloak", berth.url), &[], None);
    assert_eq!(start.status, 303, "start: {}", start.body);
    let flow = start
        .cookies
        .iter()
        .find(|(k, _)| k == "berth_login_flow")
        .cloned()
        .expect("flow cookie");
    let form = request(&start.location, &[], None);
    assert_eq!(form.status, 200, "Keycloak login page: {}", form.body);
    let action = form
        .body
        .split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("login form action")
        .replace("&amp;", "&");
    let password = kc_password(user);
    let posted = request(
        &action,
        &form.cookies,
        Some(&[
            ("username", user),
            ("password", &password),
            ("credentialId", ""),
        ]),
    );
    assert_eq!(posted.status, 302, "Keycloak login: {}", posted.body);
    assert!(
        posted
            .location
            .starts_with(&format!("{}/login/callback?", berth.url)),
        "Keycloak should send the browser to berth's callback: {}",
        posted.location
    );
    (posted.location, flow)
}

fn query(url: &str, key: &str) -> String {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

#[track_caller]
fn refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 400, "{what} should be refused: {}", r.body);
    assert!(
        !r.cookies
            .iter()
            .any(|(k, v)| k == "berth_session" && !v.is_empty()),
        "{what}: no session may be created"
    );
    eprintln!("ok: {what} refused");
}

#[test]
fn keycloak_sign_in_callback_refuses_forged_replayed_and_foreign_callbacks() {
    let Some(kc) = keycloak("keycloak-callback") else {
        return;
    };
    let _kc = fixture::shared();
    let berth = start_berth(kc);

    // The callback arrives in a browser that did not start the flow, or in
    // one that started another sign-in.
    let (callback, flow) = sign_in_until_callback(&berth, "heidi");
    refused(
        &request(&callback, &[], None),
        "a callback without the flow cookie",
    );
    let other = request(&format!("{}/login/start/keycloak", berth.url), &[], None);
    let other_flow = other
        .cookies
        .iter()
        .find(|(k, _)| k == "berth_login_flow")
        .cloned()
        .expect("another flow cookie");
    refused(
        &request(&callback, &[other_flow], None),
        "a callback with another sign-in's flow cookie",
    );
    // Nothing of the flow is kept by berth, so a stranger holding the callback
    // URL cannot spend the browser's sign-in: it still finishes.
    let good = request(&callback, &[flow], None);
    assert_eq!(
        good.status, 303,
        "the browser that started the sign-in finishes it: {}",
        good.body
    );

    // Wrong state.
    let (callback, flow) = sign_in_until_callback(&berth, "heidi");
    let code = query(&callback, "code");
    let forged = format!("{}/login/callback?state=forged&code={code}", berth.url);
    refused(
        &request(&forged, std::slice::from_ref(&flow), None),
        "a callback with a state berth never issued",
    );

    // A good callback signs in once; replaying it is refused.
    let good = request(&callback, std::slice::from_ref(&flow), None);
    assert_eq!(good.status, 303, "the real callback: {}", good.body);
    assert!(
        good.cookies
            .iter()
            .any(|(k, v)| k == "berth_session" && !v.is_empty()),
        "the real callback should set a session"
    );
    refused(&request(&callback, &[flow], None), "a replayed callback");

    // A code is useless without the PKCE verifier only berth holds.
    let (callback, _) = sign_in_until_callback(&berth, "heidi");
    let (status, body) = kc.token(&[
        ("grant_type", "authorization_code"),
        ("client_id", fixture::CLIENT_ID),
        ("client_secret", fixture::CLIENT_SECRET),
        ("code", &query(&callback, "code")),
        ("redirect_uri", &format!("{}/login/callback", berth.url)),
    ]);
    assert_eq!(
        status, 400,
        "Keycloak must refuse the code without its PKCE verifier: {body}"
    );
    assert_eq!(body["error"], "invalid_grant", "{body}");
    eprintln!("ok: code without PKCE verifier refused by Keycloak: {body}");

    // Keycloak's `admin` may not sign in: the name is berth's local admin.
    let (callback, flow) = sign_in_until_callback(&berth, "admin");
    let r = request(&callback, &[flow], None);
    assert_eq!(
        r.status,
        403,
        "sign-in as a local account's name: {} {:?}\n{}",
        r.body,
        r.location,
        berth.log_tail(30)
    );
    assert!(
        !r.cookies
            .iter()
            .any(|(k, v)| k == "berth_session" && !v.is_empty()),
        "no session for a name clash"
    );
    eprintln!("ok: sign-in with a local account's name refused");
}

fn unsigned_jwt(issuer: &str) -> String {
    use data_encoding::BASE64URL_NOPAD as B;
    let h = B.encode(br#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
    let p = B.encode(
        serde_json::json!({"iss": issuer, "sub": "x", "aud": "berth", "exp": 4_102_444_800u64,
            "preferred_username": "alice"})
        .to_string()
        .as_bytes(),
    );
    format!("{h}.{p}.{}", B.encode(&[7u8; 256]))
}

#[test]
fn broken_identity_provider_gives_503_never_a_login() {
    for fault in [Fault::Garbage, Fault::Slow] {
        let idp = FaultyIdp::start(fault);
        // Shorter than the test client's own 10 s timeout.
        let berth = start_berth_for(&idp.issuer, Duration::from_secs(3), "");
        let scope = ["repository:team-a/app:pull"];
        for (what, password) in [
            ("password", "alice-pw-1".to_owned()),
            ("token as password", unsigned_jwt(&idp.issuer)),
        ] {
            let t = Instant::now();
            let (status, body): (u16, Value) = berth.get_token(Some(("alice", &password)), &scope);
            let took = t.elapsed();
            assert_eq!(
                status,
                503,
                "{fault:?} provider, {what}: expected 503, got {status}: {body}\n{}",
                berth.log_tail(20)
            );
            assert!(
                body.to_string().contains("identity provider"),
                "{fault:?}, {what}: the error should name the identity provider: {body}"
            );
            assert!(
                took < Duration::from_secs(8),
                "{fault:?}, {what}: answered after {took:?}"
            );
            eprintln!("ok: {fault:?} provider, {what}: 503 after {took:?}");
        }
        let t = Instant::now();
        let (status, body) = berth.get_token(
            Some((LOCAL_USER, LOCAL_PASSWORD)),
            &[&format!("repository:{LOCAL_USER}/app:pull")],
        );
        assert_eq!(
            status, 200,
            "local user beside a {fault:?} provider: {body}"
        );
        eprintln!("ok: local user unaffected ({:?})", t.elapsed());
    }
}
