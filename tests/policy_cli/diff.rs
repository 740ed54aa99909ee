//! `berth policy diff`, run as the real binary: replaying the audit log of a
//! real database (weights, rows without snapshots, the time window, current
//! groups) and `--cases`; the exit status gates on losses; a candidate that
//! does not load stops before any replay.

use std::path::Path;

use serde_json::Value;

use crate::seed::{row, seed, Seed};
use crate::support::{berth_env, policy_dir, s};

const LIVE: &str = r#"
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
id = "mirror"
kind = "anonymous"
name = "mirror/**"
allow = ["pull"]
"#;

/// Pushes to team-a are frozen, SSO users lose their read, teams may delete.
const CANDIDATE: &str = r#"
[[rule]]
id = "teams"
kind = ["user", "robot"]
group = "team-*"
type = "repository"
name = "${group}/**"
allow = ["pull", "push", "delete"]

[[rule]]
id = "freeze-team-a"
name = "team-a/**"
deny = ["push"]

[[rule]]
id = "mirror"
kind = "anonymous"
name = "mirror/**"
allow = ["pull"]
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn changes(v: &Value) -> Vec<(String, String, String, String, u64)> {
    let mut out = Vec::new();
    for i in v["identities"].as_array().unwrap() {
        for r in i["resources"].as_array().unwrap() {
            for a in r["actions"].as_array().unwrap() {
                out.push((
                    i["identity"].as_str().unwrap().to_owned(),
                    r["resource"].as_str().unwrap().to_owned(),
                    a["action"].as_str().unwrap().to_owned(),
                    a["change"].as_str().unwrap().to_owned(),
                    a["requests"].as_u64().unwrap(),
                ));
            }
        }
    }
    out
}

fn c(i: &str, r: &str, a: &str, ch: &str, n: u64) -> (String, String, String, String, u64) {
    (i.into(), r.into(), a.into(), ch.into(), n)
}

