//! One real Keycloak 26 for all Keycloak tests of this test binary: started on
//! first use from the install made by `scripts/install-keycloak.sh`, with
//! `examples/keycloak/realm.json`, on free loopback ports, in a private copy of
//! the server (so concurrent runs never share a data directory).
//!
//! A static is never dropped, so a watchdog process ends Keycloak (its whole
//! process group) within a second or so of this test process exiting, however
//! it exits. Tests hold [`shared`]; the test that stops and restarts Keycloak
//! holds [`exclusive`].

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::proc::{restart_port, run};
use crate::components::rt;

pub const VERSION: &str = "26.7.3";
pub const REALM: &str = "berth";
pub const CLIENT_ID: &str = "berth";
/// From `examples/keycloak/realm.json` (an example secret, not a real one).
pub const CLIENT_SECRET: &str = "berth-example-secret-change-me";
pub const CI_CLIENT_ID: &str = "berth-ci";
pub const CI_CLIENT_SECRET: &str = "berth-ci-example-secret-change-me";
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "kc-e2e-admin-Secret-1";
/// Keycloak may take minutes on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Keycloak {
    pub port: u16,
    mgmt_port: u16,
    home: PathBuf,
    java: PathBuf,
    child: Mutex<Option<Child>>,
    pgid_file: PathBuf,
    log_dir: PathBuf,
    _dir: tempfile::TempDir,
}

static KEYCLOAK: OnceLock<Result<Keycloak, String>> = OnceLock::new();
static USE: RwLock<()> = RwLock::new(());

fn required() -> bool {
    std::env::var("BERTH_E2E").as_deref() == Ok("require")
}

fn java_major(java_home: &Path) -> Option<u32> {
    let out = Command::new(java_home.join("bin/java"))
        .arg("-version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = text.split('"').nth(1)?;
    v.split('.').next()?.parse().ok()
}

fn find_java() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = ["BERTH_KEYCLOAK_JAVA_HOME", "JAVA_HOME"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/jvm") {
        candidates.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    candidates
        .into_iter()
        .filter_map(|p| java_major(&p).filter(|v| *v >= 21).map(|v| (v, p)))
        .max_by_key(|(v, _)| *v)
        .map(|(_, p)| p)
}

fn find_home() -> Option<PathBuf> {
    let home = std::env::var_os("BERTH_KEYCLOAK_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(format!(".cache/berth/keycloak-{VERSION}")))
        })?;
    home.join("bin/kc.sh").is_file().then_some(home)
}

/// The shared Keycloak, started on first call; `None` (after printing why) when
/// it is not installed and `BERTH_E2E` is not `require`.
pub fn keycloak(test: &str) -> Option<&'static Keycloak> {
    let kc = KEYCLOAK.get_or_init(Keycloak::start_shared);
    match kc {
        Ok(kc) => Some(kc),
        Err(why) if why.starts_with("missing:") && !required() => {
            eprintln!(
                "SKIPPED {test}: {why} (run scripts/install-keycloak.sh; set BERTH_E2E=require to make this an error)"
            );
            None
        }
        Err(why) => panic!("{test}: {why}"),
    }
}

/// Shared use: Keycloak stays up while this is held.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    USE.read().unwrap_or_else(|e| e.into_inner())
}

/// Exclusive use: no other Keycloak test runs meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    USE.write().unwrap_or_else(|e| e.into_inner())
}

impl Keycloak {
    fn start_shared() -> Result<Keycloak, String> {
        let home = find_home().ok_or_else(|| {
            format!("missing: Keycloak {VERSION} not installed (no $BERTH_KEYCLOAK_HOME, no ~/.cache/berth/keycloak-{VERSION})")
        })?;
        let java = find_java()
            .ok_or("missing: no Java 21+ (BERTH_KEYCLOAK_JAVA_HOME, JAVA_HOME, /usr/lib/jvm)")?;
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-keycloak.")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let copy = dir.path().join("keycloak");
        let started = Instant::now();
        let out = run(
            Command::new("cp").arg("-a").arg(&home).arg(&copy),
            None,
            Duration::from_secs(300),
        );
        if !out.success() {
            return Err(format!("copying Keycloak failed:\n{out}"));
        }
        std::fs::create_dir_all(copy.join("data/import")).map_err(|e| e.to_string())?;
        let realm = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/keycloak/realm.json");
        std::fs::copy(&realm, copy.join("data/import/realm.json")).map_err(|e| e.to_string())?;
        let kc = Keycloak {
            // Keycloak restarts on these ports in the outage test.
            port: restart_port(),
            mgmt_port: restart_port(),
            home: copy,
            java,
            child: Mutex::new(None),
            pgid_file: dir.path().join("keycloak.pgid"),
            log_dir: dir.path().to_path_buf(),
            _dir: dir,
        };
        kc.spawn_watchdog();
        kc.start()?;
        eprintln!(
            "keycloak {VERSION} up in {:?} on port {} (copy and start)",
            started.elapsed(),
            kc.port
        );
        Ok(kc)
    }

