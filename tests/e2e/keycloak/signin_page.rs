//! The sign-in page as people use it, in headless Chromium with the real
//! Keycloak, at phone width (390 px) and at desktop width: no sideways scroll,
//! Keycloak's bookkeeping roles not shown as groups, a token shown once (a
//! reload shows it no more and mints no second one), a `docker login` command
//! that wraps only between words and works as printed against the real
//! registry through dockerd, a copy button that runs under the page's CSP, and
//! a revoke that asks first and says what it did, and a token limited to a
//! chosen repository (granting nothing else; a pattern outside the user's
//! access refused with the reason). Screenshots of every step go
//! to `target/signin-screenshots/` for a reviewer.
//!
//! The registry address on the page is the service's `registry_url`. The
//! harness picks the registry's port only after berth has started, so berth is
//! given the address of a plain TCP relay, opened first, that carries
//! connections to the real registry unchanged.

use std::io::copy;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fixture;
use super::webdriver::Browser;
use super::{kc_password, policies, start_berth_with, DOCUMENTED_GROUPS, IDP_TIMEOUT};
use crate::clients::LOGIN_TIMEOUT;
use crate::components::{granted, Stack, DOCKER_BIN, SERVICE};
use crate::{docker_load_image, DOCKER_TIMEOUT};

const USER: &str = "grace";
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);

/// Relays every connection to `listener` to `to`, byte for byte.
fn relay(listener: TcpListener, to: String) {
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let to = to.clone();
            thread::spawn(move || {
                let Ok(up) = TcpStream::connect(&to) else {
                    return;
                };
                let (Ok(mut c_in), Ok(mut u_out)) = (conn.try_clone(), up.try_clone()) else {
                    return;
                };
                thread::spawn(move || {
                    let _ = copy(&mut c_in, &mut u_out);
                    let _ = u_out.shutdown(Shutdown::Write);
                });
                let (mut u_in, mut c_out) = (up, conn);
                let _ = copy(&mut u_in, &mut c_out);
                let _ = c_out.shutdown(Shutdown::Write);
            });
        }
    });
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/signin-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn shot(b: &Browser, name: &str) {
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, b.screenshot()).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// The page scrolls sideways neither at the root nor in the body.
#[track_caller]
fn assert_fits(b: &Browser, what: &str) {
    let v = b.eval(
        "return [document.documentElement.scrollWidth, window.innerWidth, document.body.scrollWidth];",
        json!([]),
    );
    let (scroll, inner) = (
        v[0].as_u64().unwrap_or(u64::MAX),
        v[1].as_u64().unwrap_or(0),
    );
    assert!(
        scroll <= inner && v[2].as_u64().unwrap_or(u64::MAX) <= inner,
        "{what}: the page scrolls sideways (scrollWidth {scroll} > innerWidth {inner}): {v}"
    );
    eprintln!("ok: {what}: scrollWidth {scroll} <= innerWidth {inner}");
}

/// The words of the element `id` that the layout broke across lines (every
/// word of its text is checked).
fn broken_words(b: &Browser, id: &str) -> Value {
    let v = b.eval(
        "const el = document.getElementById(arguments[0]);
         const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
         const broken = []; let checked = 0; let t;
         while ((t = walk.nextNode())) {
           const re = /\\S+/g; let m;
           while ((m = re.exec(t.data))) {
             checked++;
             const r = document.createRange(); r.setStart(t, m.index); r.setEnd(t, m.index + m[0].length);
             const tops = new Set(Array.from(r.getClientRects()).map(x => Math.round(x.top)));
             if (tops.size > 1) broken.push(m[0]);
           }
         }
         return [broken, checked, el.textContent.split(/\\s+/).filter(w => w).length];",
        json!([id]),
    );
    assert_eq!(v[1], v[2], "every word of #{id} checked: {v}");
    assert!(
        v[1].as_u64().unwrap_or(0) >= 7,
        "#{id} holds the whole command: {v}"
    );
    v[0].clone()
}

fn token_rows(b: &Browser) -> u64 {
    b.eval(
        "return document.querySelectorAll('#token-list tr[id^=\"token-\"]').length;",
        json!([]),
    )
    .as_u64()
    .unwrap_or(0)
}

fn sign_in(b: &Browser, url: &str) {
    let name = b.keycloak_sign_in(url, USER, &kc_password(USER));
    assert_eq!(name, USER, "{}", b.page_source());
}

