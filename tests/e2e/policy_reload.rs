//! Live policy reload, end to end: berth serves a running docker-registry and a
//! logged-in docker client while the test edits files in berth's policy
//! directory (the test's own temp copy, never the repository's `policies/`).
//! Each change must decide the next `docker push` within seconds, with nothing
//! restarted; a broken file must leave the last good policy serving and show
//! in `/healthz` as `degraded`, with the error's location on the metrics
//! address and only the status on the public one.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::server::Serve;
use crate::components::{
    jwt_claims, repo_policies, tools_available, Berth, Stack, ALICE_PASSWORD, DOCKER_BIN,
    REGISTRY_BIN,
};
use crate::{docker_load_image, docker_login, DOCKER_TIMEOUT};

/// berth polls its policy directory every second and promises a change is
/// live within 2 s; this leaves room for a loaded CI machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

const TEAM_READ: &str = r#"# alice may read team/**, not write to it.
[[rule]]
id = "team-read"
account = "alice"
type = "repository"
name = "team/**"
allow = ["pull"]
"#;

const TEAM_WRITE: &str = r#"# alice may now push to team/** as well.
[[rule]]
id = "team-write"
description = "alice maintains the team namespace"
account = "alice"
type = "repository"
name = "team/**"
allow = ["pull", "push"]
"#;

/// `alow` is a typo: an unknown key, rejected with its location.
const TEAM_BROKEN: &str = r#"# alice may now push to team/** as well.
[[rule]]
id = "team-write"
account = "alice"
alow = ["pull", "push"]
"#;
const BROKEN_AT: &str = "team.toml:5:1";

const FREEZE: &str = r#"# Release freeze: nobody pushes to team/**, whatever else allows it.
[[rule]]
id = "team-freeze"
type = "repository"
name = "team/**"
deny = ["push"]
"#;

/// Writes `name` in `dir` the way an editor or a deploy tool does: a temp file
/// that berth ignores (not `*.toml`), renamed over the old one, so berth never
/// reads half a file.
fn write_policy(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write policy temp file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename policy file");
}

fn policy_status(s: &Stack) -> Value {
    s.berth
        .healthz()
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("GET /healthz failed\n{}", s.diagnostics()))
}

fn generation(health: &Value) -> u64 {
    health["policy"]["generation"].as_u64().unwrap_or(0)
}

