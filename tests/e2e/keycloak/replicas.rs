//! The sign-in page across replicas: a browser starts signing in on one berth
//! and Keycloak sends it back to another that shares the database and keys (as
//! behind a load balancer without sticky sessions). The second finishes the
//! sign-in, the first then knows the browser, a token minted on the page works
//! on both, and signing out on one signs out on both.

use crate::components::Berth;

use super::fixture;
use super::{policies, start_berth, webdriver};

#[test]
fn keycloak_browser_sign_in_moves_between_replicas() {
    let test = "keycloak-browser-replicas";
    let Some(kc) = super::browser_test(test, false) else {
        return;
    };
    let _kc = fixture::shared();
    let a = start_berth(kc);
    // Replica b: a's configuration, database and keys; its public URL is a's,
    // so the provider sends browsers that start on b back to a.
    let shared = |key: &str| {
        a.setting(key)
            .unwrap_or_else(|| panic!("berth a has no {key}"))
            .to_owned()
    };
    let b = Berth::start_with_env(
        &policies(),
        &[
            ("BERTH_CONFIG", shared("BERTH_CONFIG")),
            ("BERTH_DATABASE", shared("BERTH_DATABASE")),
            ("BERTH_KEYS_DIR", shared("BERTH_KEYS_DIR")),
            ("BERTH_PUBLIC_URL", a.url.clone()),
        ],
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let browser = webdriver::Browser::start(dir.path());
    let name = browser.keycloak_sign_in(&b.url, "frank", &super::kc_password("frank"));
    assert_eq!(name, "frank", "{}", browser.page_source());
    assert!(
        browser.current_url().starts_with(&a.url),
        "the sign-in ended on {} instead of berth a",
        browser.current_url()
    );

    // b knows the browser now (its forms post to the public URL, a's).
    browser.goto(&format!("{}/login", b.url));
    let name = browser.must_find("strong#username", "b's token page with a's session");
    assert_eq!(browser.text(&name), "frank", "{}", browser.page_source());
    // A token minted on a works on both.
    browser.goto(&format!("{}/login", a.url));
    let create = browser.must_find("#create-token", "a's token page");
    browser.click(&create);
    let minted = browser.must_find("#new-token", "the token minted on a");
    let token = browser.text(&minted).trim().to_owned();
    let scope = ["repository:team-a/frank:pull"];
    for (which, berth) in [("a", &a), ("b", &b)] {
        let (status, body) = berth.get_token(Some(("frank", &token)), &scope);
        assert_eq!(status, 200, "token minted on a, used on {which}: {body}");
    }

    // Signed out on a: b no longer knows the browser either.
    browser.goto(&format!("{}/login", a.url));
    let logout = browser.must_find("#sign-out", "a's sign-out button");
    browser.click(&logout);
    browser.must_find("#sign-in-keycloak", "a's sign-in page after signing out");
    browser.goto(&format!("{}/login", b.url));
    browser.must_find(
        "#sign-in-keycloak",
        "b's sign-in page after signing out on a",
    );
}
