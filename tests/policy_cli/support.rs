//! Running the real `berth` binary with a bounded time and a clean environment.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A bound on every command, so a hang (say, exponential glob matching) fails
/// the test instead of stalling it. Not a benchmark: generous on purpose.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Out {
    pub cmdline: String,
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Exited by itself with `code` (1 for an error; a panic would be 101).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        match self.status {
            Some(s) => writeln!(f, "  -> {s} after {:?}", self.elapsed)?,
            None => writeln!(f, "  -> KILLED after {:?} (timeout)", self.elapsed)?,
        }
        writeln!(f, "  --- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "  --- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Runs berth in the repository root with no `BERTH_*` setting from the
/// caller's environment except `env`; kills it after [`TIMEOUT`].
pub fn berth_env(args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Out {
    berth_in(repo(), args, env, stdin)
}

/// Like [`berth_env`], in the working directory `cwd`.
pub fn berth_in(cwd: &Path, args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(BERTH);
    cmd.args(args).current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let cmdline = format!("berth {}", args.join(" "));
    let start = Instant::now();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BERTH}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out_h = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err_h = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Out {
        cmdline,
        status,
        elapsed: start.elapsed(),
        stdout: out_h.join().unwrap(),
        stderr: err_h.join().unwrap(),
    }
}

pub fn berth(args: &[&str]) -> Out {
    berth_env(args, &[], None)
}

#[track_caller]
pub fn ok(args: &[&str]) -> Out {
    let out = berth(args);
    assert!(out.success(), "should succeed:\n{out}");
    out
}

/// Must fail with an error (exit 1), not a panic, a signal or a hang.
#[track_caller]
pub fn fails(args: &[&str]) -> Out {
    let out = berth(args);
    assert_eq!(out.code(), Some(1), "should fail with exit code 1:\n{out}");
    assert!(!out.stderr.contains("panicked"), "must not panic:\n{out}");
    out
}

pub fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/policies"))
        .expect("examples/policies")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no example policy directories");
    dirs
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A temp policy directory holding `p.toml` with `text`.
pub fn policy_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    dir
}
