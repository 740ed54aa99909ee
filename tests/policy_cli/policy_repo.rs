//! The policy-repository example's CI script, run as CI would run it: it
//! passes on the example as shipped, and fails on a change that loses access
//! until the loss is allowed.

use std::path::Path;
use std::process::Command;

use crate::support::{repo, BERTH};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn ci(dir: &Path, base: &Path, allow_loss: bool) -> (bool, String) {
    ci_with(
        dir,
        &[("BASE_POLICIES", base.to_str().unwrap())],
        allow_loss,
    )
}

fn ci_with(dir: &Path, env: &[(&str, &str)], allow_loss: bool) -> (bool, String) {
    let mut cmd = Command::new("sh");
    cmd.arg(dir.join("ci.sh"))
        .env("BERTH", BERTH)
        .env_remove("BASE_POLICIES")
        .env_remove("BASE_REF")
        .env_remove("ALLOW_LOSS")
        .envs(env.iter().copied())
        .current_dir(dir);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(k);
        }
    }
    if allow_loss {
        cmd.env("ALLOW_LOSS", "1");
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Takes pushes to team namespaces away (and edits the tests to match).
fn lose_team_pushes(work: &Path) {
    let ns = work.join("policies/namespaces.toml");
    let text = std::fs::read_to_string(&ns).unwrap();
    let changed = text.replace(
        "name = \"${group}/**\"\nallow = [\"pull\", \"push\", \"delete\"]",
        "name = \"${group}/**\"\nallow = [\"pull\"]",
    );
    assert_ne!(text, changed);
    std::fs::write(&ns, changed).unwrap();
    let tests = work.join("policies/tests/namespaces.toml");
    let text = std::fs::read_to_string(&tests).unwrap();
    let changed = text.replace(
        "scope = \"repository:team-a/api:pull,push\"\nexpect = [\"pull\", \"push\"]",
        "scope = \"repository:team-a/api:pull,push\"\nexpect = [\"pull\"]",
    );
    assert_ne!(text, changed);
    std::fs::write(&tests, changed).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("git is needed to test the CI script: {e}"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_ci_script_reads_the_policies_in_force_from_git() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("repo");
    let work = top.join("registry/policy");
    copy_dir(&repo().join("examples/policy-repo"), &work);
    git(&top, &["init", "-q"]);
    git(&top, &["add", "."]);
    git(&top, &["commit", "-q", "-m", "policies"]);
    let env = [("BASE_REF", "HEAD")];
    let (ok, out) = ci_with(&work, &env, false);
    assert!(ok, "{out}");
    lose_team_pushes(&work);
    let (ok, out) = ci_with(&work, &env, false);
    assert!(
        !ok,
        "a loss against the committed policies must fail:\n{out}"
    );
    assert!(out.contains("- push LOST on 400 requests"), "{out}");
}

#[test]
fn the_example_ci_script_gates_losses() {
    let example = repo().join("examples/policy-repo");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("policy-repo");
    copy_dir(&example, &work);
    let base = example.join("policies");

    let (ok, out) = ci(&work, &base, false);
    assert!(ok, "the example as shipped must pass:\n{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
    assert!(out.contains("no findings"), "{out}");
    assert!(out.contains("grants lost: 0 requests"), "{out}");

    // A change that takes pushes to team namespaces away: tests still pass
    // (after editing them), lint is clean, but the traffic replay catches it.
    lose_team_pushes(&work);
    let (ok, out) = ci(&work, &base, false);
    assert!(!ok, "a loss must fail CI:\n{out}");
    assert!(out.contains("- push LOST on 400 requests"), "{out}");
    assert!(out.contains("would lose access"), "{out}");
    let (ok, out) = ci(&work, &base, true);
    assert!(ok, "a reviewed loss passes:\n{out}");

    // A candidate that does not load fails before any diff.
    std::fs::write(work.join("policies/broken.toml"), "[[rule]\n").unwrap();
    let (ok, out) = ci(&work, &base, true);
    assert!(!ok, "{out}");
    assert!(out.contains("broken.toml:1:"), "{out}");
}
