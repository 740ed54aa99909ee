//! The real parts of an end-to-end setup, each started in its own temp dir on
//! free loopback ports and stopped on drop: berth, `docker-registry`, dockerd.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::proc::{free_port, run, Daemon, Out};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");
pub const SERVICE: &str = "registry.e2e.test";
pub const ISSUER: &str = "berth-e2e";
pub const ADMIN_PASSWORD: &str = "admin-Secret-1";
pub const ALICE_PASSWORD: &str = "alice-Secret-1";
pub const BOB_PASSWORD: &str = "bob-Secret-1";

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// Debian's docker.io client; /usr/local/bin/docker may be another client.
pub const DOCKER_BIN: &str = "/usr/bin/docker";

/// Wait for a readiness probe, bounded.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // dockerd lives in sbin, which a non-login PATH may lack.
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Checks that the external tools a test needs are present. Returns false
/// (after printing why) when the test should be skipped; with
/// `BERTH_E2E=require` a missing tool is a hard failure instead.
pub fn tools_available(test: &str, tools: &[&str], needs_root: bool) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` not found"))
        .collect();
    if needs_root && !is_root() {
        missing.push("must run as root (dockerd)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join(", ");
    if std::env::var("BERTH_E2E").as_deref() == Ok("require") {
        panic!("{test}: BERTH_E2E=require but {reason}; run scripts/install-test-deps.sh as root");
    }
    eprintln!("SKIPPED {test}: {reason} (set BERTH_E2E=require to make this an error)");
    false
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Plain HTTP GET, returning status and body (None if unreachable).
pub fn http_get(url: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        let mut req = client.get(url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.unwrap_or_default()))
    })
}

/// The decoded claims (middle part) of a JWT, for messages and checks.
pub fn jwt_claims(token: &str) -> Value {
    let Some(payload) = token.split('.').nth(1) else {
        return Value::Null;
    };
    data_encoding::BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

pub struct Berth {
    daemon: Daemon,
    pub url: String,
    pub keys_dir: PathBuf,
    env: Vec<(String, String)>,
    /// Database, keys and logs; removed on drop (after the daemon stopped).
    _dir: tempfile::TempDir,
}

/// The repository's `policies/`, which berth uses unless a test brings its own.
pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

impl Berth {
    pub fn start() -> Berth {
        Berth::start_with_policies(&repo_policies())
    }

    /// Starts berth with `BERTH_POLICIES_DIR` at `policies`: a test that edits
    /// policy files while berth runs passes its own temp copy here.
    pub fn start_with_policies(policies: &Path) -> Berth {
        Berth::start_with_env(policies, &[])
    }

    /// Like [`Berth::start_with_policies`], with more environment for berth and
    /// its CLI (`BERTH_CONFIG` for settings that only a file can hold).
    pub fn start_with_env(policies: &Path, extra: &[(&str, String)]) -> Berth {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-berth.")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let keys_dir = dir.path().join("keys");
        let env: Vec<(String, String)> = [
            ("BERTH_LISTEN", format!("127.0.0.1:{port}")),
            // Health details are only told on the metrics address.
            ("BERTH_METRICS_LISTEN", format!("127.0.0.1:{}", free_port())),
            (
                "BERTH_DATABASE",
                dir.path().join("berth.db").display().to_string(),
            ),
            ("BERTH_KEYS_DIR", keys_dir.display().to_string()),
            ("BERTH_POLICIES_DIR", policies.display().to_string()),
            ("BERTH_ISSUER", ISSUER.to_string()),
            ("BERTH_SERVICE", SERVICE.to_string()),
            ("BERTH_PUBLIC_URL", url.clone()),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // Replicas share one keys directory: the last BERTH_KEYS_DIR wins.
        let keys_dir = env
            .iter()
            .rev()
            .find(|(k, _)| k == "BERTH_KEYS_DIR")
            .map_or(keys_dir, |(_, v)| PathBuf::from(v));
        let mut cmd = Command::new(BERTH);
        cmd.arg("serve").envs(env.iter().map(|(k, v)| (k, v)));
        let daemon = Daemon::spawn("berth", cmd, dir.path(), Duration::from_secs(10));
        let mut berth = Berth {
            daemon,
            url,
            keys_dir,
            env,
            _dir: dir,
        };
        berth.wait_ready();
        berth
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let health = format!("{}/healthz", self.url);
        loop {
            if let Some(st) = self.daemon.exited() {
                panic!(
                    "berth serve exited during start-up ({st})\n{}",
                    self.log_tail(60)
                );
            }
            if let Some((200, _)) = http_get(&health, None) {
                break;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "berth did not answer 200 on {health} within {START_TIMEOUT:?}\n{}",
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert!(
            self.bundle_path().is_file(),
            "berth is ready but {} does not exist\n{}",
            self.bundle_path().display(),
            self.log_tail(60)
        );
    }

    /// A setting berth was started with (`BERTH_*`), as its environment holds it.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.keys_dir.join("bundle.pem")
    }

    pub fn realm(&self) -> String {
        format!("{}/token", self.url)
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }

    /// `GET /healthz` on the metrics address, with the policy's details:
    /// status and JSON body (`None` if unreachable or not JSON).
    pub fn healthz(&self) -> Option<(u16, Value)> {
        let metrics = self.setting("BERTH_METRICS_LISTEN")?;
        let (status, body) = http_get(&format!("http://{metrics}/healthz"), None)?;
        serde_json::from_str(&body).ok().map(|v| (status, v))
    }

    /// `GET /healthz` on the public address: the status word only.
    pub fn public_healthz(&self) -> Option<(u16, Value)> {
        let (status, body) = http_get(&format!("{}/healthz", self.url), None)?;
        serde_json::from_str(&body).ok().map(|v| (status, v))
    }

    /// Everything `berth serve` logged (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon.stderr_path).unwrap_or_default()
    }

    /// Whether `berth serve` is still running.
    pub fn running(&mut self) -> bool {
        self.daemon.exited().is_none()
    }

    /// What `berth serve` printed on stdout so far.
    pub fn serve_stdout(&self) -> String {
        self.daemon.stdout()
    }

    /// Runs the berth CLI against the same configuration as the server.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(BERTH);
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        run(&mut cmd, stdin, Duration::from_secs(60))
    }

    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let out = self.cli(args, stdin);
        assert!(
            out.success(),
            "berth CLI failed:\n{out}\n{}",
            self.log_tail(40)
        );
        out
    }

    pub fn add_user(&self, name: &str, password: &str, groups: &[&str]) {
        let mut args = vec!["user", "add", name];
        for g in groups {
            args.extend(["--group", g]);
        }
        args.push("--password-stdin");
        // Operators pipe passwords with a trailing newline (`echo pw | …`).
        self.cli_ok(&args, Some(&format!("{password}\n")));
    }

    /// `GET /token` as a client would; returns status and JSON body.
    pub fn get_token(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> (u16, Value) {
        let mut query: Vec<(&str, &str)> = vec![("service", SERVICE)];
        if let Some((user, _)) = creds {
            query.push(("account", user));
        }
        for s in scopes {
            query.push(("scope", s));
        }
        let url = self.realm();
        rt().block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            let mut req = client.get(&url).query(&query);
            if let Some((u, p)) = creds {
                req = req.basic_auth(u, Some(p));
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
            (status, json)
        })
    }
}

pub struct Registry {
    daemon: Daemon,
    /// `127.0.0.1:PORT`, as used in image references.
    pub host: String,
    /// Holds config and storage; removed on drop.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry` with token auth delegated to `berth`.
    pub fn start(berth: &Berth) -> Registry {
        Registry::start_in(berth, None)
    }

    /// Like [`Registry::start`], storing blobs and manifests under `storage`
    /// (several registries may share one storage root).
    pub fn start_with_storage(berth: &Berth, storage: &Path) -> Registry {
        Registry::start_in(berth, Some(storage))
    }

    fn start_in(berth: &Berth, storage: Option<&Path>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-registry.")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage_dir = storage.map_or_else(|| dir.path().join("storage"), Path::to_path_buf);
        let config = format!(
            r#"version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}
  secret: berth-e2e-not-secret
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
"#,
            storage = storage_dir.display(),
            realm = berth.realm(),
            service = SERVICE,
            issuer = ISSUER,
            bundle = berth.bundle_path().display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config_path);
        let daemon = Daemon::spawn("docker-registry", cmd, dir.path(), Duration::from_secs(5));
        let mut reg = Registry {
            daemon,
            host,
            _dir: dir,
        };
        reg.wait_ready(berth);
        reg
    }

    fn wait_ready(&mut self, berth: &Berth) {
        let start = Instant::now();
        let url = format!("http://{}/v2/", self.host);
        loop {
            if let Some(st) = self.daemon.exited() {
                panic!(
                    "docker-registry exited during start-up ({st})\n{}",
                    self.log_tail(60)
                );
            }
            match http_get(&url, None) {
                Some((401, _)) => break,
                Some((status, body)) => panic!(
                    "GET {url} without credentials should be 401 (token auth), got {status}: {body}\n{}",
                    self.log_tail(60)
                ),
                None => {}
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "docker-registry did not answer on {url}\n{}\n{}",
                    self.log_tail(60),
                    berth.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }
}

pub struct Dockerd {
    daemon: Daemon,
    /// `unix://…/docker.sock`
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        // Short path: the socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let host = format!("unix://{}", d.join("docker.sock").display());
        let mut cmd = Command::new(which("dockerd").expect("dockerd"));
        cmd.args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
        ])
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .arg("-H")
        .arg(&host)
        .env_remove("DOCKER_HOST");
        let daemon = Daemon::spawn("dockerd", cmd, d, Duration::from_secs(20));
        let mut dockerd = Dockerd { daemon, host, dir };
        dockerd.wait_ready();
        dockerd
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let cfg = self.dir.path().join("probe-config");
        loop {
            if let Some(st) = self.daemon.exited() {
                panic!(
                    "dockerd exited during start-up ({st})\n{}",
                    self.log_tail(60)
                );
            }
            let out = self.docker(&cfg, &["info"], None, Duration::from_secs(10));
            if out.success() {
                break;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "dockerd not ready after {START_TIMEOUT:?}:\n{out}\n{}",
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs the docker client against this daemon with its own `DOCKER_CONFIG`.
    pub fn docker(
        &self,
        config_dir: &Path,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Out {
        let mut cmd = Command::new(DOCKER_BIN);
        cmd.args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", config_dir)
            .env("HOME", config_dir)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        run(&mut cmd, stdin, timeout)
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }
}

/// A temp dir whose path has no upper-case letters: podman names images
/// pulled from `oci:DIR` after DIR, and image names must be lower case.
fn lowercase_tempdir(prefix: &str) -> tempfile::TempDir {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut last_err = None;
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}-{n}", std::process::id());
        match tempfile::Builder::new()
            .prefix(&name)
            .rand_bytes(0)
            .tempdir_in(std::env::temp_dir().to_string_lossy().to_lowercase())
        {
            Ok(d) => return d,
            Err(e) => last_err = Some(e),
        }
    }
    panic!("could not create a lower-case temp dir: {last_err:?}");
}

