//! The policy CLI suite's shorthands over the shared CLI runner
//! (`tests/common/cli.rs`): berth run in the repository root with a 30 s
//! bound, and the example policy directories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::cli;
pub use crate::common::cli::BERTH;

/// A bound on every command, so a hang (say, exponential glob matching) fails
/// the test instead of stalling it. Not a benchmark: generous on purpose.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub use crate::common::proc::Out;

/// Runs berth in the repository root with no `BERTH_*` setting from the
/// caller's environment except `env`; kills it after [`TIMEOUT`].
pub fn berth_env(args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Out {
    berth_in(repo(), args, env, stdin)
}

/// Like [`berth_env`], in the working directory `cwd`.
pub fn berth_in(cwd: &Path, args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Out {
    let mut cli = cli::berth(args).cwd(cwd).timeout(TIMEOUT);
    for (k, v) in env {
        cli = cli.env(k, v);
    }
    if let Some(text) = stdin {
        cli = cli.stdin(text);
    }
    cli.run()
}

pub fn berth(args: &[&str]) -> Out {
    berth_env(args, &[], None)
}

#[track_caller]
pub fn ok(args: &[&str]) -> Out {
    cli::berth(args).cwd(repo()).timeout(TIMEOUT).ok()
}

/// Must fail with an error (exit 1), not a panic, a signal or a hang.
#[track_caller]
pub fn fails(args: &[&str]) -> Out {
    cli::berth(args).cwd(repo()).timeout(TIMEOUT).fails()
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
