//! End-to-end tests: berth in front of a real `docker-registry` (distribution
//! 2.8, `auth.token`), driven by the real clients docker, podman and skopeo.
//! The compatibility matrix (`compat*.rs`) adds distribution 3.x and more
//! clients; `conformance.rs` runs the OCI distribution-spec conformance suite.
//!
//! Every test starts its own berth + registry (+ dockerd) in temp dirs on free
//! loopback ports, so tests share no state and may run in any order or in
//! parallel; everything is stopped on drop, also when a test fails.
//!
//! A missing external tool skips a test with a printed reason, unless
//! `BERTH_E2E=require` (set by CI), which turns it into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clients;
#[path = "../common/mod.rs"]
mod common;
mod compat;
mod compat_clients;
mod compat_clients_more;
mod compat_ctr_cosign;
mod components;
mod conformance;
mod container;
mod doctor;
mod faults;
mod image;
mod keycloak;
mod ldap;
mod mount;
mod policy_reload;
mod registries;
mod replicas;
mod tls;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use components::{
    http_get, jwt_claims, tools_available, Berth, Dockerd, Stack, ADMIN_PASSWORD, ALICE_PASSWORD,
    DOCKER_BIN, ISSUER, REGISTRY_BIN, SERVICE,
};
use image::{config_digest_in_layout, write_oci_image};

const DOCKER_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn cli_registry_config_and_key_bundle_match_running_server() {
    let berth = Berth::start();
    let out = berth.cli_ok(&["registry-config"], None);
    let block = &out.stdout;
    for needle in [
        "auth:".to_string(),
        "token:".to_string(),
        berth.realm(),
        SERVICE.to_string(),
        ISSUER.to_string(),
        berth.bundle_path().display().to_string(),
    ] {
        assert!(
            block.contains(&needle),
            "`berth registry-config` output lacks {needle:?}:\n{out}"
        );
    }
    let serve_stdout = berth.serve_stdout();
    assert!(
        serve_stdout.contains(&berth.realm()),
        "`berth serve` should print the registry auth block (with realm {}) on stdout, got:\n{serve_stdout}",
        berth.realm()
    );
    let bundle_file = std::fs::read_to_string(berth.bundle_path()).unwrap();
    assert!(bundle_file.contains("-----BEGIN CERTIFICATE-----"));
    let out = berth.cli_ok(&["key", "bundle"], None);
    assert_eq!(
        out.stdout.trim(),
        bundle_file.trim(),
        "`berth key bundle` should print {}",
        berth.bundle_path().display()
    );
}

#[test]
fn skopeo_login_push_pull_and_refusals() {
    if !tools_available("skopeo", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let s = Stack::start(false);
    let c = ClientEnv::new(&s.path("skopeo"));
    let img = write_oci_image(&s.path("image"), "v1", "skopeo e2e image");
    let host = s.registry.host.as_str();
    let af = c.authfile();
    let login = |user: &str, password: &str| {
        c.skopeo(
            &[
                "login",
                "--tls-verify=false",
                "--authfile",
                af,
                "-u",
                user,
                "--password-stdin",
                host,
            ],
            Some(&format!("{password}\n")),
            LOGIN_TIMEOUT,
        )
    };

    s.expect_denied(
        &login("alice", "wrong-password"),
        "skopeo login as alice, wrong password",
    );
    s.expect_denied(
        &login("nosuchuser", ALICE_PASSWORD),
        "skopeo login as unknown user",
    );
    s.expect_ok(&login("alice", ALICE_PASSWORD), "skopeo login as alice");

    let own = format!("docker://{}", s.image("alice/app:skopeo"));
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            af,
            &img.oci_ref(),
            &own,
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "skopeo push to alice/app as alice");

    let pulled = s.path("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            af,
            &own,
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "skopeo pull of alice/app as alice");
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        img.config_digest,
        "pulled image is not the pushed one"
    );

    let other = format!("docker://{}", s.image("bob/app:skopeo"));
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            af,
            &img.oci_ref(),
            &other,
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_denied(&out, "skopeo push to bob/app as alice");

    let out = c.skopeo(
        &["logout", "--tls-verify=false", "--authfile", af, host],
        None,
        LOGIN_TIMEOUT,
    );
    s.expect_ok(&out, "skopeo logout");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            af,
            &own,
            &format!("oci:{}:anon", s.path("anon").display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_denied(&out, "anonymous skopeo pull of alice/app");
}