/// berth + registry (+ dockerd), torn down in reverse order on drop.
pub struct Stack {
    // Field order is drop order: clients' daemon first, berth last.
    pub dockerd: Option<Dockerd>,
    pub registry: Registry,
    pub berth: Berth,
    /// Scratch space for client config, auth files, images.
    pub work: tempfile::TempDir,
}

/// Words that show a client failed because it was refused, not because
/// something was unreachable or broken.
pub const DENIAL_MARKERS: &[&str] = &[
    "unauthorized",
    "denied",
    "authentication required",
    "invalid username/password",
    "invalid_grant",
    "http 401",
    "http 403",
];

impl Stack {
    /// Starts berth with users alice, bob (and the built-in admin) and a
    /// registry that trusts it; dockerd too when `with_docker`.
    pub fn start(with_docker: bool) -> Stack {
        Stack::start_with_policies(with_docker, &repo_policies())
    }

    /// Like [`Stack::start`], with berth reading its policy from `policies`.
    pub fn start_with_policies(with_docker: bool, policies: &Path) -> Stack {
        let started = Instant::now();
        let berth = Berth::start_with_policies(policies);
        berth.add_user("alice", ALICE_PASSWORD, &[]);
        berth.add_user("bob", BOB_PASSWORD, &[]);
        Stack::with_berth(with_docker, berth, started)
    }

