//! Two berth replicas behave as one: both `berth serve` processes use one
//! PostgreSQL database (made for the test) and the same `keys/` and `policies/`
//! directories. Each has its own docker-registry (realm pointing at it); the two
//! registries share one storage root and trust the same bundle. docker commands
//! alternate between the registries, so a refresh token, access token or robot
//! made on one replica is used on the other, and a disable, password change or
//! revocation through the CLI must hold on both at the next token request.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::clients::LOGIN_TIMEOUT;
use crate::common::db::TestDb;
use crate::common::proc::Out;
use crate::components::{
    repo_policies, tools_available, Berth, Dockerd, Registry, Stack, ALICE_PASSWORD,
    DENIAL_MARKERS, DOCKER_BIN, REGISTRY_BIN,
};
use crate::{docker_load_image, DOCKER_TIMEOUT};

/// Robots may push to ci/**, next to the shipped policy.
const ROBOTS: &str = r#"
[[rule]]
id = "ci-robots"
kind = "robot"
type = "repository"
name = "ci/**"
allow = ["pull", "push"]
"#;

/// Replica A with its registry and dockerd (as a [`Stack`]), replica B with its
/// registry. Fields drop in order: clients and A first, the database last.
struct Replicas {
    a: Stack,
    reg_b: Registry,
    b: Berth,
    _storage: tempfile::TempDir,
    _policies: tempfile::TempDir,
    _db: TestDb,
}

impl Replicas {
    fn start(db: TestDb) -> Replicas {
        let started = Instant::now();
        let policies = tempfile::tempdir().unwrap();
        std::fs::copy(
            repo_policies().join("default.toml"),
            policies.path().join("default.toml"),
        )
        .unwrap();
        std::fs::write(policies.path().join("robots.toml"), ROBOTS).unwrap();
        let env = [
            ("BERTH_DATABASE", db.url.clone()),
            ("BERTH_LOG_FORMAT", "json".to_string()),
        ];
        // A creates the keys; B starts on the same directory.
        let a = Berth::start_with_env(policies.path(), &env);
        a.add_user("alice", ALICE_PASSWORD, &[]);
        let mut env_b = env.to_vec();
        env_b.push(("BERTH_KEYS_DIR", a.keys_dir.display().to_string()));
        let b = Berth::start_with_env(policies.path(), &env_b);
        assert_eq!(a.bundle_path(), b.bundle_path(), "replicas share keys/");
        let storage = tempfile::tempdir().unwrap();
        let reg_a = Registry::start_with_storage(&a, storage.path());
        let reg_b = Registry::start_with_storage(&b, storage.path());
        let a = Stack {
            dockerd: Some(Dockerd::start()),
            registry: reg_a,
            berth: a,
            work: tempfile::tempdir().unwrap(),
        };
        eprintln!(
            "replicas up in {:?}: berth A {} (registry {}), berth B {} (registry {})",
            started.elapsed(),
            a.berth.url,
            a.registry.host,
            b.url,
            reg_b.host
        );
        Replicas {
            a,
            reg_b,
            b,
            _storage: storage,
            _policies: policies,
            _db: db,
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "{}===== replica B =====\n{}{}",
            self.a.diagnostics(),
            self.b.log_tail(40),
            self.reg_b.log_tail(20)
        )
    }

    fn docker(&self, cfg: &Path, args: &[&str]) -> Out {
        let d = self.a.dockerd.as_ref().unwrap();
        d.docker(cfg, args, None, DOCKER_TIMEOUT)
    }

    fn login(&self, cfg: &Path, host: &str, user: &str, password: &str) -> Out {
        let d = self.a.dockerd.as_ref().unwrap();
        d.docker(
            cfg,
            &["login", "-u", user, "--password-stdin", host],
            Some(&format!("{password}\n")),
            LOGIN_TIMEOUT,
        )
    }

    #[track_caller]
    fn ok(&self, out: &Out, what: &str) {
        assert!(
            out.success(),
            "FAILED: {what} should succeed\n{out}\n{}",
            self.diagnostics()
        );
        eprintln!("ok: {what} ({:?})", out.elapsed);
    }

