//! Broken and hostile input: located errors, exit code 1, no panic, no hang.

use std::io::Write;
use std::path::Path;

use crate::support::{berth, fails, ok, policy_dir, s};

const ANY_POLICY: &str = "[[rule]]\nid = \"pull-all\"\nname = \"**\"\nallow = [\"pull\"]\n";

#[test]
fn test_without_test_files_fails() {
    let dir = policy_dir(ANY_POLICY);
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
    let dir = policy_dir(ANY_POLICY);
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

/// The policy files of the policy language's bad-input list; each must give a clear error
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
            let problem = if out.timed_out {
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
