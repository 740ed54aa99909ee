//! `berth policy who-can`, run as the real binary against a real database:
//! stored users and robots are listed by name with their own groups, the rest
//! as the rules describe them; patterns and unknown services are refused.

use std::path::Path;

use serde_json::Value;

use crate::seed::{seed, Seed};
use crate::support::{berth_env, policy_dir, s};

const POLICY: &str = r#"
[[rule]]
id = "own"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push"]

[[rule]]
id = "teams"
kind = ["user", "robot"]
group = "team-*"
type = "repository"
name = "${group}/**"
allow = ["pull", "push"]

[[rule]]
id = "sso-teams"
kind = "federated"
group = "sso:team-*"
name = "team-*/**"
allow = ["pull"]

[[rule]]
id = "freeze"
group = "interns"
deny = ["push"]

[[rule]]
id = "mirror"
kind = "anonymous"
name = "mirror/**"
allow = ["pull"]
"#;

fn entries(v: &Value) -> Vec<(String, String, bool)> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_owned(),
                e["name"].as_str().unwrap().to_owned(),
                e["granted"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn lists_stored_accounts_groups_and_patterns() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("berth.db");
    seed(
        &db,
        Seed {
            users: &[
                ("alice", &["team-a"]),
                ("bob", &["team-a", "interns"]),
                ("carol", &["team-b"]),
            ],
            robots: &[("deploy", &["team-a"])],
            rows: Vec::new(),
        },
    );
    let dir = policy_dir(POLICY);
    let env: &[(&str, &Path)] = &[("BERTH_DATABASE", &db)];
    let args = |repo: &'static str, action: &'static str| {
        vec![
            "policy",
            "who-can",
            repo,
            action,
            "--policies",
            s(dir.path()),
            "--json",
        ]
    };
    let out = berth_env(&args("team-a/api", "push"), env, None);
    assert!(out.success(), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let got = entries(&v);
    let want = [
        ("user", "alice", true),
        ("user", "bob", false),
        ("robot", "robot$deploy", true),
        ("group", "team-a", true),
        // `${account}/**` would let an account named team-a push too.
        ("account", "team-a", true),
    ];
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect();
    assert_eq!(got, want, "{out}");
    let bob = &v["entries"][1];
    assert_eq!(bob["denied_by"], serde_json::json!(["freeze"]), "{out}");
    assert_eq!(
        v["entries"][3]["may_be_denied_by"],
        serde_json::json!(["freeze"])
    );

    // Pull: the federated pattern and nobody else new; carol is in team-b.
    let out = berth_env(&args("team-a/api", "pull"), env, None);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let got = entries(&v);
    assert!(
        got.contains(&("federated-group".into(), "sso:team-*".into(), true)),
        "{out}"
    );
    assert!(!got.iter().any(|(_, n, _)| n == "carol"), "{out}");

    // ${account}: carol owns carol/x; anonymous reads the mirror.
    let out = berth_env(&args("carol/x", "push"), env, None);
    let got = entries(&serde_json::from_str(&out.stdout).unwrap());
    assert_eq!(got[0], ("user".into(), "carol".into(), true), "{out}");
    assert!(
        got.contains(&("account".into(), "carol".into(), true)),
        "{out}"
    );
    let out = berth_env(&args("mirror/debian", "pull"), env, None);
    let got = entries(&serde_json::from_str(&out.stdout).unwrap());
    assert_eq!(
        got,
        [
            ("account".to_owned(), "mirror".to_owned(), true),
            ("anonymous".to_owned(), "anonymous".to_owned(), true)
        ],
        "{out}"
    );

    // The text form names the rules.
    let out = berth_env(
        &[
            "policy",
            "who-can",
            "team-a/api",
            "push",
            "--policies",
            s(dir.path()),
        ],
        env,
        None,
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("yes user alice: allowed by teams"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("NO  user bob: allowed by teams; denied by freeze"),
        "{out}"
    );
}

#[test]
fn patterns_unknown_services_and_bad_actions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("berth.db");
    let dir = policy_dir(POLICY);
    let env: &[(&str, &Path)] = &[("BERTH_DATABASE", &db)];
    for (args, needle) in [
        (vec!["team-*/api", "push"], "is a pattern"),
        (vec!["team-a/**", "pull"], "is a pattern"),
        (vec!["Team/API", "pull"], "invalid repository name"),
        (vec!["team-a/api", "PUSH"], "invalid action"),
        (
            vec!["team-a/api", "pull", "--service", "nope"],
            "unknown service \"nope\"",
        ),
    ] {
        let mut full = vec!["policy", "who-can"];
        full.extend(args);
        full.extend(["--policies", s(dir.path())]);
        let out = berth_env(&full, env, None);
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(out.stderr.contains(needle), "{out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
}