    #[track_caller]
    fn denied(&self, out: &Out, what: &str) {
        let text = out.text().to_lowercase();
        assert!(
            !out.success() && !out.timed_out && DENIAL_MARKERS.iter().any(|m| text.contains(m)),
            "FAILED: {what} should be refused for lack of authorization\n{out}\n{}",
            self.diagnostics()
        );
        eprintln!("ok: {what} refused ({:?})", out.elapsed);
    }

    /// `GET /token` on both replicas: the status each answers.
    fn statuses(&self, user: &str, password: &str, scope: &str) -> (u16, u16) {
        let creds = Some((user, password));
        (
            self.a.berth.get_token(creds, &[scope]).0,
            self.b.get_token(creds, &[scope]).0,
        )
    }
}

/// Gives `to` the login docker stored for `from` (what one realm behind a load
/// balancer would amount to): the identity token made by one replica is then
/// presented to the other.
fn copy_login(cfg: &Path, from: &str, to: &str) {
    let path = cfg.join("config.json");
    let mut conf: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entry = conf["auths"][from].clone();
    assert!(
        entry["identitytoken"].is_string() || entry["auth"].is_string(),
        "no docker login for {from} in {conf}"
    );
    conf["auths"][to] = entry;
    std::fs::write(&path, serde_json::to_string_pretty(&conf).unwrap()).unwrap();
}

/// Decisions replica `berth` logged for `account` through `via` with `outcome`.
fn decisions(berth: &Berth, account: &str, via: &str) -> Vec<Value> {
    berth
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["target"] == "berth::decision" && d["account"] == account && d["via"] == via)
        .collect()
}

