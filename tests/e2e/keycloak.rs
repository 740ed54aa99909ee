//! berth federated with a real Keycloak 26 (realm `examples/keycloak/realm.json`,
//! policy `examples/keycloak/policies/`), in front of the real `docker-registry`,
//! driven by docker, skopeo and headless Chromium.
//!
//! One Keycloak serves every test here (see `fixture`); each test starts its own
//! berth and registry, and users that a test changes are that test's alone.

mod access;
mod borrow;
mod client_credentials;
mod docker;
mod failures;
mod faulty;
mod fixture;
mod outage;
mod page_recheck;
mod replicas;
mod signin_page;
mod sync;
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::{ClientEnv, TRANSFER_TIMEOUT};
use crate::components::{tools_available, Berth, Stack, DOCKER_BIN, REGISTRY_BIN};
use fixture::Keycloak;

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

/// The tools a docker scenario needs (dockerd runs as root).
fn docker_tools(test: &str) -> bool {
    tools_available(test, &[REGISTRY_BIN, "dockerd", DOCKER_BIN, "skopeo"], true)
}

/// Keycloak for a test in Chromium (with the docker scenario's tools when
/// `docker`), or `None` after saying what is missing (a failure under
/// `BERTH_E2E=require`).
fn browser_test(test: &str, docker: bool) -> Option<&'static Keycloak> {
    if docker && !docker_tools(test) {
        return None;
    }
    if !tools_available(test, &[webdriver::CHROMIUM, webdriver::CHROMEDRIVER], false) {
        return None;
    }
    fixture::keycloak(test)
}
