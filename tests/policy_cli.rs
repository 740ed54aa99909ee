//! `berth policy check|test|lint`, run as the real binary: the shipped policy
//! and examples pass their tests and lint clean, failures say what and why,
//! and bad policy files give a located error quickly instead of a panic or a
//! hang.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A bound on every command, so a hang (say, exponential glob matching) fails
/// the test instead of stalling it. Not a benchmark: generous on purpose.
const TIMEOUT: Duration = Duration::from_secs(30);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Out {
    cmdline: String,
    status: Option<ExitStatus>,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

impl Out {
    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Exited by itself with `code` (1 for an error; a panic would be 101).
    fn code(&self) -> Option<i32> {
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
fn berth_env(args: &[&str], env: &[(&str, &Path)], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(BERTH);
    cmd.args(args).current_dir(repo());
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

fn berth(args: &[&str]) -> Out {
    berth_env(args, &[], None)
}

#[track_caller]
fn ok(args: &[&str]) -> Out {
    let out = berth(args);
    assert!(out.success(), "should succeed:\n{out}");
    out
}

/// Must fail with an error (exit 1), not a panic, a signal or a hang.
#[track_caller]
fn fails(args: &[&str]) -> Out {
    let out = berth(args);
    assert_eq!(out.code(), Some(1), "should fail with exit code 1:\n{out}");
    assert!(!out.stderr.contains("panicked"), "must not panic:\n{out}");
    out
}

fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/policies"))
        .expect("examples/policies")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no example policy directories");
    dirs
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A temp policy directory holding `p.toml` with `text`.
fn policy_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    dir
}

#[test]
fn every_example_passes_its_tests_and_lints_clean() {
    let mut failed = Vec::new();
    for dir in example_dirs() {
        assert!(
            dir.join("tests").is_dir(),
            "{} has no tests/ directory",
            dir.display()
        );
        let test = berth(&["policy", "test", "--policies", s(&dir)]);
        if !(test.success() && test.stdout.contains(" passed, 0 failed")) {
            failed.push(test.to_string());
        }
        let lint = berth(&["policy", "lint", "--policies", s(&dir)]);
        if !(lint.success() && lint.stdout.contains("no findings")) {
            failed.push(lint.to_string());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn shipped_policies_pass_their_tests_and_lint_clean() {
    // Default policy directory: `policies/` of the working directory.
    let out = ok(&["policy", "test"]);
    assert!(out.stdout.contains(" passed, 0 failed"), "{out}");
    let out = ok(&["policy", "lint"]);
    assert!(out.stdout.contains("no findings"), "{out}");
}

const FAILING_POLICY: &str = r#"
[[rule]]
id = "own-namespace"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push", "delete"]

[[rule]]
id = "admins"
group = "admins"
allow = ["*"]

[[rule]]
id = "releases-are-forever"
name = "releases/**"
deny = ["delete"]
"#;

const FAILING_CASES: &str = r#"
[[case]]
name = "alice pushes to her namespace"
account = "alice"
scope = "repository:alice/app:pull,push"
expect = ["pull", "push"]

[[case]]
name = "alice may only pull her own repositories"
account = "alice"
scope = "repository:alice/app:pull,push,delete"
expect = ["pull"]

[[case]]
name = "admins delete releases"
account = "root"
groups = ["admins"]
scope = "repository:releases/v1:pull,delete"
expect = ["delete", "pull"]
"#;

#[test]
fn failing_case_prints_expected_got_and_rules() {
    let dir = policy_dir(FAILING_POLICY);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/cases.toml"), FAILING_CASES).unwrap();
    let pdir = s(dir.path());
    let tdir = dir.path().join("tests");

    // Tests found under the policy directory, and given explicitly.
    for args in [
        vec!["policy", "test", "--policies", pdir],
        vec!["policy", "test", s(&tdir), "--policies", pdir],
    ] {
        let out = fails(&args);
        let o = &out.stdout;
        for needle in [
            "1 passed, 2 failed",
            // The over-granting case: what was expected, what came out, and
            // the rule that granted it.
            "FAIL ",
            "alice may only pull her own repositories",
            "expected: [pull]",
            "got:      [delete, pull, push]",
            "allowed by own-namespace",
            // The deny case names both sides.
            "admins delete releases",
            "expected: [delete, pull]",
            "got:      [pull]",
            "denied by releases-are-forever",
            "allowed by admins",
        ] {
            assert!(o.contains(needle), "output lacks {needle:?}:\n{out}");
        }
        assert!(
            !o.contains("alice pushes to her namespace"),
            "a passing case is not listed as a failure:\n{out}"
        );
        assert!(out.stderr.contains("2 policy test(s) failed"), "{out}");
    }
}

#[test]
fn test_without_test_files_fails() {
    let dir = policy_dir(FAILING_POLICY);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    let out = fails(&["policy", "test", "--policies", s(dir.path())]);
    assert!(out.stderr.contains("no test files"), "{out}");
    let out = fails(&[
        "policy",
        "test",
        "/nonexistent/tests",
        "--policies",
        s(dir.path()),
    ]);
    assert!(out.stderr.contains("/nonexistent/tests"), "{out}");
}

#[test]
fn broken_test_file_is_reported_with_its_name() {
    let dir = policy_dir(FAILING_POLICY);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/bad.toml"),
        "[[case]]\naccount = \"alice\"\nscope = \"repository:alice/app:pull\"\nexpected = [\"pull\"]\n",
    )
    .unwrap();
    let out = fails(&["policy", "test", "--policies", s(dir.path())]);
    assert!(
        out.stderr.contains("bad.toml") && out.stderr.contains("expected"),
        "{out}"
    );
}

#[test]
fn check_explain_names_the_rule() {
    let out = ok(&[
        "policy",
        "check",
        "--account",
        "alice",
        "--scope",
        "repository:alice/app:pull,push",
        "--explain",
    ]);
    let o = &out.stdout;
    for needle in [
        "repository:alice/app:pull,push -> pull, push",
        "pull: granted (allowed by own-namespace)",
        "push: granted (allowed by own-namespace)",
    ] {
        assert!(o.contains(needle), "output lacks {needle:?}:\n{out}");
    }

    let out = ok(&[
        "policy",
        "check",
        "--account",
        "alice",
        "--scope",
        "repository:alice/app:pull,push",
        "--scope",
        "repository:bob/app:pull",
    ]);
    assert!(
        out.stdout
            .contains("repository:alice/app:pull,push -> pull, push")
            && out.stdout.contains("repository:bob/app:pull -> (nothing)"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("allowed by"),
        "no reasons without --explain:\n{out}"
    );

    let out = ok(&[
        "policy",
        "check",
        "--account",
        "alice",
        "--scope",
        "repository:bob/app:pull",
        "--explain",
    ]);
    assert!(
        out.stdout.contains("pull: refused (no rule allows it)"),
        "{out}"
    );
}

#[test]
fn check_explain_on_examples() {
    let ex = |name: &str| s(&repo().join("examples/policies").join(name)).to_owned();
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "team-namespaces",
            &[
                "--account",
                "carol",
                "--group",
                "team-a",
                "--scope",
                "repository:team-a/api:pull,push",
            ],
            &["-> pull, push", "allowed by team-namespace"],
        ),
        (
            "protected-releases",
            &[
                "--account",
                "root",
                "--group",
                "admins",
                "--scope",
                "repository:releases/v1:pull,delete",
            ],
            &[
                "-> pull",
                "delete: refused (allowed by admins; denied by releases-are-forever)",
            ],
        ),
        (
            "public-mirror",
            &["--scope", "repository:mirror/debian:pull,push"],
            &["-> pull", "push: refused (no rule allows it)"],
        ),
        (
            "contractors-ip",
            &[
                "--account",
                "eve",
                "--group",
                "contractors",
                "--ip",
                "198.51.100.7",
                "--scope",
                "repository:vendor/lib:pull",
            ],
            &["-> (nothing)"],
        ),
        (
            "ci-robot",
            &[
                "--account",
                "robot$ci",
                "--kind",
                "robot",
                "--scope",
                "repository:ci/build:push",
            ],
            &["-> push", "allowed by ci-robot-push"],
        ),
    ];
    for (dir, args, needles) in cases {
        let dir = ex(dir);
        let mut all = vec!["policy", "check", "--explain", "--policies", &dir];
        all.extend_from_slice(args);
        let out = ok(&all);
        for needle in *needles {
            assert!(
                out.stdout.contains(needle),
                "output lacks {needle:?}:\n{out}"
            );
        }
    }
}

#[test]
fn check_json_parses() {
    let out = ok(&[
        "policy",
        "check",
        "--account",
        "alice",
        "--scope",
        "repository:alice/app:pull,push",
        "--scope",
        "registry:catalog:*",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{out}"));
    let list = v.as_array().unwrap_or_else(|| panic!("not a list:\n{out}"));
    assert_eq!(list.len(), 2, "{out}");
    assert_eq!(list[0]["scope"], "repository:alice/app:pull,push", "{out}");
    assert_eq!(
        list[0]["granted"],
        serde_json::json!(["pull", "push"]),
        "{out}"
    );
    let push = &list[0]["actions"][1];
    assert_eq!(push["action"], "push", "{out}");
    assert_eq!(push["granted"], true, "{out}");
    assert_eq!(
        push["allowed_by"],
        serde_json::json!(["own-namespace"]),
        "{out}"
    );
    assert_eq!(list[1]["granted"], serde_json::json!([]), "{out}");
}

#[test]
fn check_user_takes_groups_from_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("berth.db");
    let env: &[(&str, &Path)] = &[("BERTH_DATABASE", &db)];
    let run = |args: &[&str], stdin: Option<&str>| {
        let out = berth_env(args, env, stdin);
        assert!(out.success(), "should succeed:\n{out}");
        out
    };
    run(
        &[
            "user",
            "add",
            "carol",
            "--group",
            "team-a",
            "--group",
            "admins",
            "--password-stdin",
        ],
        Some("carol-Secret-1\n"),
    );
    run(
        &["user", "add", "dave", "--password-stdin"],
        Some("dave-Secret-1\n"),
    );

    // Shipped policy: carol is in admins (from the database, not the command line).
    let out = run(
        &[
            "policy",
            "check",
            "--user",
            "carol",
            "--scope",
            "registry:catalog:*",
            "--explain",
        ],
        None,
    );
    assert!(
        out.stdout.contains("registry:catalog:* -> *") && out.stdout.contains("allowed by admins"),
        "{out}"
    );
    let out = run(
        &[
            "policy",
            "check",
            "--user",
            "dave",
            "--scope",
            "registry:catalog:*",
        ],
        None,
    );
    assert!(
        out.stdout.contains("registry:catalog:* -> (nothing)"),
        "{out}"
    );
    // The user is a `user`: own-namespace holds for them.
    let out = run(
        &[
            "policy",
            "check",
            "--user",
            "dave",
            "--scope",
            "repository:dave/x:push",
        ],
        None,
    );
    assert!(out.stdout.contains("-> push"), "{out}");

    // ${group} from the database's groups.
    let teams = repo().join("examples/policies/team-namespaces");
    let out = run(
        &[
            "policy",
            "check",
            "--user",
            "carol",
            "--policies",
            s(&teams),
            "--scope",
            "repository:team-a/api:pull,push",
            "--scope",
            "repository:team-b/api:pull",
            "--json",
        ],
        None,
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v[0]["granted"],
        serde_json::json!(["pull", "push"]),
        "{out}"
    );
    assert_eq!(v[1]["granted"], serde_json::json!([]), "{out}");

    let out = berth_env(
        &[
            "policy",
            "check",
            "--user",
            "nobody",
            "--scope",
            "repository:a/b:pull",
        ],
        env,
        None,
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("no user named nobody"), "{out}");
}

#[test]
fn lint_names_a_dead_rule() {
    let dir = policy_dir(
        r#"
[[rule]]
id = "anonymous-bob"
kind = "anonymous"
account = "bob"
allow = ["pull"]

[[rule]]
id = "fine"
name = "public/**"
allow = ["pull"]
"#,
    );
    let out = fails(&["policy", "lint", "--policies", s(dir.path())]);
    assert!(
        out.stdout.contains("rule anonymous-bob: can never match"),
        "{out}"
    );
    assert!(!out.stdout.contains("rule fine"), "{out}");
}

#[test]
fn lint_names_an_allow_a_deny_always_cancels() {
    let dir = policy_dir(
        r#"
[[rule]]
id = "release-delete"
name = "releases/**"
allow = ["delete"]

[[rule]]
id = "no-delete"
deny = ["delete"]
"#,
    );
    let out = fails(&["policy", "lint", "--policies", s(dir.path())]);
    assert!(
        out.stdout.contains("release-delete") && out.stdout.contains("no-delete"),
        "{out}"
    );
}

#[test]
fn broken_policy_gives_file_line_column() {
    let dir = policy_dir("# comment\n[[rule]]\nid = \"x\"\nbogus = 1\nallow = [\"pull\"]\n");
    let want = format!("{}:4:1", dir.path().join("p.toml").display());
    let scope = "repository:alice/app:pull";
    let p = s(dir.path());
    for args in [
        vec!["policy", "lint", "--policies", p],
        vec!["policy", "test", "--policies", p],
        vec![
            "policy",
            "check",
            "--policies",
            p,
            "--account",
            "a",
            "--scope",
            scope,
        ],
    ] {
        let out = fails(&args);
        assert!(
            out.stderr.contains(&want) && out.stderr.contains("bogus"),
            "error should say {want} and name the key:\n{out}"
        );
    }

    let cases = [
        // TOML syntax
        ("[[rule]]\nallow = [\"pull\"\nid = \"x\"\n", ":3:1"),
        // bad glob, bad CIDR, unknown placeholder, unknown kind
        ("[[rule]]\nname = \"a/[b]\"\nallow = [\"pull\"]\n", ":2:8"),
        (
            "[[rule]]\nip = [\"10.0.0.0/33\"]\nallow = [\"pull\"]\n",
            ":2:",
        ),
        (
            "[[rule]]\nname = \"${user}/**\"\nallow = [\"pull\"]\n",
            ":2:8",
        ),
        ("[[rule]]\nkind = \"admin\"\nallow = [\"pull\"]\n", ":2:"),
        // duplicate ids
        (
            "[[rule]]\nid = \"a\"\nallow = [\"pull\"]\n[[rule]]\nid = \"a\"\nallow = [\"push\"]\n",
            "duplicate rule id",
        ),
    ];
    let mut bad = Vec::new();
    for (text, want) in cases {
        let dir = policy_dir(text);
        let out = fails(&["policy", "lint", "--policies", s(dir.path())]);
        if !out.stderr.contains(want) || !out.stderr.contains("p.toml") {
            bad.push(format!("expected {want:?} for\n{text}\n{out}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}

/// The policy files of issue 3's bad input list; each must give a clear error
/// (or load, for the empty file) quickly and without a panic.
#[test]
fn bad_policy_files_fail_cleanly_and_quickly() {
    let long_name = format!("{}/app", "a".repeat(200));
    let scope = format!("repository:{long_name}:pull");
    let mut bad = Vec::new();
    // `lint` must exit with `lint_code` and say every `want`; `check` (with a
    // long scope name) must exit with `check_code`; neither may panic or hang.
    let mut check = |what: &str, dir: &Path, want: &[&str], lint_code: i32, check_code: i32| {
        let p = s(dir);
        let runs = [
            (vec!["policy", "lint", "--policies", p], lint_code, want),
            (
                vec![
                    "policy",
                    "check",
                    "--policies",
                    p,
                    "--account",
                    "a",
                    "--scope",
                    &scope,
                ],
                check_code,
                &[][..],
            ),
        ];
        for (args, code, want) in runs {
            let out = berth(&args);
            let text = format!("{}{}", out.stdout, out.stderr);
            let problem = if out.status.is_none() {
                Some("did not finish".to_owned())
            } else if out.stderr.contains("panicked") {
                Some("panicked".to_owned())
            } else if out.code() != Some(code) {
                Some(format!("exit code {:?}, expected {code}", out.code()))
            } else if !want.iter().all(|w| text.contains(w)) {
                Some(format!("output lacks one of {want:?}"))
            } else {
                None
            };
            eprintln!("{what}: {} in {:?}", args[1], out.elapsed);
            if let Some(problem) = problem {
                bad.push(format!("{what}: {problem}\n{out}"));
            }
        }
    };

    let dir = policy_dir("");
    check("empty file", dir.path(), &["p.toml: no rules"], 1, 0);

    let dir = policy_dir("");
    std::fs::write(
        dir.path().join("p.toml"),
        b"\x7fELF\x02\x01\x01\x00\x00\xff\xfe\x00\x00\x01[[rule]]",
    )
    .unwrap();
    check("binary file", dir.path(), &["p.toml", "UTF-8"], 1, 1);

    let dir = policy_dir("[[rule]]\u{0}\u{1}\u{2}\n");
    check("control characters", dir.path(), &["p.toml:1:"], 1, 1);

    let dir = policy_dir("");
    {
        let f = std::fs::File::create(dir.path().join("p.toml")).unwrap();
        let mut w = std::io::BufWriter::new(f);
        let rule = "[[rule]]\nname = \"x/**\"\nallow = [\"pull\"]\n";
        let mut n = 0usize;
        let mut written = 0usize;
        while written < 50 * 1024 * 1024 {
            let r = rule.replace("x/", &format!("x{n}/"));
            w.write_all(r.as_bytes()).unwrap();
            written += r.len();
            n += 1;
        }
        w.flush().unwrap();
    }
    check("50 MB file", dir.path(), &["p.toml", "larger than"], 1, 1);

    let depth = 100_000;
    let dir = policy_dir(&format!(
        "[[rule]]\nallow = [\"pull\"]\nname = {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    ));
    check("deeply nested array", dir.path(), &["p.toml:3:"], 1, 1);

    let dir = policy_dir(&format!(
        "x = {}1{}\n",
        "{a = ".repeat(depth),
        "}".repeat(depth)
    ));
    check(
        "deeply nested inline tables",
        dir.path(),
        &["p.toml:1:"],
        1,
        1,
    );

    let dir = policy_dir(&format!("[{}b]\nc = 1\n", "a.".repeat(10_000)));
    check("deeply nested table header", dir.path(), &["p.toml"], 1, 1);

    let dir = policy_dir(&format!(
        "[[rule]]\nallow = [\"pull\"]\nname = \"{}\"\n",
        "*".repeat(10_000)
    ));
    check("glob of 10,000 *", dir.path(), &["p.toml:3:"], 1, 1);

    let dir = policy_dir(&format!(
        "[[rule]]\nallow = [\"pull\"]\naccount = \"{}\"\n",
        "*".repeat(10_000)
    ));
    check("account glob of 10,000 *", dir.path(), &["p.toml:3:"], 1, 1);

    // The longest accepted glob, written to make a backtracking matcher
    // explode on a long name that almost matches: must still be quick.
    let glob = format!("{}b", "*a".repeat(250));
    let dir = policy_dir(&format!(
        "[[rule]]\nid = \"pathological\"\nallow = [\"pull\"]\nname = \"{glob}/app\"\n"
    ));
    check("pathological glob", dir.path(), &["no findings"], 0, 0);

    // A rule matching every name: loads, grants, lints clean.
    let dir = policy_dir("[[rule]]\nid = \"all\"\nname = \"**\"\nallow = [\"pull\"]\n");
    check(
        "rule matching every name",
        dir.path(),
        &["no findings"],
        0,
        0,
    );
    let out = ok(&[
        "policy",
        "check",
        "--policies",
        s(dir.path()),
        "--scope",
        &scope,
    ]);
    assert!(out.stdout.contains("-> pull"), "{out}");

    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}