#[test]
fn two_replicas_on_one_postgres_behave_as_one() {
    if !tools_available(
        "replicas",
        &[REGISTRY_BIN, "dockerd", DOCKER_BIN, "skopeo"],
        true,
    ) {
        return;
    }
    let Some(db) = TestDb::postgres("replicas") else {
        return;
    };
    let r = Replicas::start(db);
    let (host_a, host_b) = (r.a.registry.host.clone(), r.reg_b.host.clone());
    let d = r.a.dockerd.as_ref().unwrap();
    let cfg = r.a.path("docker-alice");
    std::fs::create_dir_all(&cfg).unwrap();
    let on_a = docker_load_image(&r.a, d, &cfg, "alice/app:v1", "replica e2e image");
    let on_b = format!("{host_b}/alice/app:v1");
    r.ok(&r.docker(&cfg, &["tag", &on_a, &on_b]), "docker tag for B");

    // A refresh token made by A, used on B; the image pushed through B is read
    // through A.
    r.ok(
        &r.login(&cfg, &host_a, "alice", ALICE_PASSWORD),
        "docker login on A",
    );
    copy_login(&cfg, &host_a, &host_b);
    r.ok(
        &r.docker(&cfg, &["push", &on_b]),
        "docker push through B with A's refresh token",
    );
    let on_b_push = decisions(&r.b, "alice", "refresh");
    assert!(
        on_b_push.iter().any(|d| d["outcome"] == "issued"
            && d["granted"]
                .as_str()
                .unwrap_or("")
                .contains("alice/app:pull,push")),
        "B should have issued the push token for A's refresh token: {on_b_push:?}\n{}",
        r.diagnostics()
    );
    for img in [&on_a, &on_b] {
        r.ok(&r.docker(&cfg, &["rmi", img]), "docker rmi");
    }
    r.ok(
        &r.docker(&cfg, &["pull", &on_a]),
        "docker pull through A of the image pushed through B",
    );
    assert!(
        !decisions(&r.a.berth, "alice", "refresh").is_empty(),
        "A answered no refresh grant for the pull\n{}",
        r.diagnostics()
    );

    // A personal access token made with the CLI: works on both, revoked on both.
    let out = r.b.cli_ok(
        &[
            "token",
            "create",
            "--user",
            "alice",
            "--name",
            "ci",
            "--limit",
            "repository:alice/**:pull",
        ],
        None,
    );
    let pat = secret_of(&out.stdout);
    let scope = "repository:alice/app:pull";
    assert_eq!(
        r.statuses("alice", &pat, scope),
        (200, 200),
        "token on A, B"
    );
    r.a.berth
        .cli_ok(&["token", "revoke", "--user", "alice", "ci"], None);
    assert_eq!(
        r.statuses("alice", &pat, scope),
        (401, 401),
        "revoked token on A, B"
    );

    // A robot made with the CLI signs in on both and pushes through B, pulls through A.
    let out = r.a.berth.cli_ok(&["robot", "create", "ci"], None);
    let robot = secret_of(&out.stdout);
    let rcfg = r.a.path("docker-robot");
    std::fs::create_dir_all(&rcfg).unwrap();
    for host in [&host_a, &host_b] {
        r.ok(
            &r.login(&rcfg, host, "robot$ci", &robot),
            &format!("docker login as robot$ci on {host}"),
        );
    }
    let ci_b = format!("{host_b}/ci/app:v1");
    let ci_a = format!("{host_a}/ci/app:v1");
    r.ok(
        &r.docker(&rcfg, &["tag", &on_a, &ci_b]),
        "docker tag ci/app",
    );
    r.ok(&r.docker(&rcfg, &["push", &ci_b]), "robot push through B");
    r.ok(&r.docker(&rcfg, &["rmi", &ci_b]), "docker rmi");
    r.ok(&r.docker(&rcfg, &["pull", &ci_a]), "robot pull through A");

    // Disabled on A's CLI: neither replica lets alice in, by refresh token or password.
    r.a.berth.cli_ok(&["user", "disable", "alice"], None);
    r.ok(&r.docker(&cfg, &["rmi", &on_a]), "docker rmi");
    r.denied(
        &r.docker(&cfg, &["pull", &on_a]),
        "pull through A after `berth user disable alice`",
    );
    r.denied(
        &r.docker(&cfg, &["pull", &on_b]),
        "pull through B after `berth user disable alice`",
    );
    assert_eq!(
        r.statuses("alice", ALICE_PASSWORD, scope),
        (401, 401),
        "disabled alice's password on A, B"
    );

    // Enabled on B's CLI: a login on B works on A.
    r.b.cli_ok(&["user", "enable", "alice"], None);
    r.ok(
        &r.login(&cfg, &host_b, "alice", ALICE_PASSWORD),
        "docker login on B after enable",
    );
    copy_login(&cfg, &host_b, &host_a);
    r.ok(
        &r.docker(&cfg, &["pull", &on_a]),
        "pull through A with B's refresh token",
    );

    // New password on A's CLI; both replicas had the old one cached.
    for _ in 0..2 {
        assert_eq!(r.statuses("alice", ALICE_PASSWORD, scope), (200, 200));
    }
    let new_password = "alice-New-Secret-2";
    r.a.berth.cli_ok(
        &["user", "passwd", "alice", "--password-stdin"],
        Some(&format!("{new_password}\n")),
    );
    // Each replica learns of the change from PostgreSQL's notification at
    // commit (docs/operating.md, "Replicas"): well under a second, so poll
    // briefly instead of asserting the very next request.
    let started = std::time::Instant::now();
    let mut seen = r.statuses("alice", ALICE_PASSWORD, scope);
    while seen != (401, 401) && started.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        seen = r.statuses("alice", ALICE_PASSWORD, scope);
    }
    assert_eq!(
        seen,
        (401, 401),
        "old password on A, B shortly after `berth user passwd`"
    );
    assert_eq!(
        r.statuses("alice", new_password, scope),
        (200, 200),
        "new password on A, B"
    );
    r.ok(&r.docker(&cfg, &["rmi", &on_a]), "docker rmi");
    for img in [&on_a, &on_b] {
        r.denied(
            &r.docker(&cfg, &["pull", img]),
            &format!("pull {img} with a refresh token from before the password change"),
        );
    }
}

/// The secret after `(shown once): ` in CLI output.
fn secret_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.split_once("(shown once): ")
                .map(|(_, s)| s.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no secret in:\n{stdout}"))
}