    /// Ends Keycloak when this test process is gone, and removes its copy (the
    /// static holding the temp dir is never dropped). `sh` may be dash, whose
    /// `kill` takes no `--`: `kill -TERM -PGID`.
    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
             g=$(cat '{f}' 2>/dev/null); \
             if [ -n \"$g\" ]; then kill -TERM -$g 2>/dev/null; sleep 15; kill -KILL -$g 2>/dev/null; fi; \
             rm -rf '{dir}'",
            me = std::process::id(),
            f = self.pgid_file.display(),
            dir = self.log_dir.display()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.url())
    }

    /// Starts the server (realm imported afresh: the database is in memory).
    pub fn start(&self) -> Result<(), String> {
        let log = |name: &str| File::create(self.log_dir.join(name)).map_err(|e| e.to_string());
        let child = Command::new(self.home.join("bin/kc.sh"))
            .args([
                "start-dev",
                "--import-realm",
                "--db=dev-mem",
                "--http-host=127.0.0.1",
            ])
            .arg(format!("--http-port={}", self.port))
            .arg(format!("--http-management-port={}", self.mgmt_port))
            .current_dir(&self.home)
            .env("JAVA_HOME", &self.java)
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USER)
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(log("keycloak.stdout.log")?)
            .stderr(log("keycloak.stderr.log")?)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start Keycloak: {e}"))?;
        std::fs::write(&self.pgid_file, child.id().to_string()).map_err(|e| e.to_string())?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let started = Instant::now();
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer());
        loop {
            if let Some(Some(st)) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .map(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "Keycloak exited during start-up ({st})\n{}",
                    self.log_tail(60)
                ));
            }
            if let Some((200, _)) = crate::components::http_get(&discovery, None) {
                eprintln!("keycloak answered after {:?}", started.elapsed());
                // The first password check of a fresh JVM is slow; take it here,
                // not inside a test's timeout.
                let (status, body) = self.token(&[
                    ("grant_type", "password"),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                    ("username", "alice"),
                    ("password", "alice-kc-Secret-1"),
                ]);
                if status != 200 {
                    return Err(format!("warm-up password grant: {status} {body}"));
                }
                eprintln!("keycloak warmed up after {:?}", started.elapsed());
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "Keycloak did not answer {discovery} within {START_TIMEOUT:?}\n{}",
                    self.log_tail(60)
                ));
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the server (SIGTERM to its group, SIGKILL after 20 s).
    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = guard.take() {
            let pgid = child.id();
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        for f in ["keycloak.stdout.log", "keycloak.stderr.log"] {
            let text = std::fs::read_to_string(self.log_dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("===== {f} (last {n} lines) =====\n"));
            for l in &lines[lines.len().saturating_sub(n)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }

    fn post_form(&self, url: &str, form: &[(&str, &str)], bearer: Option<&str>) -> (u16, Value) {
        rt().block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client");
            let mut req = client.post(url).form(form);
            if let Some(t) = bearer {
                req = req.bearer_auth(t);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// A token from the realm's token endpoint.
    pub fn token(&self, form: &[(&str, &str)]) -> (u16, Value) {
        let url = format!("{}/protocol/openid-connect/token", self.issuer());
        self.post_form(&url, form, None)
    }

    /// The CI client's `client_credentials` access token.
    pub fn ci_token(&self) -> String {
        let (status, body) = self.token(&[
            ("grant_type", "client_credentials"),
            ("client_id", CI_CLIENT_ID),
            ("client_secret", CI_CLIENT_SECRET),
        ]);
        assert_eq!(status, 200, "client_credentials grant: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    fn admin_token(&self) -> String {
        let url = format!("{}/realms/master/protocol/openid-connect/token", self.url());
        let (status, body) = self.post_form(
            &url,
            &[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", ADMIN_USER),
                ("password", ADMIN_PASSWORD),
            ],
            None,
        );
        assert_eq!(status, 200, "admin token: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// One admin REST call (`method` on `path` under `/admin/realms/berth`);
    /// returns status and JSON body.
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.admin_token();
        let url = format!("{}/admin/realms/{REALM}{path}", self.url());
        rt().block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let mut req = match method {
                "PUT" => client.put(&url),
                "POST" => client.post(&url),
                "DELETE" => client.delete(&url),
                _ => client.get(&url),
            }
            .bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    fn user_id(&self, username: &str) -> String {
        let (_, users) = self.admin(
            "GET",
            &format!("/users?username={username}&exact=true"),
            None,
        );
        users[0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no Keycloak user {username}: {users}"))
            .to_owned()
    }

    /// Enables or disables a realm user through the admin REST API.
    pub fn set_enabled(&self, username: &str, enabled: bool) {
        let id = self.user_id(username);
        let (status, body) = self.admin(
            "PUT",
            &format!("/users/{id}"),
            Some(serde_json::json!({ "enabled": enabled })),
        );
        assert!(
            (200..300).contains(&status),
            "setting {username} enabled={enabled}: {status} {body}"
        );
    }

    /// Removes a user from a top-level group.
    pub fn leave_group(&self, username: &str, group: &str) {
        let id = self.user_id(username);
        let (_, groups) = self.admin("GET", &format!("/users/{id}/groups"), None);
        let gid = groups
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["name"] == group)
            .and_then(|g| g["id"].as_str())
            .unwrap_or_else(|| panic!("{username} is not in {group}: {groups}"))
            .to_owned();
        let (status, body) = self.admin("DELETE", &format!("/users/{id}/groups/{gid}"), None);
        assert!(
            (200..300).contains(&status),
            "leaving {group}: {status} {body}"
        );
    }

    /// Ends all of a user's sessions (what "Sign out" in the admin console does).
    pub fn logout(&self, username: &str) {
        let id = self.user_id(username);
        let (status, body) = self.admin("POST", &format!("/users/{id}/logout"), None);
        assert!(
            (200..300).contains(&status),
            "logout {username}: {status} {body}"
        );
    }
}
