//! berth federated with a real Keycloak 26 (realm `examples/keycloak/realm.json`,
//! policy `examples/keycloak/policies/`), in front of the real `docker-registry`,
//! driven by docker, skopeo and headless Chromium.
//!
//! One Keycloak serves every test here (see `fixture`); each test starts its own
//! berth and registry, and users that a test changes are that test's alone.

mod borrow;
mod failures;
mod faulty;
mod fixture;
mod page_recheck;
mod replicas;
mod signin_page;
mod sync;
mod webdriver;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use serde_json::Value;

use crate::clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use crate::components::{
    http_get, jwt_claims, tools_available, Berth, Stack, ADMIN_PASSWORD, DOCKER_BIN, REGISTRY_BIN,
};
use crate::image::{config_digest_in_layout, write_oci_image};
use crate::{docker_config, docker_load_image, docker_login, grants_nothing, DOCKER_TIMEOUT};
use fixture::{keycloak, Keycloak};

const LOCAL_USER: &str = "localuser";
const LOCAL_PASSWORD: &str = "localuser-Secret-1";
/// Re-validation window of federated sessions in these tests.
const REVALIDATE: Duration = Duration::from_secs(3);
/// berth's timeout for calls to Keycloak in these tests: generous, a first
/// password check on a busy 2-core machine can take seconds.
const IDP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long berth remembers a successful direct grant in these tests.
const GRANT_CACHE: Duration = Duration::from_secs(2);

fn kc_password(user: &str) -> String {
    format!("{user}-kc-Secret-1")
}

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keycloak/policies")
}

/// berth with the Keycloak provider, a local user `localuser` and (from
/// bootstrap) the local `admin`. Its config dir lives as long as the test binary.
fn start_berth(kc: &Keycloak) -> Berth {
    start_berth_for(&kc.issuer(), IDP_TIMEOUT, "")
}

/// [`start_berth`] with the provider at `issuer`, called with `timeout`, and
/// `top` (top-level settings) at the head of the config file.
fn start_berth_for(issuer: &str, timeout: Duration, top: &str) -> Berth {
    start_berth_with(issuer, timeout, top, DOCUMENTED_GROUPS, &policies())
}

/// The group settings of the documented configuration
/// (`examples/keycloak/berth.toml`): Keycloak groups share local group names.
const DOCUMENTED_GROUPS: &str = "groups_prefix = \"\"";

/// [`start_berth_for`] with `provider` (more `[[oidc]]` settings) and the
/// policy directory `policies`.
fn start_berth_with(
    issuer: &str,
    timeout: Duration,
    top: &str,
    provider: &str,
    policies: &Path,
) -> Berth {
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-kc-config.")
        .tempdir()
        .expect("tempdir")
        .keep();
    let secret = dir.join("client-secret");
    std::fs::write(&secret, format!("{}\n", fixture::CLIENT_SECRET)).expect("secret");
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"{top}
[[oidc]]
name = "keycloak"
display_name = "Keycloak"
issuer = "{issuer}"
client_id = "{client}"
client_secret_file = "{secret}"
revalidate = "{revalidate}s"
grant_cache_ttl = "{cache}s"
timeout = "{timeout}s"
jwks_min_refetch = "1s"
{provider}
"#,
            client = fixture::CLIENT_ID,
            secret = secret.display(),
            revalidate = REVALIDATE.as_secs(),
            cache = GRANT_CACHE.as_secs(),
            timeout = timeout.as_secs(),
        ),
    )
    .expect("config");
    let berth = Berth::start_with_env(policies, &[("BERTH_CONFIG", config.display().to_string())]);
    berth.add_user(LOCAL_USER, LOCAL_PASSWORD, &[]);
    berth
}

/// [`start_berth`], a registry, and dockerd when `with_docker`.
fn stack(kc: &Keycloak, with_docker: bool) -> Stack {
    let started = Instant::now();
    Stack::with_berth(with_docker, start_berth(kc), started)
}

fn skopeo_push(
    s: &Stack,
    c: &ClientEnv,
    img: &str,
    creds: &str,
    target: &str,
) -> crate::common::proc::Out {
    c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            img,
            &format!("docker://{}", s.image(target)),
        ],
        None,
        TRANSFER_TIMEOUT,
    )
}

#[track_caller]
fn expect_status(s: &Stack, got: (u16, Value), want: u16, what: &str) -> Value {
    assert_eq!(
        got.0,
        want,
        "{what}: expected HTTP {want}, got {}: {}\n{}",
        got.0,
        got.1,
        s.diagnostics()
    );
    eprintln!("ok: {what} -> {want}");
    got.1
}