#[test]
fn podman_login_push_pull_and_refusals() {
    if !tools_available("podman", &[REGISTRY_BIN, "podman"], false) {
        return;
    }
    let s = Stack::start(false);
    let c = ClientEnv::new(&s.path("podman"));
    let img = write_oci_image(&s.path("image"), "v1", "podman e2e image");
    let host = s.registry.host.as_str();
    let af = c.authfile();
    let login = |password: &str| {
        c.podman(
            &[
                "login",
                "--tls-verify=false",
                "--authfile",
                af,
                "-u",
                "alice",
                "--password-stdin",
                host,
            ],
            Some(&format!("{password}\n")),
            LOGIN_TIMEOUT,
        )
    };
    s.expect_denied(&login("wrong-password"), "podman login, wrong password");
    s.expect_ok(&login(ALICE_PASSWORD), "podman login as alice");

    // Into podman's private storage; no registry involved.
    let out = c.podman(&["pull", &img.oci_ref()], None, TRANSFER_TIMEOUT);
    s.expect_ok(&out, "podman pull from the local OCI layout");
    let id = out
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(
        img.config_digest.ends_with(&id),
        "podman image id {id:?} is not the config digest {}",
        img.config_digest
    );

    let own = s.image("alice/app:podman");
    let out = c.podman(
        &[
            "push",
            "--tls-verify=false",
            "--authfile",
            af,
            &id,
            &format!("docker://{own}"),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "podman push to alice/app as alice");

    let out = c.podman(&["rmi", "--all", "--force"], None, TRANSFER_TIMEOUT);
    s.expect_ok(&out, "podman rmi --all");
    let out = c.podman(
        &["pull", "--tls-verify=false", "--authfile", af, &own],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "podman pull of alice/app as alice");
    let pulled_id = out.stdout.lines().last().unwrap_or_default().trim();
    assert_eq!(pulled_id, id, "pulled image is not the pushed one\n{out}");

    let out = c.podman(
        &[
            "push",
            "--tls-verify=false",
            "--authfile",
            af,
            &id,
            &format!("docker://{}", s.image("bob/app:podman")),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_denied(&out, "podman push to bob/app as alice");

    let out = c.podman(&["logout", "--authfile", af, host], None, LOGIN_TIMEOUT);
    s.expect_ok(&out, "podman logout");
    let out = c.podman(
        &["pull", "--tls-verify=false", "--authfile", af, &own],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_denied(&out, "anonymous podman pull of alice/app");
}

/// Makes `repo_tag` (e.g. `alice/app:v1` on the stack's registry) exist in
/// dockerd, from a generated OCI image, via a docker-archive and `docker load`.
fn docker_load_image(s: &Stack, d: &Dockerd, cfg: &Path, repo_tag: &str, content: &str) -> String {
    let img = write_oci_image(&s.path("image"), "v1", content);
    let c = ClientEnv::new(&s.path("skopeo-convert"));
    let archive = s.path("image.tar");
    let out = c.skopeo(
        &[
            "copy",
            &img.oci_ref(),
            &format!("docker-archive:{}:e2e/local:v1", archive.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "skopeo copy OCI layout to docker-archive");
    let out = d.docker(
        cfg,
        &["load", "-i", archive.to_str().unwrap()],
        None,
        DOCKER_TIMEOUT,
    );
    s.expect_ok(&out, "docker load");
    let target = s.image(repo_tag);
    let out = d.docker(cfg, &["tag", "e2e/local:v1", &target], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker tag");
    target
}

fn docker_login(
    s: &Stack,
    d: &Dockerd,
    cfg: &Path,
    user: &str,
    password: &str,
) -> common::proc::Out {
    d.docker(
        cfg,
        &["login", "-u", user, "--password-stdin", &s.registry.host],
        Some(&format!("{password}\n")),
        LOGIN_TIMEOUT,
    )
}

fn docker_config(cfg: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(cfg.join("config.json")).unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (text, v)
}

fn docker_stack(test: &str) -> Option<Stack> {
    tools_available(test, &[REGISTRY_BIN, "dockerd", DOCKER_BIN, "skopeo"], true)
        .then(|| Stack::start(true))
}

#[test]
fn docker_login_identity_token_push_pull_and_refusals() {
    let Some(s) = docker_stack("docker") else {
        return;
    };
    let d = s.dockerd.as_ref().unwrap();
    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let host = s.registry.host.clone();
    let own = docker_load_image(&s, d, &cfg, "alice/app:v1", "docker e2e image");

    s.expect_denied(
        &docker_login(&s, d, &cfg, "alice", "wrong-password"),
        "docker login, wrong password",
    );
    let (_, conf) = docker_config(&cfg);
    assert!(
        conf["auths"].get(&host).is_none(),
        "failed docker login left credentials in config.json: {conf}"
    );
    s.expect_ok(
        &docker_login(&s, d, &cfg, "alice", ALICE_PASSWORD),
        "docker login as alice",
    );

    // Identity token instead of the password on disk.
    let (text, conf) = docker_config(&cfg);
    let entry = &conf["auths"][&host];
    let idt = entry["identitytoken"].as_str().unwrap_or_default();
    assert!(
        !idt.is_empty(),
        "after docker login, config.json should hold an identitytoken for {host} \
         (berth must answer the login's offline_token=true request with a refresh_token): {text}\n{}",
        s.diagnostics()
    );
    let auth = entry["auth"].as_str().unwrap_or_default();
    let decoded = data_encoding::BASE64
        .decode(auth.as_bytes())
        .unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&decoded),
        "alice:",
        "config.json auth should be base64(\"alice:\"): {text}"
    );
    assert!(
        !text.contains(ALICE_PASSWORD) && entry.get("password").is_none(),
        "config.json must not hold the password: {text}"
    );

    // From here on docker uses the refresh grant.
    let out = d.docker(&cfg, &["push", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker push alice/app as alice (refresh grant)");
    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker pull alice/app as alice (refresh grant)");

    let other = s.image("bob/app:v1");
    let out = d.docker(&cfg, &["tag", &own, &other], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker tag bob/app");
    let out = d.docker(&cfg, &["push", &other], None, DOCKER_TIMEOUT);
    s.expect_denied(&out, "docker push to bob/app as alice");

    let out = d.docker(&cfg, &["logout", &host], None, LOGIN_TIMEOUT);
    s.expect_ok(&out, "docker logout");
    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_denied(&out, "anonymous docker pull of alice/app");
}

#[test]
fn docker_user_disabled_after_login_loses_access() {
    let Some(s) = docker_stack("docker-disable") else {
        return;
    };
    let d = s.dockerd.as_ref().unwrap();
    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let own = docker_load_image(&s, d, &cfg, "alice/app:v1", "docker disable e2e image");
    s.expect_ok(
        &docker_login(&s, d, &cfg, "alice", ALICE_PASSWORD),
        "docker login as alice",
    );
    let out = d.docker(&cfg, &["push", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker push alice/app as alice");
    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker pull alice/app before disabling");

    s.berth.cli_ok(&["user", "disable", "alice"], None);

    let out = d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_denied(
        &out,
        "docker pull by alice after `berth user disable alice`",
    );
    let out = d.docker(
        &cfg,
        &["load", "-i", s.path("image.tar").to_str().unwrap()],
        None,
        DOCKER_TIMEOUT,
    );
    s.expect_ok(&out, "docker load");
    let v2 = s.image("alice/app:v2");
    let out = d.docker(&cfg, &["tag", "e2e/local:v1", &v2], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker tag");
    let out = d.docker(&cfg, &["push", &v2], None, DOCKER_TIMEOUT);
    s.expect_denied(
        &out,
        "docker push by alice after `berth user disable alice`",
    );

    // The password path is closed too, not just the refresh grant.
    let (status, body) = s.berth.get_token(
        Some(("alice", ALICE_PASSWORD)),
        &["repository:alice/app:pull"],
    );
    assert_eq!(
        status, 401,
        "GET /token with a disabled user's password should be 401, got {status}: {body}"
    );
}

/// True when no `access` entry of the claims grants any action (entries
/// with `"actions": []` are allowed: partial access is not an error).
fn grants_nothing(claims: &Value) -> bool {
    claims["access"].as_array().is_some_and(|entries| {
        entries
            .iter()
            .all(|e| e["actions"].as_array().is_some_and(Vec::is_empty))
    })
}

#[test]
fn catalog_only_for_admins() {
    if !tools_available("catalog", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let s = Stack::start(false);
    let c = ClientEnv::new(&s.path("skopeo"));
    let img = write_oci_image(&s.path("image"), "v1", "catalog e2e image");
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice:{ALICE_PASSWORD}"),
            &img.oci_ref(),
            &format!("docker://{}", s.image("alice/app:v1")),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "skopeo push alice/app (with --dest-creds)");

    let catalog_url = format!("http://{}/v2/_catalog", s.registry.host);
    let scope = "registry:catalog:*";

    let (status, body) = s.berth.get_token(Some(("admin", ADMIN_PASSWORD)), &[scope]);
    assert_eq!(
        status,
        200,
        "admin token request: {body}\n{}",
        s.diagnostics()
    );
    let token = body["token"].as_str().expect("token in response");
    let claims = jwt_claims(token);
    let (status, text) = http_get(&catalog_url, Some(token)).expect("registry reachable");
    assert_eq!(
        status, 200,
        "GET /v2/_catalog with admin's token (claims {claims}) should be 200, got {status}: {text}\n{}",
        s.diagnostics()
    );
    let cat: Value = serde_json::from_str(&text).expect("catalog json");
    let repos: Vec<&str> = cat["repositories"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        repos.contains(&"alice/app"),
        "admin's catalog should list alice/app: {text}"
    );

    let (status, body) = s.berth.get_token(Some(("alice", ALICE_PASSWORD)), &[scope]);
    assert_eq!(
        status, 200,
        "a refused scope is not an error: alice's token request should be 200 (with empty access): {body}"
    );
    let token = body["token"].as_str().expect("token in response");
    let claims = jwt_claims(token);
    assert!(
        grants_nothing(&claims),
        "alice must get no catalog access: {claims}"
    );
    let (status, text) = http_get(&catalog_url, Some(token)).expect("registry reachable");
    let empty = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["repositories"].as_array().map(Vec::is_empty))
        .unwrap_or(false);
    assert!(
        status == 401 || status == 403 || (status == 200 && empty),
        "alice's catalog request should be refused (or empty), got {status}: {text}"
    );

    let (status, body) = s.berth.get_token(None, &[scope]);
    if status == 200 {
        let claims = jwt_claims(body["token"].as_str().unwrap_or_default());
        assert!(
            grants_nothing(&claims),
            "anonymous must get no catalog access: {claims}"
        );
    } else {
        assert_eq!(status, 401, "anonymous token request: {body}");
    }
}
