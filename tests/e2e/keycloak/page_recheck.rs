//! The sign-in page re-validates its user with the real Keycloak: before every
//! token it mints (a user disabled a moment after signing in gets none, even
//! within the window), and at most every `revalidate` while the page session
//! lives (a page view inside the window asks Keycloak nothing; one after it
//! signs a disabled user out). A user still enabled keeps the session across
//! checks, and mints.

use std::thread;
use std::time::Instant;

use super::failures::{request, sign_in_until_callback, Resp};
use super::fixture::{self, keycloak};
use super::{start_berth, REVALIDATE};
use crate::components::Berth;

const USER: &str = "judy";

/// Signs `USER` in by hand; returns the session cookie and when it was made.
fn sign_in(berth: &Berth) -> ((String, String), Instant) {
    let (callback, flow) = sign_in_until_callback(berth, USER);
    let done = request(&callback, &[flow], None);
    assert_eq!(done.status, 303, "callback: {}", done.body);
    let session = done
        .cookies
        .into_iter()
        .find(|(k, v)| k == "berth_session" && !v.is_empty())
        .expect("a session cookie");
    (session, Instant::now())
}

fn page(berth: &Berth, session: &(String, String)) -> Resp {
    request(
        &format!("{}/login", berth.url),
        std::slice::from_ref(session),
        None,
    )
}

fn signed_in(r: &Resp) -> bool {
    r.status == 200 && r.body.contains("id=\"create-token\"")
}

fn csrf(r: &Resp) -> String {
    r.body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("a csrf field on the token page")
        .to_owned()
}

fn mint(berth: &Berth, session: &(String, String), csrf: &str) -> Resp {
    request(
        &format!("{}/login/tokens", berth.url),
        std::slice::from_ref(session),
        Some(&[
            ("csrf", csrf),
            ("access", "pull"),
            ("expires", "1"),
            ("description", "recheck"),
        ]),
    )
}

#[test]
fn keycloak_sign_in_page_rechecks_the_user_before_minting_and_every_window() {
    let Some(kc) = keycloak("keycloak-page-recheck") else {
        return;
    };
    let _kc = fixture::shared();
    let berth = start_berth(kc);
    struct Enable<'a>(&'a fixture::Keycloak);
    impl Drop for Enable<'_> {
        fn drop(&mut self) {
            self.0.set_enabled(USER, true);
        }
    }
    let _enable = Enable(kc);

    // Disabled right after signing in: page views inside the window are
    // answered from the session, but no token is minted.
    let (session, at) = sign_in(&berth);
    let r = page(&berth, &session);
    assert!(signed_in(&r), "token page after sign-in: {}", r.body);
    let token = csrf(&r);
    kc.set_enabled(USER, false);
    let r = page(&berth, &session);
    if at.elapsed() < REVALIDATE / 2 {
        assert!(
            signed_in(&r),
            "inside the window the page does not ask Keycloak: {}",
            r.body
        );
    } else {
        eprintln!("note: slow machine, the window passed before the in-window view");
    }
    let r = mint(&berth, &session, &token);
    assert!(
        !r.body.contains("berth_oidc_") && !r.cookies.iter().any(|(k, _)| k == "berth_minted"),
        "a token minted for a user Keycloak disabled: {}",
        r.body
    );
    assert_eq!(
        (r.status, r.location.as_str()),
        (303, "/login"),
        "minting for a disabled user signs the page out: {}\n{}",
        r.body,
        berth.log_tail(20)
    );
    assert!(
        !signed_in(&page(&berth, &session)),
        "the session ended with the refused check"
    );
    eprintln!("ok: no token for a user disabled after signing in");

    // Enabled: the session outlives a window (re-checked, not ended) and mints.
    kc.set_enabled(USER, true);
    let (session, _) = sign_in(&berth);
    thread::sleep(REVALIDATE + std::time::Duration::from_secs(1));
    let r = page(&berth, &session);
    assert!(signed_in(&r), "re-checked and still enabled: {}", r.body);
    let r = mint(&berth, &session, &csrf(&r));
    assert_eq!(
        (r.status, r.location.as_str()),
        (303, "/login"),
        "an enabled user mints, then is sent to the page: {}\n{}",
        r.body,
        berth.log_tail(20)
    );
    let minted = r
        .cookies
        .iter()
        .find(|(k, v)| k == "berth_minted" && !v.is_empty())
        .cloned()
        .expect("the minted token's one-shot cookie");
    let shown = request(
        &format!("{}/login", berth.url),
        &[session.clone(), minted],
        None,
    );
    assert!(
        shown.status == 200 && shown.body.contains("berth_oidc_"),
        "the page after minting shows the token: {} {}",
        shown.status,
        shown.body
    );
    eprintln!("ok: the session lives across re-checks and mints");

    // Disabled while the page session lives: the first view after the window
    // signs the browser out.
    kc.set_enabled(USER, false);
    thread::sleep(REVALIDATE + std::time::Duration::from_secs(1));
    let r = page(&berth, &session);
    assert!(
        !signed_in(&r) && r.body.contains("sign-in-keycloak"),
        "a disabled user's page after the window: {}",
        r.body
    );
    eprintln!("ok: a disabled user's page session ends within the window");
}