#[test]
fn keycloak_groups_and_roles_decide_access_bad_credentials_refused() {
    if !tools_available("keycloak-groups", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let Some(kc) = keycloak("keycloak-groups") else {
        return;
    };
    let _kc = fixture::shared();
    let s = stack(kc, false);
    let c = ClientEnv::new(&s.path("skopeo"));
    let img = write_oci_image(&s.path("image"), "v1", "keycloak groups image");
    let alice = format!("alice:{}", kc_password("alice"));
    let bob = format!("bob:{}", kc_password("bob"));

    let out = skopeo_push(&s, &c, &img.oci_ref(), &alice, "team-a/app:v1");
    s.expect_ok(&out, "alice (Keycloak group /team-a) pushes team-a/app");
    let out = skopeo_push(&s, &c, &img.oci_ref(), &alice, "team-b/app:v1");
    s.expect_denied(&out, "alice (Keycloak group /team-a) pushes team-b/app");
    let out = skopeo_push(&s, &c, &img.oci_ref(), &bob, "team-b/app:v1");
    s.expect_ok(&out, "bob (Keycloak group /team-b) pushes team-b/app");

    let pulled = s.path("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &alice,
            &format!("docker://{}", s.image("team-a/app:v1")),
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "alice pulls team-a/app");
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        img.config_digest
    );

    // Role-based: carol has the realm role registry-admin.
    let catalog = "registry:catalog:*";
    let body = expect_status(
        &s,
        s.berth
            .get_token(Some(("carol", &kc_password("carol"))), &[catalog]),
        200,
        "carol (realm role registry-admin) asks for the catalog",
    );
    let token = body["token"].as_str().expect("token");
    let url = format!("http://{}/v2/_catalog", s.registry.host);
    let (status, text) = http_get(&url, Some(token)).expect("registry reachable");
    assert_eq!(
        status,
        200,
        "catalog with carol's token (claims {}): {text}",
        jwt_claims(token)
    );
    assert!(
        text.contains("team-a/app") && text.contains("team-b/app"),
        "carol's catalog should list both team repositories: {text}"
    );
    let body = expect_status(
        &s,
        s.berth
            .get_token(Some(("alice", &kc_password("alice"))), &[catalog]),
        200,
        "alice asks for the catalog (partial access is not an error)",
    );
    let claims = jwt_claims(body["token"].as_str().unwrap_or_default());
    assert!(
        grants_nothing(&claims),
        "alice must get no catalog: {claims}"
    );
    assert_eq!(claims["sub"], "alice");

    // Refusals.
    for (user, password, what) in [
        (
            "alice",
            "wrong-password".to_owned(),
            "wrong Keycloak password",
        ),
        ("dave", kc_password("dave"), "disabled Keycloak user"),
        ("nosuchuser", "whatever-1".to_owned(), "unknown user"),
        // Keycloak has an `admin` too: refused, the name is a local account.
        (
            "admin",
            kc_password("admin"),
            "Keycloak account named like a local one",
        ),
    ] {
        let body = expect_status(
            &s,
            s.berth
                .get_token(Some((user, &password)), &["repository:team-a/app:pull"]),
            401,
            what,
        );
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
    }
    let out = c.skopeo(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "--password-stdin",
            &s.registry.host,
        ],
        Some("wrong-password\n"),
        LOGIN_TIMEOUT,
    );
    s.expect_denied(&out, "skopeo login with a wrong Keycloak password");
    // The local admin still signs in with the local password.
    expect_status(
        &s,
        s.berth
            .get_token(Some(("admin", ADMIN_PASSWORD)), &[catalog]),
        200,
        "local admin",
    );
}

/// A JWT with its payload edited (signature no longer matches), or with
/// `alg: none` and no signature.
fn forged(token: &str, edit: impl Fn(&mut Value), alg_none: bool) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let mut claims = jwt_claims(token);
    edit(&mut claims);
    let payload = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    if alg_none {
        let h = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{h}.{payload}.")
    } else {
        format!("{header}.{payload}.{}", parts.nth(1).unwrap_or_default())
    }
}

