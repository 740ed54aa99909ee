//! `berth serve` as a child process: the settings it starts with (`BERTH_*`
//! variables, and a config file for what only a file holds), waiting until it
//! answers, its logs, the CLI run against the same settings, and stopping it
//! with SIGTERM. Stopped (SIGTERM, then SIGKILL) and its temp directory removed
//! when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use super::cli::{berth, Cli, BERTH};
use super::proc::{free_port, Daemon};

/// How long `berth serve` may take to answer `/healthz` after it starts.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository's `policies/`, used unless a test brings its own.
pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// The settings of a server about to start.
pub struct Serve {
    env: Vec<(String, String)>,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    dir: tempfile::TempDir,
    port: u16,
}

/// A running `berth serve`.
pub struct BerthProcess {
    daemon: Daemon,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    env: Vec<(String, String)>,
    /// Database, keys and logs; removed on drop, after the process stopped.
    dir: tempfile::TempDir,
}

impl Serve {
    /// Only `BERTH_LISTEN` on a free loopback port, in a fresh temp working
    /// directory: berth's own defaults for everything else, as a newcomer's
    /// first start.
    pub fn bare() -> Serve {
        let dir = tempfile::Builder::new()
            .prefix("berth-serve.")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        Serve {
            env: Vec::new(),
            args: Vec::new(),
            cwd: None,
            dir,
            port,
        }
        .env("BERTH_LISTEN", format!("127.0.0.1:{port}"))
    }

    /// A test server: SQLite database, keys and logs in its temp directory,
    /// the repository's policies, service `service`, issuer `issuer`, a public
    /// URL, a metrics address and an admin password.
    pub fn new(service: &str, issuer: &str, admin_password: &str) -> Serve {
        let s = Serve::bare();
        let d = s.dir.path().to_owned();
        let url = format!("http://127.0.0.1:{}", s.port);
        s.env("BERTH_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("BERTH_DATABASE", d.join("berth.db").display().to_string())
            .env("BERTH_KEYS_DIR", d.join("keys").display().to_string())
            .env("BERTH_POLICIES_DIR", repo_policies().display().to_string())
            .env("BERTH_ISSUER", issuer)
            .env("BERTH_SERVICE", service)
            .env("BERTH_PUBLIC_URL", url)
            .env("BERTH_ADMIN_PASSWORD", admin_password)
    }

    /// Sets `key` (a later value replaces an earlier one).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Unsets `key`.
    pub fn without(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Writes `toml` to `berth.toml` in the temp directory and points
    /// `BERTH_CONFIG` at it (the variables still win over the file).
    pub fn config(self, toml: &str) -> Self {
        let path = self.dir.path().join("berth.toml");
        std::fs::write(&path, toml).expect("write berth.toml");
        let path = path.display().to_string();
        self.env("BERTH_CONFIG", path)
    }

    /// Writes `text` as the only policy file and points `BERTH_POLICIES_DIR`
    /// at its directory.
    pub fn policy(self, text: &str) -> Self {
        let dir = self.dir.path().join("policies");
        std::fs::create_dir_all(&dir).expect("policies dir");
        std::fs::write(dir.join("policy.toml"), text).expect("write policy");
        let dir = dir.display().to_string();
        self.env("BERTH_POLICIES_DIR", dir)
    }

    /// Another argument after `serve` (for example a config file path).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs in `dir` instead of the temp directory.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// The temp directory the server will own.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The loopback port of `BERTH_LISTEN` as first chosen (for a public URL
    /// or a config file written before the start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts `berth serve` without waiting for it.
    pub fn spawn(self) -> BerthProcess {
        let mut cmd = Command::new(BERTH);
        cmd.arg("serve").args(&self.args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("BERTH_") {
                cmd.env_remove(k);
            }
        }
        if std::env::var_os("RUST_LOG").is_some() && !self.env.iter().any(|(k, _)| k == "RUST_LOG")
        {
            cmd.env_remove("RUST_LOG");
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.cwd.as_deref().unwrap_or(self.dir.path()));
        let daemon = Daemon::spawn("berth", cmd, self.dir.path(), Duration::from_secs(10));
        BerthProcess {
            daemon,
            url: format!("http://127.0.0.1:{}", self.port),
            env: self.env,
            dir: self.dir,
        }
    }

    /// Starts `berth serve` and waits until `/healthz` answers 200.
    #[track_caller]
    pub fn start(self) -> BerthProcess {
        let mut p = self.spawn();
        p.wait_ready();
        p
    }
}

impl BerthProcess {
    /// Waits until `/healthz` answers 200; panics with the log if berth exits
    /// or does not answer within [`START_TIMEOUT`].
    #[track_caller]
    pub fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.daemon.exited() {
                panic!(
                    "berth serve exited during start-up ({status})\n{}",
                    self.log_tail(60)
                );
            }
            if self
                .get("/healthz")
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "berth did not answer 200 on {}/healthz within {START_TIMEOUT:?}\n{}",
                self.url,
                self.log_tail(60)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The token endpoint.
    pub fn realm(&self) -> String {
        format!("{}/token", self.url)
    }

    /// A setting the server was started with, as its environment holds it.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The settings the server was started with.
    pub fn settings(&self) -> &[(String, String)] {
        &self.env
    }

    /// The temp directory the server owns.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its keys directory (`BERTH_KEYS_DIR`, else berth's default).
    pub fn keys_dir(&self) -> PathBuf {
        self.setting("BERTH_KEYS_DIR")
            .map_or_else(|| self.dir.path().join("keys"), PathBuf::from)
    }

    /// Everything it logged (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.daemon.stderr_path).unwrap_or_default()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.daemon.stdout()
    }

    /// The last `n` lines of stderr and stdout.
    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.daemon.exited().is_none()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Sends `sig` (`TERM`, `HUP`, …).
    pub fn signal(&self, sig: &str) {
        self.daemon.signal(sig);
    }

    /// Waits up to `timeout` for it to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.daemon.wait_exit(timeout)
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// The CLI with the server's own settings (database, keys, config).
    pub fn cli<I, S>(&self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        berth(args).envs(self.env.iter().map(|(k, v)| (k, v)))
    }

    /// `berth user add NAME --group G… --password-stdin`, which must succeed.
    #[track_caller]
    pub fn add_user(&self, name: &str, password: &str, groups: &[&str]) {
        let mut args = vec!["user", "add", name];
        for g in groups {
            args.extend(["--group", g]);
        }
        args.push("--password-stdin");
        // Operators pipe passwords with a trailing newline (`echo pw | …`).
        let out = self.cli(&args).stdin(&format!("{password}\n")).run();
        assert!(out.success(), "{out}\n{}", self.log_tail(40));
    }

    /// `GET path` over a plain HTTP/1.1 connection: status and body, or
    /// `None` when nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr(), path)
    }

    /// [`BerthProcess::get`] with an `Authorization` header.
    pub fn get_as(&self, path: &str, authorization: &str) -> Option<(u16, String)> {
        http_get_as(self.addr(), path, Some(authorization))
    }
}

/// A minimal `GET` on a fresh connection, with a ten-second bound.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with an optional `Authorization` header.
pub fn http_get_as(addr: &str, path: &str, authorization: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}