#[test]
fn replays_the_audit_log_weighted_with_the_recorded_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("berth.db");
    let t = now() - 60;
    seed(
        &db,
        Seed {
            users: &[("alice", &["team-a"]), ("bob", &[])],
            robots: &[],
            rows: vec![
                row(
                    t,
                    "user",
                    "alice",
                    &["team-a"],
                    "repository:team-a/api:pull,push",
                    5,
                ),
                row(
                    t,
                    "user",
                    "alice",
                    &["team-a"],
                    "repository:team-a/api:delete",
                    2,
                ),
                // Older than the window: not replayed.
                row(
                    t - 40 * 86_400,
                    "user",
                    "alice",
                    &["team-a"],
                    "repository:team-a/x:push",
                    9,
                ),
                // Recorded in team-a; the database says bob has left it since.
                row(
                    t,
                    "user",
                    "bob",
                    &["team-a"],
                    "repository:team-a/api:push",
                    1,
                ),
                row(
                    t,
                    "federated",
                    "erin",
                    &["sso:team-a"],
                    "repository:team-a/api:pull",
                    3,
                ),
                row(
                    t,
                    "anonymous",
                    "",
                    &[],
                    "repository:mirror/debian:pull",
                    100,
                ),
                // Written before berth recorded identities.
                row(t, "", "carol", &[], "repository:team-a/api:push", 4),
                row(t, "", "carol", &[], "repository:team-a/api:pull", 1),
                // A user since deleted, and a row whose scope does not parse.
                row(
                    t,
                    "user",
                    "zed",
                    &["team-a"],
                    "repository:team-a/api:pull",
                    1,
                ),
                row(t, "user", "alice", &["team-a"], "not-a-scope", 1),
            ],
        },
    );
    let live = policy_dir(LIVE);
    let cand = policy_dir(CANDIDATE);
    let env: &[(&str, &Path)] = &[("BERTH_DATABASE", &db)];
    let base = vec![
        "policy",
        "diff",
        "--live",
        s(live.path()),
        "--policies",
        s(cand.path()),
    ];
    let run = |extra: &[&str]| {
        let mut args = base.clone();
        args.extend(extra);
        berth_env(&args, env, None)
    };

    let out = run(&["--json"]);
    assert_eq!(out.code(), Some(1), "a loss must fail:\n{out}");
    assert!(out.stderr.contains("would lose access"), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        changes(&v),
        [
            c("federated erin", "repository:team-a/api", "pull", "lost", 3),
            c("user alice", "repository:team-a/api", "delete", "gained", 2),
            c("user alice", "repository:team-a/api", "push", "lost", 5),
            c("user bob", "repository:team-a/api", "push", "lost", 1),
        ],
        "{out}"
    );
    assert_eq!(
        v["replayed"],
        serde_json::json!({"rows": 6, "requests": 112}),
        "{out}"
    );
    assert_eq!(
        v["not_replayable"],
        serde_json::json!({"rows": 2, "requests": 5}),
        "{out}"
    );
    assert_eq!(v["unreadable"]["rows"], 1, "{out}");
    assert_eq!(v["lost"], 9);
    assert_eq!(v["gained"], 2);
    let push = &v["identities"][1]["resources"][0]["actions"][1];
    assert_eq!(
        push["live"]["allowed_by"],
        serde_json::json!(["teams"]),
        "{out}"
    );
    assert_eq!(
        push["candidate"]["denied_by"],
        serde_json::json!(["freeze-team-a"]),
        "{out}"
    );

    // Text: grouped by identity and repository, counts, rules, the totals.
    let out = run(&[]);
    assert_eq!(out.code(), Some(1), "{out}");
    for needle in [
        "user alice\n  repository:team-a/api (service registry)\n",
        "- push LOST on 5 requests (1 row): live allowed by teams; candidate allowed by teams; denied by freeze-team-a",
        "+ delete gained on 2 requests (1 row): live no rule allows it; candidate allowed by teams",
        "not replayable (no identity snapshot): 5 requests (2 rows)",
    ] {
        assert!(out.stdout.contains(needle), "{needle:?} missing:\n{out}");
    }

    // A reviewed loss passes.
    let out = run(&["--allow-loss"]);
    assert!(out.success(), "{out}");

    // Today's groups: bob is no longer in team-a, so he loses nothing; zed is gone.
    let out = run(&["--current-groups", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(!changes(&v).iter().any(|c| c.0 == "user bob"), "{out}");
    assert_eq!(v["lost"], 8, "{out}");
    assert_eq!(v["gone"]["rows"], 1, "{out}");

    // A wider window takes the old row in.
    let out = run(&["--since", "60d", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["lost"], 18, "{out}");
}

#[test]
fn cases_replace_the_audit_log() {
    let live = policy_dir(LIVE);
    let cand = policy_dir(CANDIDATE);
    let tmp = tempfile::tempdir().unwrap();
    let cases = tmp.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
account = "alice"
groups = ["team-a"]
scope = "repository:team-a/api:pull,push"
count = 40
[[case]]
scope = "repository:mirror/x:pull"
expect = ["pull"]
"#,
    )
    .unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "policy",
            "diff",
            "--live",
            s(live.path()),
            "--policies",
            s(cand.path()),
            "--cases",
            s(&cases),
        ];
        a.extend(extra);
        a
    };
    // No database is read: BERTH_DATABASE points nowhere.
    let nowhere = tmp.path().join("no/such/dir/berth.db");
    let env: &[(&str, &Path)] = &[("BERTH_DATABASE", &nowhere)];
    let out = berth_env(&args(&["--json"]), env, None);
    assert_eq!(out.code(), Some(1), "{out}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        changes(&v),
        [c("user alice", "repository:team-a/api", "push", "lost", 40)]
    );
    assert!(!nowhere.exists());
    let out = berth_env(&args(&["--allow-loss"]), env, None);
    assert!(out.success(), "{out}");
    // Same policy on both sides: nothing changes, exit 0.
    let out = berth_env(
        &[
            "policy",
            "diff",
            "--live",
            s(live.path()),
            "--policies",
            s(live.path()),
            "--cases",
            s(&cases),
        ],
        env,
        None,
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .contains("grants lost: 0 requests; gained: 0 requests"),
        "{out}"
    );
}

#[test]
fn a_candidate_that_does_not_load_gives_its_location_and_no_diff() {
    let live = policy_dir(LIVE);
    let tmp = tempfile::tempdir().unwrap();
    let cases = tmp.path().join("cases.toml");
    std::fs::write(&cases, "[[case]]\nscope = 'repository:mirror/x:pull'\n").unwrap();
    for (text, loc) in [
        (
            "[[rule]]\nname = 'a/**'\nallow = ['pull']\nbogus = 1\n",
            "p.toml:4:1:",
        ),
        (
            "[[rule]]\nname = '${nope}/x'\nallow = ['pull']\n",
            "p.toml:2:8:",
        ),
        ("[[rule\n", "p.toml:1:"),
    ] {
        let cand = policy_dir(text);
        let out = berth_env(
            &[
                "policy",
                "diff",
                "--live",
                s(live.path()),
                "--policies",
                s(cand.path()),
                "--cases",
                s(&cases),
                "--allow-loss",
            ],
            &[],
            None,
        );
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(
            out.stderr.contains("candidate policy does not load"),
            "{out}"
        );
        assert!(out.stderr.contains(loc), "{loc}: {out}");
        assert!(
            out.stdout.is_empty(),
            "no diff on a broken candidate:\n{out}"
        );
    }
    // Bad cases: located too, and nothing printed.
    std::fs::write(
        &cases,
        "[[case]]\nscope = 'repository:mirror/x:pull'\nwho = 1\n",
    )
    .unwrap();
    let out = berth_env(
        &[
            "policy",
            "diff",
            "--live",
            s(live.path()),
            "--policies",
            s(live.path()),
            "--cases",
            s(&cases),
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("cases.toml:3:1:"), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
}
