//! Faults while `berth serve` runs: its PostgreSQL stopped and restarted under
//! load, its policy directory gone, its SQLite disk full, its signing key file
//! deleted. berth must answer clearly (503, never 500 or a hang), keep serving
//! what does not need the broken part, recover by itself, and lose no audit
//! record of a request it answered.
//!
//! The PostgreSQL here is a private cluster (initdb in a temp dir, its own port)
//! so stopping it disturbs no other test; the full disk is a small tmpfs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::proc::{free_port, run, Out};
use crate::components::{
    http_get, jwt_claims, repo_policies, rt, tools_available, Berth, Registry, ALICE_PASSWORD,
    BOB_PASSWORD, REGISTRY_BIN, SERVICE,
};

fn require() -> bool {
    std::env::var("BERTH_E2E").as_deref() == Ok("require")
}

/// Skips (or, with `BERTH_E2E=require`, fails) for a reason other than a tool.
fn skip(test: &str, reason: &str) {
    if require() {
        panic!("{test}: BERTH_E2E=require but {reason}");
    }
    eprintln!("SKIPPED {test}: {reason} (set BERTH_E2E=require to make this an error)");
}

/// Decisions berth logged (it runs with `BERTH_LOG_FORMAT=json`).
fn decisions(berth: &Berth) -> Vec<Value> {
    berth
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["target"] == "berth::decision")
        .collect()
}