#[test]
fn keycloak_client_credentials_token_as_password() {
    if !tools_available("keycloak-ci-token", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let Some(kc) = keycloak("keycloak-ci-token") else {
        return;
    };
    let _kc = fixture::shared();
    let s = stack(kc, false);
    let c = ClientEnv::new(&s.path("skopeo"));
    let img = write_oci_image(&s.path("image"), "v1", "keycloak ci image");
    let token = kc.ci_token();
    let sa = "service-account-berth-ci";
    let creds = format!("{sa}:{token}");

    let out = skopeo_push(&s, &c, &img.oci_ref(), &creds, "team-a/ci:v1");
    s.expect_ok(
        &out,
        "CI service account (group /team-a) pushes with its token",
    );
    let pulled = s.path("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &format!("docker://{}", s.image("team-a/ci:v1")),
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "CI service account pulls with its token");
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        img.config_digest
    );
    let body = expect_status(
        &s,
        s.berth
            .get_token(Some((sa, &token)), &["repository:team-b/x:pull"]),
        200,
        "CI token for team-b (refused scope)",
    );
    assert!(grants_nothing(&jwt_claims(
        body["token"].as_str().unwrap_or_default()
    )));

    let scope = ["repository:team-a/ci:pull"];
    for (user, password, what) in [
        (
            "someone-else",
            token.clone(),
            "CI token with another username",
        ),
        (
            sa,
            forged(
                &token,
                |c| c["groups"] = serde_json::json!(["/team-b"]),
                false,
            ),
            "CI token with edited groups",
        ),
        (
            sa,
            forged(
                &token,
                |c| c["exp"] = serde_json::json!(4_102_444_800u64),
                true,
            ),
            "CI token re-signed with alg none",
        ),
        (
            sa,
            forged(
                &token,
                |c| c["iss"] = serde_json::json!("http://127.0.0.1:1/realms/berth"),
                false,
            ),
            "CI token claiming another issuer",
        ),
    ] {
        expect_status(
            &s,
            s.berth.get_token(Some((user, &password)), &scope),
            401,
            what,
        );
    }
    // An ID token is for berth, not a bearer credential.
    let (status, body) = kc.token(&[
        ("grant_type", "password"),
        ("client_id", fixture::CLIENT_ID),
        ("client_secret", fixture::CLIENT_SECRET),
        ("username", "alice"),
        ("password", &kc_password("alice")),
        ("scope", "openid"),
    ]);
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().expect("id_token");
    expect_status(
        &s,
        s.berth.get_token(Some(("alice", id_token)), &scope),
        401,
        "an ID token as password",
    );
}

fn docker_tools(test: &str) -> bool {
    tools_available(test, &[REGISTRY_BIN, "dockerd", DOCKER_BIN, "skopeo"], true)
}

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
    if !docker_tools("keycloak-browser")
        || !tools_available(
            "keycloak-browser",
            &[webdriver::CHROMIUM, webdriver::CHROMEDRIVER],
            false,
        )
    {
        return;
    }
    let Some(kc) = keycloak("keycloak-browser") else {
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

#[test]
fn keycloak_stopped_local_users_unaffected_federated_503_then_recovers() {
    let Some(kc) = keycloak("keycloak-down") else {
        return;
    };
    // Stops the shared Keycloak: no other Keycloak test may run meanwhile.
    let _kc = fixture::exclusive();
    let berth_started = Instant::now();
    let s = start_berth(kc);
    let federated = ("grace", kc_password("grace"));
    let scope = ["repository:team-a/app:pull"];
    let local = || {
        s.get_token(
            Some((LOCAL_USER, LOCAL_PASSWORD)),
            &[&format!("repository:{LOCAL_USER}/app:pull")],
        )
    };
    let fed = || s.get_token(Some((federated.0, &federated.1)), &scope);
    assert_eq!(
        fed().0,
        200,
        "grace before Keycloak stops\n{}",
        s.log_tail(30)
    );
    eprintln!("berth up in {:?}", berth_started.elapsed());

    kc.stop();
    // Should an assertion fail while Keycloak is down, bring it back for the
    // other tests.
    let mut down = RestartOnDrop(Some(kc));
    thread::sleep(GRANT_CACHE + Duration::from_secs(1));
    let (status, body) = local();
    assert_eq!(status, 200, "local user while Keycloak is down: {body}");
    let (status, body) = fed();
    assert_eq!(
        status,
        503,
        "federated user while Keycloak is down should get 503: {body}\n{}",
        s.log_tail(30)
    );
    let text = body.to_string();
    assert!(
        text.contains("identity provider"),
        "the error should name the identity provider: {text}"
    );
    eprintln!("ok: Keycloak down: local 200, federated 503 ({text})");

    let restart = Instant::now();
    down.0 = None;
    kc.start()
        .unwrap_or_else(|e| panic!("Keycloak restart: {e}"));
    eprintln!("keycloak restarted in {:?}", restart.elapsed());
    // berth was not restarted; it may still back off for a moment.
    let t = Instant::now();
    let (status, body) = loop {
        let (status, body) = fed();
        if status == 200 || t.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        status,
        200,
        "federated user after Keycloak came back: {body}\n{}",
        s.log_tail(30)
    );
    assert_eq!(local().0, 200, "local user after Keycloak came back");
}

/// Starts Keycloak again when dropped while still holding it.
struct RestartOnDrop<'a>(Option<&'a Keycloak>);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(kc) = self.0.take() {
            if let Err(e) = kc.start() {
                eprintln!("could not restart Keycloak: {e}");
            }
        }
    }
}