/// Polls `/healthz` until `done` holds, at most [`RELOAD_TIMEOUT`]; returns the
/// last body. Fails with the last body and every component's log.
fn wait_health(s: &Stack, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let h = policy_status(s);
        if done(&h) {
            eprintln!("ok: {what} after {:?}: {h}", start.elapsed());
            return h;
        }
        if start.elapsed() > RELOAD_TIMEOUT {
            panic!(
                "FAILED: {what}: not seen in /healthz within {RELOAD_TIMEOUT:?}; last: {h}\n{}",
                s.diagnostics()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until berth serves a policy newer than `after` without errors.
fn wait_reloaded(s: &Stack, after: u64, what: &str) -> u64 {
    let h = wait_health(s, what, |h| {
        h["status"] == "ok" && h["policy"]["stale"] == false && generation(h) > after
    });
    generation(&h)
}

/// The actions alice's token grants on `team/app` when asking for pull and
/// push, straight from berth: tells a berth mistake from a client one.
fn alice_team_actions(s: &Stack) -> Vec<String> {
    let (status, body) = s.berth.get_token(
        Some(("alice", ALICE_PASSWORD)),
        &["repository:team/app:pull,push"],
    );
    assert_eq!(
        status,
        200,
        "GET /token as alice: {body}\n{}",
        s.diagnostics()
    );
    let claims = jwt_claims(body["token"].as_str().unwrap_or_default());
    let mut actions: Vec<String> = claims["access"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == "team/app")
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    actions.sort();
    actions
}

#[track_caller]
fn expect_team_actions(s: &Stack, want: &[&str], what: &str) {
    let got = alice_team_actions(s);
    assert_eq!(
        got,
        want,
        "{what}: alice's token for repository:team/app:pull,push\n{}",
        s.diagnostics()
    );
}

#[test]
fn docker_push_follows_live_policy_edits() {
    if !tools_available(
        "policy-reload",
        &[REGISTRY_BIN, "dockerd", DOCKER_BIN, "skopeo"],
        true,
    ) {
        return;
    }
    // Declared before the stack so it outlives berth, which polls it.
    let policies = tempfile::Builder::new()
        .prefix("berth-e2e-policies.")
        .tempdir()
        .expect("tempdir");
    let pdir = policies.path();
    std::fs::copy(
        repo_policies().join("default.toml"),
        pdir.join("default.toml"),
    )
    .expect("copy default.toml");
    write_policy(pdir, "team.toml", TEAM_READ);

    let s = Stack::start_with_policies(true, pdir);
    let d = s.dockerd.as_ref().unwrap();
    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let gen0 = generation(&wait_health(&s, "initial policy", |h| h["status"] == "ok"));
    let v1 = docker_load_image(&s, d, &cfg, "team/app:v1", "policy reload e2e image");
    s.expect_ok(
        &docker_login(&s, d, &cfg, "alice", ALICE_PASSWORD),
        "docker login as alice",
    );
    let push = |tag: &str| {
        let image = s.image(&format!("team/app:{tag}"));
        let out = d.docker(&cfg, &["tag", &v1, &image], None, DOCKER_TIMEOUT);
        s.expect_ok(&out, &format!("docker tag team/app:{tag}"));
        d.docker(&cfg, &["push", &image], None, DOCKER_TIMEOUT)
    };

    // 1. Read-only: the push is refused.
    expect_team_actions(&s, &["pull"], "with team-read only");
    s.expect_denied(&push("v1"), "docker push team/app:v1 under team-read");

    // 2. A rule allowing push, live without a restart.
    let edited = Instant::now();
    write_policy(pdir, "team.toml", TEAM_WRITE);
    let gen1 = wait_reloaded(&s, gen0, "team-write rule in force");
    eprintln!("policy change live after {:?}", edited.elapsed());
    expect_team_actions(&s, &["pull", "push"], "after team-write");
    s.expect_ok(&push("v1"), "docker push team/app:v1 under team-write");

    // 3. A broken file: the last good policy keeps serving, /healthz says so.
    write_policy(pdir, "team.toml", TEAM_BROKEN);
    let h = wait_health(&s, "broken team.toml reported", |h| {
        h["status"] == "degraded"
    });
    let error = h["policy"]["error"].as_str().unwrap_or_default();
    assert!(
        h["policy"]["stale"] == true && error.contains(BROKEN_AT) && error.contains("alow"),
        "/healthz should report the stale policy with the error at {BROKEN_AT}: {h}\n{}",
        s.diagnostics()
    );
    assert_eq!(
        generation(&h),
        gen1,
        "a failed reload must not bump the generation: {h}"
    );
    let logs = s.berth.log_tail(200);
    assert!(
        logs.contains(BROKEN_AT),
        "berth should log the reload error with its location {BROKEN_AT}\n{logs}"
    );
    expect_team_actions(&s, &["pull", "push"], "while team.toml is broken");
    s.expect_ok(
        &push("v2"),
        "docker push team/app:v2 while team.toml is broken (last good policy)",
    );
    let h = policy_status(&s);
    assert_eq!(
        h["status"], "degraded",
        "still degraded after the push: {h}"
    );

    // 4. Fixed file plus a deny rule (added first, so both go live together):
    //    deny wins and the push is refused again.
    write_policy(pdir, "freeze.toml", FREEZE);
    write_policy(pdir, "team.toml", TEAM_WRITE);
    let h = wait_health(&s, "team-freeze rule in force", |h| {
        h["status"] == "ok" && generation(h) > gen1 && h["policy"]["rules"].as_u64() == Some(4)
    });
    assert!(
        h["policy"]["error"].is_null(),
        "a good reload clears the error: {h}"
    );
    expect_team_actions(&s, &["pull"], "after team-freeze");
    s.expect_denied(&push("v3"), "docker push team/app:v3 under team-freeze");
}

/// The bad policy files of the policy language's bad-input list, dropped next to a good policy while berth
/// serves: each is reported in `/healthz` with its file, the last good policy
/// keeps deciding, and removing the file brings berth back to `ok`.
#[test]
fn server_keeps_last_good_policy_on_bad_files() {
    let policies = tempfile::Builder::new()
        .prefix("berth-e2e-policies.")
        .tempdir()
        .expect("tempdir");
    let pdir = policies.path();
    std::fs::copy(
        repo_policies().join("default.toml"),
        pdir.join("default.toml"),
    )
    .expect("copy default.toml");
    let berth = Berth::start_with_policies(pdir);
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let logs = || berth.log_tail(60);
    let health = || {
        berth
            .healthz()
            .unwrap_or_else(|| panic!("GET /healthz failed\n{}", logs()))
            .1
    };
    let wait = |what: &str, done: &dyn Fn(&Value) -> bool| {
        let start = Instant::now();
        loop {
            let h = health();
            if done(&h) {
                eprintln!("ok: {what} after {:?}", start.elapsed());
                return h;
            }
            if start.elapsed() > RELOAD_TIMEOUT {
                panic!(
                    "FAILED: {what}: not within {RELOAD_TIMEOUT:?}; last /healthz: {h}\n{}",
                    logs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    };
    let alice_push = || {
        let (status, body) = berth.get_token(
            Some(("alice", ALICE_PASSWORD)),
            &["repository:alice/app:pull,push"],
        );
        assert_eq!(status, 200, "GET /token as alice: {body}\n{}", logs());
        let claims = jwt_claims(body["token"].as_str().unwrap_or_default());
        claims["access"][0]["actions"].clone()
    };
    assert_eq!(alice_push(), serde_json::json!(["pull", "push"]));

    let depth = 100_000;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "binary",
            b"\x7fELF\x02\x01\x01\x00\xff\xfe[[rule]]".to_vec(),
            "UTF-8",
        ),
        (
            "50 MB",
            "# padding\n".repeat(5 * 1024 * 1024).into_bytes(),
            "larger than",
        ),
        (
            "deeply nested",
            format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
            "bad.toml:1:",
        ),
        (
            "glob of 10,000 *",
            format!(
                "[[rule]]\nallow = [\"pull\"]\nname = \"{}\"\n",
                "*".repeat(10_000)
            )
            .into_bytes(),
            "bad.toml:3:8",
        ),
        (
            "a deny of everything behind a typo",
            b"[[rule]]\ndeny = [\"*\"]\nnmae = \"**\"\n".to_vec(),
            "bad.toml:3:1",
        ),
    ];
    for (what, bytes, want) in cases {
        let before = generation(&health());
        let tmp = pdir.join(".bad.tmp");
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, pdir.join("bad.toml")).unwrap();
        let h = wait(&format!("{what}: degraded"), &|h| h["status"] == "degraded");
        let error = h["policy"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("bad.toml") && error.contains(want),
            "{what}: /healthz error should name bad.toml and say {want:?}: {h}\n{}",
            logs()
        );
        assert_eq!(generation(&h), before, "{what}: {h}");
        // Strangers on the public port learn the status, not the file or line.
        assert_eq!(
            berth.public_healthz().map(|(_, v)| v),
            Some(serde_json::json!({ "status": "degraded" })),
            "{what}: the public /healthz must say only the status"
        );
        assert_eq!(
            alice_push(),
            serde_json::json!(["pull", "push"]),
            "{what}: the last good policy must keep deciding\n{}",
            logs()
        );
        std::fs::remove_file(pdir.join("bad.toml")).unwrap();
        wait(&format!("{what}: removed, ok again"), &|h| {
            h["status"] == "ok" && generation(h) > before
        });
    }
}

/// A broken policy on the first load: `berth serve` refuses to start and says
/// where the error is.
#[test]
fn serve_refuses_to_start_on_a_broken_policy() {
    let serve = Serve::bare()
        .policy("[[rule]]\nallow = [\"pull\"]\nbogus = 1\n")
        .env("BERTH_ADMIN_PASSWORD", "admin-Secret-1");
    let policy = serve.dir().join("policies").join("policy.toml");
    let mut berth = serve.spawn();
    let status = berth.wait_exit(Duration::from_secs(30));
    let want = format!("{}:3:1", policy.display());
    assert!(
        status.is_some_and(|s| !s.success()) && berth.log().contains(&want),
        "berth serve should exit with an error at {want} ({status:?}):\n{}",
        berth.log_tail(40)
    );
}