/// Every audit row, through `berth audit --json` on berth's database.
fn audit_rows(berth: &Berth) -> Vec<Value> {
    let out = berth.cli_ok(&["audit", "--json", "--limit", "100000"], None);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (at most `limit`) until every logged decision has its audit row;
/// returns the request ids still missing.
fn missing_rows(berth: &Berth, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let rows = audit_rows(berth);
        let missing: Vec<String> = decisions(berth)
            .iter()
            .map(|d| d["request_id"].as_str().unwrap_or("").to_owned())
            .filter(|id| !rows.iter().any(|r| r["request_id"] == id.as_str()))
            .collect();
        if missing.is_empty() || start.elapsed() > limit {
            return missing;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------
// A private PostgreSQL cluster

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL cluster of this test's own, run as `postgres` from a temp dir.
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    url: String,
}

impl PrivatePg {
    fn start(test: &str) -> Option<PrivatePg> {
        if !tools_available(test, &["runuser", "chown"], true) {
            return None;
        }
        let Some(bin) = postgres_bin() else {
            skip(
                test,
                "no PostgreSQL under /usr/lib/postgresql/*/bin (apt-get install postgresql)",
            );
            return None;
        };
        // Short path: the socket lives here too.
        let dir = tempfile::Builder::new()
            .prefix("berth-pg.")
            .tempdir_in("/tmp")
            .unwrap();
        let out = run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
            None,
            Duration::from_secs(10),
        );
        assert!(out.success(), "{out}");
        let pg = PrivatePg {
            url: String::new(),
            port: free_port(),
            bin,
            dir,
        };
        let data = pg.dir.path().join("data");
        let out = pg.as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.success(), "initdb failed:\n{out}");
        pg.up();
        let port = pg.port.to_string();
        let out = pg.as_postgres(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE berth",
            ],
        );
        assert!(out.success(), "{out}");
        let mut pg = pg;
        pg.url = format!("postgres://postgres@127.0.0.1:{port}/berth");
        Some(pg)
    }

    fn as_postgres(&self, prog: &str, args: &[&str]) -> Out {
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(prog))
                .args(args)
                .current_dir(self.dir.path()),
            None,
            Duration::from_secs(60),
        )
    }

    fn pg_ctl(&self, args: &[&str]) -> Out {
        let data = self.dir.path().join("data");
        let mut all = vec!["-D", data.to_str().unwrap()];
        all.extend(args);
        self.as_postgres("pg_ctl", &all)
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = self.pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            out.success(),
            "pg_ctl start failed:\n{out}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn down(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(out.success(), "pg_ctl stop failed:\n{out}");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL outage under load

/// Anyone may pull public/**, next to the shipped policy.
const PUBLIC: &str = r#"
[[rule]]
id = "public-read"
type = "repository"
name = "public/**"
allow = ["pull"]
"#;

fn policies_with(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_policies().join("default.toml"),
        dir.path().join("default.toml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("extra.toml"), extra).unwrap();
    dir
}

#[derive(Debug, Clone)]
struct Sample {
    basic: bool,
    sent: Instant,
    latency: Duration,
    /// `None`: no answer (connection error or client timeout).
    status: Option<u16>,
    body: String,
}

/// Token requests in loops, Basic (alice) and anonymous side by side, until `stop`.
fn load(realm: String, stop: Arc<AtomicBool>, samples: Arc<Mutex<Vec<Sample>>>) {
    rt().block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let one = |basic: bool| {
            let (client, realm, stop, samples) =
                (client.clone(), realm.clone(), stop.clone(), samples.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut req = client.get(&realm).query(&[("service", SERVICE)]);
                    req = if basic {
                        req.query(&[("scope", "repository:alice/app:pull")])
                            .basic_auth("alice", Some(ALICE_PASSWORD))
                    } else {
                        req.query(&[("scope", "repository:public/app:pull")])
                    };
                    let sent = Instant::now();
                    let (status, body) = match req.send().await {
                        Ok(r) => (
                            Some(r.status().as_u16()),
                            r.text().await.unwrap_or_default(),
                        ),
                        Err(e) => (None, e.to_string()),
                    };
                    samples.lock().unwrap().push(Sample {
                        basic,
                        sent,
                        latency: sent.elapsed(),
                        status,
                        body,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        // Three Basic clients: each waits out its own 503 while the database is down.
        tokio::join!(one(true), one(true), one(true), one(false));
    });
}

#[test]
fn postgres_stopped_and_restarted_under_load() {
    let test = "postgres-outage";
    let Some(pg) = PrivatePg::start(test) else {
        return;
    };
    let policies = policies_with(PUBLIC);
    let mut berth = Berth::start_with_env(
        policies.path(),
        &[
            ("BERTH_DATABASE", pg.url.clone()),
            ("BERTH_LOG_FORMAT", "json".to_string()),
            ("BERTH_AUDIT_FOLD_WINDOW", "1s".to_string()),
        ],
    );
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let loader = {
        let (realm, stop, samples) = (berth.realm(), stop.clone(), samples.clone());
        thread::spawn(move || load(realm, stop, samples))
    };
    let ready = |b: &Berth| http_get(&format!("{}/readyz", b.url), None).map(|(s, _)| s);

    thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    pg.down();
    let down_at = Instant::now();
    eprintln!("PostgreSQL stopped (took {:?})", stopping.elapsed());
    thread::sleep(Duration::from_millis(1500));
    let ready_down = ready(&berth);
    thread::sleep(Duration::from_millis(1500));
    pg.up();
    let up_at = Instant::now();
    eprintln!("PostgreSQL restarted after {:?}", down_at.elapsed());
    // berth must recover by itself: a Basic request sent after the restart succeeds.
    let recovered = loop {
        let ok_after = samples
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.basic && s.sent > up_at && s.status == Some(200))
            .map(|s| s.sent.duration_since(up_at));
        if let Some(t) = ok_after {
            break Some(t);
        }
        if up_at.elapsed() > Duration::from_secs(20) {
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let samples = samples.lock().unwrap().clone();
    let ready_up = ready(&berth);
    let running = berth.running();

    let during = |s: &&Sample| s.sent > stopping && s.sent < up_at;
    let basic_down: Vec<&Sample> = samples.iter().filter(|s| s.basic).filter(during).collect();
    let anon_down: Vec<&Sample> = samples.iter().filter(|s| !s.basic).filter(during).collect();
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "{} requests ({} Basic, {} anonymous while PostgreSQL was down); slowest {:?}; \
         Basic 200 again {:?} after the restart; /readyz {:?} down, {:?} up",
        samples.len(),
        basic_down.len(),
        anon_down.len(),
        slowest,
        recovered,
        ready_down,
        ready_up
    );
    let diag = || berth.log_tail(30);
    let bad: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            !matches!(s.status, Some(200) | Some(503)) || (!s.basic && s.status != Some(200))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "only 200 and (for Basic) 503 are acceptable; got {:#?}\n{}",
        &bad[..bad.len().min(5)],
        diag()
    );
    assert!(
        basic_down.iter().any(|s| s.status == Some(503)),
        "no Basic request got 503 while PostgreSQL was down: {basic_down:#?}\n{}",
        diag()
    );
    for s in basic_down.iter().filter(|s| s.status == Some(503)) {
        let body: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
        assert_eq!(body["error"], "temporarily_unavailable", "{}", s.body);
        assert!(
            !s.body.contains("postgres"),
            "a 503 body names the cause: {}",
            s.body
        );
    }
    assert!(
        !anon_down.is_empty(),
        "no anonymous request was answered while PostgreSQL was down"
    );
    assert!(
        slowest < Duration::from_secs(6),
        "a request took {slowest:?} (a hang, not a prompt 503)"
    );
    assert_eq!(ready_down, Some(503), "/readyz while PostgreSQL was down");
    assert_eq!(ready_up, Some(200), "/readyz after the restart");
    assert!(
        recovered.is_some(),
        "Basic requests did not succeed within 20 s of the restart\n{}",
        diag()
    );
    assert!(running, "berth exited\n{}", diag());

    // No audit record lost: every decision logged has its row, and every
    // answered 200 has an `issued` decision.
    let missing = missing_rows(&berth, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "{} decisions have no audit row after recovery: {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        diag()
    );
    // Repeated grants fold into their first row; the counts are written as the
    // 1 s windows close, so wait for them (at most 10 s).
    let issued = |rows: &[Value], basic: bool, account: &str| {
        let answered = samples
            .iter()
            .filter(|s| s.basic == basic && s.status == Some(200))
            .count() as u64;
        let stored: u64 = rows
            .iter()
            .filter(|r| r["outcome"] == "issued" && r["account"] == account)
            .map(|r| r["repeats"].as_u64().unwrap_or(0))
            .sum();
        (stored, answered)
    };
    let counted = Instant::now();
    let rows = loop {
        let rows = audit_rows(&berth);
        let done = [(true, "alice"), (false, "")]
            .iter()
            .all(|(basic, account)| {
                let (stored, answered) = issued(&rows, *basic, account);
                stored == answered
            });
        if done || counted.elapsed() > Duration::from_secs(10) {
            break rows;
        }
        thread::sleep(Duration::from_millis(250));
    };
    for (basic, account) in [(true, "alice"), (false, "")] {
        let (stored, answered) = issued(&rows, basic, account);
        assert_eq!(
            stored, answered,
            "issued decisions in audit rows for {account:?} vs 200 answers"
        );
    }
    let unavailable = rows
        .iter()
        .filter(|r| r["outcome"] == "temporarily_unavailable")
        .count();
    assert_eq!(
        unavailable,
        samples.iter().filter(|s| s.status == Some(503)).count(),
        "503 answers vs their audit rows"
    );
}

// ---------------------------------------------------------------------------
// Policy directory gone

fn alice_actions(berth: &Berth, scope: &str) -> Vec<String> {
    let (status, body) = berth.get_token(Some(("alice", ALICE_PASSWORD)), &[scope]);
    assert_eq!(status, 200, "{body}\n{}", berth.log_tail(20));
    let claims = jwt_claims(body["token"].as_str().unwrap());
    claims["access"][0]["actions"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Polls `/healthz` until `done`, at most 5 s; returns the body.
fn wait_health(berth: &Berth, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, h) = berth
            .healthz()
            .unwrap_or_else(|| panic!("/healthz unreachable\n{}", berth.log_tail(20)));
        assert_eq!(status, 200, "/healthz: {h}");
        if done(&h) {
            eprintln!("ok: {what} after {:?}: {h}", start.elapsed());
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not seen within 5 s; last /healthz {h}\n{}",
            berth.log_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn policy_directory_gone_keeps_the_last_good_policy() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        repo_policies().join("default.toml"),
        dir.join("default.toml"),
    )
    .unwrap();
    let mut berth = Berth::start_with_policies(&dir);
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let scope = "repository:alice/app:pull,push";
    assert_eq!(alice_actions(&berth, scope), ["pull", "push"]);
    let first = wait_health(&berth, "policy loaded", |h| h["status"] == "ok");
    let generation = first["policy"]["generation"].as_u64().unwrap();

    // Root reads any mode, so "unreadable" is made by taking the directory away,
    // then by putting a file where it was.
    let moved = root.path().join("policies.moved");
    std::fs::rename(&dir, &moved).unwrap();
    let h = wait_health(&berth, "directory renamed away", |h| {
        h["status"] == "degraded"
    });
    assert_eq!(h["policy"]["stale"], true, "{h}");
    let error = h["policy"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("cannot read policy directory") && error.contains("policies"),
        "the error should name the directory and the problem: {h}"
    );
    assert_eq!(
        alice_actions(&berth, scope),
        ["pull", "push"],
        "the last good policy keeps serving"
    );
    std::fs::write(&dir, "not a directory").unwrap();
    thread::sleep(Duration::from_millis(1500));
    let h = wait_health(&berth, "a file in its place", |h| h["status"] == "degraded");
    assert_eq!(h["policy"]["generation"].as_u64(), Some(generation), "{h}");
    assert_eq!(alice_actions(&berth, scope), ["pull", "push"]);
    assert!(berth.running(), "berth exited\n{}", berth.log_tail(30));
    assert!(
        berth.log().contains("policy reload failed"),
        "no log line says the reload failed\n{}",
        berth.log_tail(30)
    );

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let h = wait_health(&berth, "directory back", |h| h["status"] == "ok");
    assert_eq!(h["policy"]["stale"], false, "{h}");
    assert!(h["policy"]["generation"].as_u64() > Some(generation), "{h}");
    assert_eq!(alice_actions(&berth, scope), ["pull", "push"]);
}

/// Kubernetes mounts a ConfigMap as `NAME -> ..data/NAME` symlinks and updates
/// it by swapping the `..data` symlink: the files' own links never change.
#[test]
fn policy_directory_updated_like_a_configmap_reloads() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    for (version, extra) in [("..v1", ""), ("..v2", PUBLIC)] {
        let d = dir.join(version);
        std::fs::create_dir_all(&d).unwrap();
        let default = std::fs::read_to_string(repo_policies().join("default.toml")).unwrap();
        std::fs::write(d.join("default.toml"), format!("{default}\n{extra}")).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/default.toml", dir.join("default.toml")).unwrap();
    let berth = Berth::start_with_policies(&dir);
    let first = wait_health(&berth, "policy loaded", |h| h["status"] == "ok");
    let public = |b: &Berth| {
        let (_, body) = b.get_token(None, &["repository:public/app:pull"]);
        jwt_claims(body["token"].as_str().unwrap())["access"][0]["actions"].clone()
    };
    assert_eq!(public(&berth), serde_json::json!([]));

    // What the kubelet does: a new ..data link renamed over the old one.
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let gen = first["policy"]["generation"].as_u64().unwrap();
    wait_health(&berth, "ConfigMap update picked up", |h| {
        h["policy"]["generation"].as_u64() > Some(gen)
    });
    assert_eq!(public(&berth), serde_json::json!(["pull"]));
}

// ---------------------------------------------------------------------------
// SQLite disk full

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        if !tools_available(test, &["mount", "umount"], true) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-full.")
            .tempdir()
            .unwrap();
        let out = run(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path()),
            None,
            Duration::from_secs(10),
        );
        if !out.success() {
            skip(test, &format!("cannot mount a tmpfs here:\n{out}"));
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = run(
            Command::new("umount").arg(self.dir.path()),
            None,
            Duration::from_secs(10),
        );
        if !out.success() {
            let _ = run(
                Command::new("umount").arg("-l").arg(self.dir.path()),
                None,
                Duration::from_secs(10),
            );
        }
    }
}

#[test]
fn sqlite_disk_full() {
    let test = "sqlite-disk-full";
    let Some(fs) = Tmpfs::mount(test, "8m") else {
        return;
    };
    let mut berth = Berth::start_with_env(
        &repo_policies(),
        &[
            (
                "BERTH_DATABASE",
                fs.path().join("berth.db").display().to_string(),
            ),
            ("BERTH_LOG_FORMAT", "json".to_string()),
        ],
    );
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    berth.add_user("bob", BOB_PASSWORD, &[]);
    let alice = Some(("alice", ALICE_PASSWORD));
    let scope = "repository:alice/app:pull";
    assert_eq!(berth.get_token(alice, &[scope]).0, 200);
    let login = |b: &Berth| {
        let url = format!(
            "{}?service={SERVICE}&account=alice&offline_token=true&client_id=docker",
            b.realm()
        );
        rt().block_on(async {
            let r = reqwest::Client::new()
                .get(&url)
                .basic_auth("alice", Some(ALICE_PASSWORD))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let (status, body) = login(&berth);
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    let filler = fs.fill();
    eprintln!(
        "tmpfs full: {}",
        run(
            Command::new("df").arg(fs.path()),
            None,
            Duration::from_secs(5)
        )
        .stdout
    );
    // Reads still work: a cached and an uncached password, anonymous, a refresh grant.
    assert_eq!(
        berth.get_token(alice, &[scope]).0,
        200,
        "{}",
        berth.log_tail(20)
    );
    let (status, body) = berth.get_token(Some(("bob", BOB_PASSWORD)), &["repository:bob/x:pull"]);
    assert_eq!(status, 200, "uncached password with the disk full: {body}");
    assert_eq!(berth.get_token(None, &[scope]).0, 200);
    let (status, body) = rt().block_on(async {
        let r = reqwest::Client::new()
            .post(berth.realm())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", SERVICE),
                ("client_id", "docker"),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    assert_eq!(status, 200, "refresh grant with the disk full: {body}");
    // A wrong password is still a 401 (counting it fails, and is logged).
    assert_eq!(
        berth.get_token(Some(("alice", "wrong")), &[scope]).0,
        401,
        "{}",
        berth.log_tail(20)
    );
    // A new refresh token must be written. SQLite may still fit one row into
    // pages it already holds, so success is allowed; a failed write must be a
    // clear 503, never a 500.
    let (status, body) = login(&berth);
    assert!(
        status == 200 || status == 503,
        "docker login needing a write on a full disk: {status} {body}\n{}",
        berth.log_tail(20)
    );
    if status == 503 {
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    }
    let (status, _) = berth.healthz().expect("/healthz");
    assert_eq!(status, 200);
    assert!(berth.running(), "berth exited\n{}", berth.log_tail(30));
    thread::sleep(Duration::from_millis(500));
    let log = berth.log();
    assert!(
        log.contains("disk is full"),
        "no log line names the full disk\n{}",
        berth.log_tail(30)
    );
    assert!(!log.contains("panicked"), "{}", berth.log_tail(30));

    // Space again: the audit rows kept in memory are written, logins work.
    std::fs::remove_file(&filler).unwrap();
    let missing = missing_rows(&berth, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "decisions without audit rows after the disk had space again: {missing:?}\n{}",
        berth.log_tail(30)
    );
    let (status, body) = login(&berth);
    assert_eq!(status, 200, "docker login after space was freed: {body}");
}

// ---------------------------------------------------------------------------
// Signing key deleted

#[test]
fn signing_key_file_deleted_while_serving() {
    if !tools_available("key-deleted", &[REGISTRY_BIN], false) {
        return;
    }
    let mut berth = Berth::start();
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let registry = Registry::start(&berth);
    let alice = Some(("alice", ALICE_PASSWORD));
    let scope = "repository:alice/app:pull";
    let kid_of = |body: &Value| {
        let token = body["token"].as_str().unwrap();
        let header = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(header.as_bytes())
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap_or("").to_owned()
    };
    let (status, body) = berth.get_token(alice, &[scope]);
    assert_eq!(status, 200);
    let kid = kid_of(&body);

    let key = std::fs::read_dir(&berth.keys_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "key") && p.file_stem().is_some_and(|s| s != "ca")
        })
        .expect("a signing key file");
    let name = key.file_stem().unwrap().to_str().unwrap().to_owned();
    std::fs::remove_file(&key).unwrap();
    eprintln!("deleted {}", key.display());

    // berth looks at the directory every 2 s: keep asking past that.
    let start = Instant::now();
    let mut last = body;
    while start.elapsed() < Duration::from_secs(4) {
        let (status, body) = berth.get_token(alice, &[scope]);
        assert_eq!(
            status,
            200,
            "token after the key file was deleted: {body}\n{}",
            berth.log_tail(20)
        );
        assert_eq!(kid_of(&body), kid, "signed with another key");
        last = body;
        thread::sleep(Duration::from_millis(250));
    }
    let token = last["token"].as_str().unwrap();
    let v2 = format!("http://{}/v2/", registry.host);
    let (status, text) = http_get(&v2, Some(token)).expect("registry");
    assert_eq!(
        status,
        200,
        "the registry should accept a token signed after the file was deleted: {text}\n{}",
        registry.log_tail(20)
    );
    assert!(berth.running(), "berth exited\n{}", berth.log_tail(30));
    assert!(
        berth.log().contains("keeping the previous keys"),
        "no log line about the unloadable keys\n{}",
        berth.log_tail(30)
    );
    let ready = http_get(&format!("{}/readyz", berth.url), None).map(|(s, _)| s);
    assert_eq!(ready, Some(200), "berth still signs, so it is ready");

    // The operator's view: `berth key show` names the key whose file is gone.
    let out = berth.cli(&["key", "show"], None);
    let text = out.text();
    eprintln!("{out}");
    assert!(
        text.contains(&name)
            && ["missing", "not found", "no such file", "no private key"]
                .iter()
                .any(|w| text.to_lowercase().contains(w)),
        "`berth key show` should say that {name}'s private key file is missing:\n{out}"
    );
}