    /// A registry (and dockerd when `with_docker`) in front of a berth the
    /// caller started and set up.
    pub fn with_berth(with_docker: bool, berth: Berth, started: Instant) -> Stack {
        let registry = Registry::start(&berth);
        let dockerd = with_docker.then(Dockerd::start);
        let work = lowercase_tempdir("berth-e2e-work-");
        eprintln!(
            "stack up in {:?}: berth {} registry {}{}",
            started.elapsed(),
            berth.url,
            registry.host,
            dockerd
                .as_ref()
                .map(|d| format!(" dockerd {}", d.host))
                .unwrap_or_default()
        );
        Stack {
            dockerd,
            registry,
            berth,
            work,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `127.0.0.1:PORT/<repo>`
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host)
    }

    /// Logs of every component, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        s.push_str(&self.berth.log_tail(40));
        s.push_str(&self.registry.log_tail(30));
        if let Some(d) = &self.dockerd {
            s.push_str(&d.log_tail(20));
        }
        s
    }

    #[track_caller]
    pub fn expect_ok(&self, out: &Out, what: &str) {
        if !out.success() {
            panic!(
                "FAILED: {what} should succeed but did not\n{out}\n{}",
                self.diagnostics()
            );
        }
        eprintln!("ok: {what} ({:?})", out.elapsed);
    }

    /// The command must fail, and because access was refused.
    #[track_caller]
    pub fn expect_denied(&self, out: &Out, what: &str) {
        if out.success() {
            panic!(
                "FAILED: {what} should have been refused but succeeded\n{out}\n{}",
                self.diagnostics()
            );
        }
        if out.timed_out {
            panic!(
                "FAILED: {what} should have been refused but hung\n{out}\n{}",
                self.diagnostics()
            );
        }
        let text = out.text().to_lowercase();
        if !DENIAL_MARKERS.iter().any(|m| text.contains(m)) {
            panic!(
                "FAILED: {what} failed, but not with an authorization error \
                 (expected one of {DENIAL_MARKERS:?})\n{out}\n{}",
                self.diagnostics()
            );
        }
        eprintln!(
            "ok: {what} refused ({:?}): {}",
            out.elapsed,
            out.stderr.trim().replace('\n', " / ")
        );
    }
}
