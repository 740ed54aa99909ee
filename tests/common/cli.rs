//! The berth binary as a command. Nothing of the caller's environment that
//! could change berth's behaviour leaks in (every `BERTH_*` variable and
//! `RUST_LOG` are removed), it runs in a fresh temp directory unless told
//! otherwise, and it is killed when it outlives its timeout, so a hang fails
//! the test instead of stalling the suite.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::proc::{run, Out};

/// The binary under test.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// The default bound on one CLI run: generous, not a benchmark.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One berth CLI invocation, built up and then [`Cli::run`].
pub struct Cli {
    cmd: Command,
    stdin: Option<String>,
    timeout: Duration,
    cwd: Option<tempfile::TempDir>,
}

/// `berth ARGS…` with a clean environment in a temp directory.
pub fn berth<I, S>(args: I) -> Cli
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(BERTH);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    let cwd = tempfile::Builder::new()
        .prefix("berth-cli.")
        .tempdir()
        .expect("temp working directory");
    cmd.current_dir(cwd.path());
    Cli {
        cmd,
        stdin: None,
        timeout: TIMEOUT,
        cwd: Some(cwd),
    }
}

impl Cli {
    /// Sets one environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    /// `BERTH_DATABASE`: an SQLite path or a PostgreSQL URL.
    pub fn database(self, url: &str) -> Self {
        self.env("BERTH_DATABASE", url)
    }

    /// Runs in `dir` instead of a fresh temp directory.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self.cwd = None;
        self
    }

    /// Feeds `text` on standard input (closed right after).
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    /// [`Cli::stdin`] when `text` is given.
    pub fn stdin_opt(self, text: Option<&str>) -> Self {
        match text {
            Some(text) => self.stdin(text),
            None => self,
        }
    }

    /// Kills the run after `timeout` instead of [`TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion (or to the timeout).
    pub fn run(mut self) -> Out {
        let out = run(&mut self.cmd, self.stdin.as_deref(), self.timeout);
        drop(self.cwd.take());
        out
    }

    /// [`Cli::run`] off the async runtime's threads.
    pub async fn run_async(self) -> Out {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .expect("the CLI thread")
    }

    /// Runs and asserts that it succeeded.
    #[track_caller]
    pub fn ok(self) -> Out {
        let out = self.run();
        assert!(out.success(), "should succeed:\n{out}");
        out
    }

    /// Runs and asserts that it succeeded; a failure shows `context()` too
    /// (a server's log, say).
    #[track_caller]
    pub fn ok_or_show(self, context: impl FnOnce() -> String) -> Out {
        let out = self.run();
        assert!(out.success(), "berth CLI failed:\n{out}\n{}", context());
        out
    }

    /// Runs and asserts a clean failure: exit code 1, not a panic, a signal
    /// or a hang.
    #[track_caller]
    pub fn fails(self) -> Out {
        let out = self.run();
        assert_eq!(out.code(), Some(1), "should fail with exit code 1:\n{out}");
        assert!(!out.stderr.contains("panicked"), "must not panic:\n{out}");
        out
    }
}
