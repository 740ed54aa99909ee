//! `berth policy check|test|lint|who-can|diff`, run as the real binary: the
//! shipped policy and examples pass their tests and lint clean, failures say
//! what and why, bad policy files give a located error quickly instead of a
//! panic or a hang, and the example policy repository's CI script runs. Also
//! the documentation: relative links and anchors resolve, and the generated
//! compatibility table keeps its place (`docs.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

#[path = "policy_cli/bad_input.rs"]
mod bad_input;
#[path = "policy_cli/config_cli.rs"]
mod config_cli;
#[path = "policy_cli/diff.rs"]
mod diff;
#[path = "policy_cli/docs.rs"]
mod docs;
#[path = "policy_cli/empty_dir.rs"]
mod empty_dir;
#[path = "policy_cli/policy_repo.rs"]
mod policy_repo;
#[path = "policy_cli/seed.rs"]
mod seed;
#[path = "policy_cli/support.rs"]
mod support;
#[path = "policy_cli/who_can.rs"]
mod who_can;

use std::path::Path;

use serde_json::Value;

use support::{berth, berth_env, example_dirs, fails, ok, policy_dir, repo, s};

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
fn ldap_example_policy_passes_its_tests_and_lints_clean() {
    let dir = repo().join("examples/ldap/policies");
    let test = berth(&["policy", "test", "--policies", s(&dir)]);
    assert!(
        test.success() && test.stdout.contains(" passed, 0 failed"),
        "{test}"
    );
    let lint = berth(&["policy", "lint", "--policies", s(&dir)]);
    assert!(
        lint.success() && lint.stdout.contains("no findings"),
        "{lint}"
    );
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

/// The group clash an attacker would use: the rule a 0.x berth shipped
/// (`group = "admins"`, any kind) lends everything to a federated user whose
/// provider sends a group named `admins`. Lint names it, `check` shows the
/// borrowed grant, and the shipped rule (with `kind`) lends nothing.
#[test]
fn lint_names_a_group_rule_a_federated_user_could_borrow() {
    let dir = policy_dir(
        r#"
[[rule]]
id = "admins"
group = "admins"
allow = ["*"]

[[rule]]
id = "teams"
name = "${group}/**"
allow = ["pull", "push"]
"#,
    );
    let out = fails(&["policy", "lint", "--policies", s(dir.path())]);
    for id in ["admins", "teams"] {
        assert!(
            out.stdout.contains(&format!("rule {id}: grants by"))
                && out.stdout.contains("without `kind`"),
            "{id}: {out}"
        );
    }
    assert!(out.stderr.contains("2 finding(s)"), "{out}");
    let borrowed = ok(&[
        "policy",
        "check",
        "--policies",
        s(dir.path()),
        "--account",
        "mallory",
        "--kind",
        "federated",
        "--group",
        "admins",
        "--scope",
        "registry:catalog:*",
    ]);
    assert!(
        borrowed.stdout.contains("registry:catalog:* -> *"),
        "{borrowed}"
    );
    // The shipped policy: the same federated identity gets nothing.
    let shipped_dir = repo().join("policies");
    let shipped = ok(&[
        "policy",
        "check",
        "--policies",
        s(&shipped_dir),
        "--account",
        "mallory",
        "--kind",
        "federated",
        "--group",
        "admins",
        "--scope",
        "registry:catalog:*",
        "--scope",
        "repository:bob/app:pull,push",
    ]);
    assert!(
        shipped.stdout.contains("registry:catalog:* -> (nothing)")
            && shipped
                .stdout
                .contains("repository:bob/app:pull,push -> (nothing)"),
        "{shipped}"
    );
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
