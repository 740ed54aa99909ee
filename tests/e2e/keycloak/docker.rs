//! docker against a Keycloak-federated berth: a password login that stops
//! working once Keycloak disables the user, and a token minted through the
//! browser sign-in used for `docker login`.

use std::thread;
use std::time::{Duration, Instant};

use super::fixture::{self, keycloak};
use super::webdriver;
use super::{docker_tools, expect_status, kc_password, stack, REVALIDATE};
use crate::components::http_get;
use crate::{docker_config, docker_load_image, docker_login, DOCKER_TIMEOUT};

#[test]
fn keycloak_docker_login_then_disabled_in_keycloak_loses_access() {
    if !docker_tools("keycloak-disable") {
        return;
    }
    let Some(kc) = keycloak("keycloak-disable") else {
        return;
    };
    let _kc = fixture::shared();
    let s = stack(kc, true);
    let d = s.dockerd.as_ref().expect("dockerd");
    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).expect("docker config dir");
    let own = docker_load_image(&s, d, &cfg, "team-a/erin:v1", "keycloak disable image");

    s.expect_ok(
        &docker_login(&s, d, &cfg, "erin", &kc_password("erin")),
        "docker login as erin (Keycloak password)",
    );
    let (text, conf) = docker_config(&cfg);
    let idt = conf["auths"][&s.registry.host]["identitytoken"]
        .as_str()
        .unwrap_or_default();
    assert!(
        idt.starts_with("oidc."),
        "docker should hold a federated identity token, not the password: {text}"
    );
    assert!(
        !text.contains(&kc_password("erin")),
        "password on disk: {text}"
    );
    let out = d.docker(&cfg, &["push", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker push team-a/erin as erin");
    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker pull before erin is disabled");

    kc.set_enabled("erin", false);
    let disabled = Instant::now();
    thread::sleep(REVALIDATE + Duration::from_secs(1));
    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_denied(&out, "docker pull by erin after Keycloak disabled her");
    eprintln!(
        "erin lost access {:?} after being disabled",
        disabled.elapsed()
    );
    expect_status(
        &s,
        s.berth.get_token(
            Some(("erin", &kc_password("erin"))),
            &["repository:team-a/erin:pull"],
        ),
        401,
        "erin's password after she was disabled",
    );
    kc.set_enabled("erin", true);
}

#[test]
fn keycloak_browser_sign_in_mints_token_that_works_for_docker_login() {
    let Some(kc) = super::browser_test("keycloak-browser", true) else {
        return;
    };
    let _kc = fixture::shared();
    let s = stack(kc, true);
    let d = s.dockerd.as_ref().expect("dockerd");

    // A callback that berth did not start is refused.
    let (status, page) = http_get(
        &format!("{}/login/callback?state=forged&code=abc", s.berth.url),
        None,
    )
    .expect("berth reachable");
    assert_eq!(status, 400, "callback with an unknown state: {page}");

    let b = webdriver::Browser::start(&s.path("browser"));
    let name = b.keycloak_sign_in(&s.berth.url, "frank", &kc_password("frank"));
    assert_eq!(name, "frank", "{}", b.page_source());
    let create = b.must_find("#create-token", "berth's token page");
    b.click(&create);
    let minted = b.must_find("#new-token", "the new token");
    let token = b.text(&minted).trim().to_owned();
    assert!(
        token.starts_with("berth_oidc_"),
        "token on the page: {token:?}"
    );
    let cmd = b.must_find("#docker-login", "the docker login command");
    assert!(
        b.text(&cmd).contains("docker login -u frank"),
        "{}",
        b.text(&cmd)
    );
    eprintln!("ok: signed in as frank in Chromium and minted a token");

    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).expect("docker config dir");
    let own = docker_load_image(&s, d, &cfg, "team-a/frank:v1", "keycloak browser image");
    s.expect_ok(
        &docker_login(&s, d, &cfg, "frank", &token),
        "docker login as frank with the sign-in page token",
    );
    let out = d.docker(&cfg, &["push", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker push team-a/frank with the token");
    let other = s.image("team-b/frank:v1");
    let out = d.docker(&cfg, &["tag", &own, &other], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker tag");
    let out = d.docker(&cfg, &["push", &other], None, DOCKER_TIMEOUT);
    s.expect_denied(&out, "docker push team-b/frank (not frank's group)");

    // Revoked on the page: the token stops working.
    b.goto(&format!("{}/login", s.berth.url));
    let revoke = b.must_find("#token-list button", "the token list");
    b.click(&revoke);
    let confirm = b.must_find("#confirm-revoke", "the revoke confirmation");
    b.click(&confirm);
    b.must_find("#no-tokens", "the empty token list after revoking");
    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_denied(&out, "docker pull with the revoked token");

    // A token whose owner is then disabled in Keycloak dies within the window.
    let create = b.must_find("#create-token", "berth's token page");
    b.click(&create);
    let minted = b.must_find("#new-token", "the second token");
    let second = b.text(&minted).trim().to_owned();
    let scope = ["repository:team-a/frank:pull"];
    expect_status(
        &s,
        s.berth.get_token(Some(("frank", &second)), &scope),
        200,
        "frank's second token",
    );
    kc.set_enabled("frank", false);
    thread::sleep(REVALIDATE + Duration::from_secs(1));
    expect_status(
        &s,
        s.berth.get_token(Some(("frank", &second)), &scope),
        401,
        "frank's token after Keycloak disabled frank",
    );
    kc.set_enabled("frank", true);
}