fn fill_create_form(b: &Browser, description: &str, repositories: &str) {
    let d = b.must_find("#description", "the create form");
    b.type_into(&d, description);
    if !repositories.is_empty() {
        let r = b.must_find("#repositories", "the create form");
        b.type_into(&r, repositories);
    }
    let create = b.must_find("#create-token", "the create form");
    b.click(&create);
}

/// Creates a token on the page, limited to `repositories` when not empty.
fn mint(b: &Browser, description: &str, repositories: &str) -> String {
    fill_create_form(b, description, repositories);
    let minted = b.must_find("#new-token", "the new token");
    let token = b.text(&minted).trim().to_owned();
    assert!(
        token.starts_with("berth_oidc_"),
        "token on the page: {token:?}"
    );
    assert!(
        b.current_url().ends_with("/login"),
        "after minting the browser is on /login (post/redirect/get): {}",
        b.current_url()
    );
    token
}

#[test]
fn keycloak_sign_in_page_at_phone_and_desktop_width() {
    let Some(kc) = super::browser_test("keycloak-signin-page", true) else {
        return;
    };
    let _kc = fixture::shared();
    let front = TcpListener::bind("127.0.0.1:0").expect("relay port");
    let address = front.local_addr().expect("relay address").to_string();
    let top = format!("[[service]]\nname = \"{SERVICE}\"\nregistry_url = \"{address}\"\n");
    let berth = start_berth_with(
        &kc.issuer(),
        IDP_TIMEOUT,
        &top,
        DOCUMENTED_GROUPS,
        &policies(),
    );
    let s = Stack::with_berth(true, berth, Instant::now());
    relay(front, s.registry.host.clone());
    let d = s.dockerd.as_ref().expect("dockerd");

    // Phone width.
    let b = Browser::start(&s.path("browser"));
    b.emulate_screen(PHONE.0, PHONE.1, true);
    sign_in(&b, &s.berth.url);
    let inner = b.eval("return window.innerWidth;", json!([]));
    assert_eq!(inner, json!(PHONE.0), "the phone-width window");
    let groups = b.text(&b.must_find("#groups", "the groups line"));
    assert!(groups.contains("team-a"), "groups: {groups}");
    for hidden in ["default-roles", "uma_authorization", "offline_access"] {
        assert!(
            !groups.contains(hidden),
            "{hidden} shown among the groups: {groups}"
        );
    }
    let access = b.text(&b.must_find("#access", "the Your access section"));
    assert!(
        access.contains("team-a/**") && access.contains("team-namespace"),
        "grace's access names team-a/** and the rule granting it: {access}"
    );
    assert!(
        !access.contains("registry-admins") && !access.contains("team-b"),
        "grace's access shows rules that do not apply to her: {access}"
    );
    assert_fits(&b, "phone: signed in");
    shot(&b, "phone-1-signed-in");

    let token = mint(&b, "phone laptop", "");
    assert_fits(&b, "phone: token shown");
    let cmd_el = b.must_find("#docker-login", "the docker login command");
    let cmd = b.text(&cmd_el).trim().to_owned();
    assert_eq!(
        cmd,
        format!("echo {token} | docker login -u {USER} --password-stdin {address}"),
        "the login command"
    );
    assert_eq!(
        broken_words(&b, "docker-login"),
        json!([]),
        "the command breaks mid-word at 390 px"
    );
    let copy = b.must_find("#copy-docker-login", "the copy button");
    let visible = b.eval(
        "return !document.getElementById('copy-docker-login').hidden;",
        json!([]),
    );
    assert_eq!(
        visible,
        json!(true),
        "the copy button's script did not run under the CSP"
    );
    b.click(&copy);
    let started = Instant::now();
    while b.text(&copy) == "Copy" && started.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(b.text(&copy), "Copy", "the copy button did nothing");
    shot(&b, "phone-2-token-shown");
    assert_eq!(token_rows(&b), 1, "one token listed");

    // A reload neither shows the token again nor mints another.
    b.refresh();
    b.must_find("#token-list", "the page after a reload");
    assert!(
        b.find("#new-token", Duration::from_millis(500)).is_none(),
        "the token is shown again after a reload"
    );
    assert_eq!(token_rows(&b), 1, "a reload minted a second token");
    assert!(
        !b.page_source().contains(&token),
        "the token is in the reloaded page"
    );
    shot(&b, "phone-3-after-reload");
    eprintln!("ok: a reload shows no token and mints none");

    // The command works as printed, against the real registry.
    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).expect("docker config dir");
    let own = docker_load_image(&s, d, &cfg, "team-a/grace:v1", "sign-in page image");
    let bin_dir = Path::new(DOCKER_BIN).parent().expect("docker's directory");
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(&cmd)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("DOCKER_HOST", &d.host)
        .env("DOCKER_CONFIG", &cfg)
        .env("HOME", &cfg)
        .env_remove("DOCKER_CONTEXT");
    s.expect_ok(
        &crate::common::proc::run(&mut sh, None, LOGIN_TIMEOUT),
        "the page's docker login command, run as printed",
    );
    let pushed = format!("{address}/team-a/grace:v1");
    s.expect_ok(
        &d.docker(&cfg, &["tag", &own, &pushed], None, DOCKER_TIMEOUT),
        "docker tag",
    );
    s.expect_ok(
        &d.docker(&cfg, &["push", &pushed], None, DOCKER_TIMEOUT),
        "docker push after the page's login command",
    );

    // Revoke asks first; cancel keeps the token, confirm revokes and says so.
    let revoke = b.must_find("#token-list button", "the revoke button");
    b.click(&revoke);
    b.must_find("#confirm-revoke", "the revoke confirmation");
    assert_fits(&b, "phone: revoke confirmation");
    shot(&b, "phone-4-revoke-confirmation");
    let cancel = b.must_find("#cancel-revoke", "the revoke confirmation");
    b.click(&cancel);
    b.must_find("#token-list", "the page after cancelling");
    assert_eq!(token_rows(&b), 1, "cancel revoked the token");
    let revoke = b.must_find("#token-list button", "the revoke button");
    b.click(&revoke);
    let confirm = b.must_find("#confirm-revoke", "the revoke confirmation");
    b.click(&confirm);
    let notice = b.must_find("#notice", "the revoke result");
    assert!(b.text(&notice).contains("revoked"), "{}", b.text(&notice));
    b.must_find("#no-tokens", "the empty token list after revoking");
    assert_fits(&b, "phone: revoked");
    shot(&b, "phone-5-revoked");
    s.expect_denied(
        &d.docker(&cfg, &["push", &pushed], None, DOCKER_TIMEOUT),
        "docker push with the revoked token",
    );
    eprintln!("ok: revoke asks, cancels, revokes and says so");

    // Desktop width.
    b.emulate_screen(DESKTOP.0, DESKTOP.1, false);
    b.goto(&format!("{}/login", s.berth.url));
    let limited = mint(&b, "desktop", "team-a/grace");
    let inner = b
        .eval("return window.innerWidth;", json!([]))
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        inner,
        u64::from(DESKTOP.0),
        "desktop window: innerWidth {inner}"
    );
    assert_fits(&b, "desktop: token shown");
    assert_eq!(
        broken_words(&b, "docker-login"),
        json!([]),
        "desktop command"
    );
    let display = b.eval(
        "return getComputedStyle(document.getElementById('token-list')).display;",
        json!([]),
    );
    assert_eq!(
        display,
        json!("table"),
        "the token list is a table on a desktop"
    );
    shot(&b, "desktop-1-token-shown");

    // The token is limited to the repository chosen: listed with it, and at
    // the token endpoint it grants that repository and nothing else of hers.
    let limits = b.text(&b.must_find("#token-list .limits", "the token's repositories"));
    assert!(limits.contains("team-a/grace"), "listed limits: {limits}");
    let (code, body) = s.berth.get_token(
        Some((USER, &limited)),
        &[
            "repository:team-a/grace:pull,push",
            "repository:team-a/other:pull,push",
        ],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(granted(&body, "team-a/grace"), ["pull", "push"], "{body}");
    assert_eq!(granted(&body, "team-a/other"), Vec::<String>::new());
    eprintln!("ok: a page token limited to team-a/grace grants nothing else");

    // Outside her access: refused with the reason, nothing minted.
    b.goto(&format!("{}/login", s.berth.url));
    let rows = token_rows(&b);
    fill_create_form(&b, "too wide", "team-b/app");
    let error = b.text(&b.must_find("#error", "the refusal"));
    assert!(
        error.contains("team-b/app") && error.contains("outside your access"),
        "{error}"
    );
    assert_fits(&b, "desktop: limit refused");
    shot(&b, "desktop-2-limit-outside-access");
    b.goto(&format!("{}/login", s.berth.url));
    assert_eq!(token_rows(&b), rows, "a refused limit minted a token");
}
