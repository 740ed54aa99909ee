#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use crate::policy::load::parse_file;

fn policy(text: &str) -> Policy {
    parse_file("d.toml", text).unwrap().policy
}

fn id(kind: Kind, subject: &str, groups: &[&str]) -> Identity {
    Identity {
        subject: subject.into(),
        kind,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: "test",
    }
}

fn scopes(s: &str) -> Vec<Scope> {
    parse_scopes(s).unwrap()
}

fn replay(d: &mut Differ<'_>, who: &Identity, scope: &str, weight: u64) {
    let sc = scopes(scope);
    d.add(&Replay {
        identity: who,
        service: "registry",
        ip: None,
        scopes: &sc,
        weight,
    });
}

fn only<'a>(r: &'a DiffReport, identity: &str, resource: &str) -> &'a [ActionChange] {
    let i = r
        .identities
        .iter()
        .find(|i| i.identity == identity)
        .unwrap_or_else(|| panic!("no {identity} in {r:#?}"));
    &i.resources
        .iter()
        .find(|x| x.resource == resource)
        .unwrap_or_else(|| panic!("no {resource} for {identity} in {r:#?}"))
        .actions
}

const LIVE: &str = r#"
[[rule]]
id = "own"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push", "delete"]

[[rule]]
id = "teams"
kind = ["user", "robot"]
group = "team-*"
name = "${group}/**"
allow = ["pull", "push"]

[[rule]]
id = "provider-teams"
kind = "federated"
group = "kc:team-*"
name = "shared/**"
allow = ["pull"]
"#;

#[test]
fn unchanged_policy_changes_nothing() {
    let p = policy(LIVE);
    let mut d = Differ::new(&p, &p);
    replay(
        &mut d,
        &id(Kind::User, "alice", &["team-a"]),
        "repository:team-a/x:pull,push",
        3,
    );
    let r = d.finish();
    assert_eq!(
        r.replayed,
        Counts {
            rows: 1,
            requests: 3
        }
    );
    assert!(r.identities.is_empty());
    assert!(!r.has_loss());
}

#[test]
fn losses_from_a_new_deny_are_weighted_and_name_both_sides() {
    let live = policy(LIVE);
    let cand = policy(&format!(
        "{LIVE}\n[[rule]]\nid = \"freeze\"\nname = \"team-a/**\"\ndeny = [\"push\"]\n"
    ));
    let mut d = Differ::new(&live, &cand);
    let alice = id(Kind::User, "alice", &["team-a"]);
    replay(&mut d, &alice, "repository:team-a/api:pull,push", 40);
    replay(&mut d, &alice, "repository:team-a/api:push", 2);
    replay(&mut d, &alice, "repository:team-b/api:push", 5);
    let r = d.finish();
    assert!(r.has_loss());
    assert_eq!(r.lost, 42);
    assert_eq!(r.gained, 0);
    let changes = only(&r, "user alice", "repository:team-a/api");
    assert_eq!(changes.len(), 1);
    let c = &changes[0];
    assert_eq!((c.action.as_str(), c.change), ("push", Change::Lost));
    assert_eq!((c.requests, c.rows), (42, 2));
    assert_eq!(c.live.allowed_by.iter().collect::<Vec<_>>(), ["teams"]);
    assert_eq!(c.candidate.denied_by.iter().collect::<Vec<_>>(), ["freeze"]);
    let text = r.to_string();
    assert!(
        text.contains("- push LOST on 42 requests (2 rows)"),
        "{text}"
    );
    assert!(
        text.contains("candidate allowed by teams; denied by freeze"),
        "{text}"
    );
}

#[test]
fn gains_and_placeholders_resolve_per_identity() {
    let live = policy(LIVE);
    // The candidate lets teams delete in their own namespace only.
    let cand = policy(&format!(
        "{LIVE}\n[[rule]]\nid = \"teams-delete\"\nkind = \"user\"\ngroup = \"team-*\"\nname = \"${{group}}/**\"\nallow = [\"delete\"]\n"
    ));
    let mut d = Differ::new(&live, &cand);
    let alice = id(Kind::User, "alice", &["team-a"]);
    let bob = id(Kind::User, "bob", &["team-b"]);
    replay(&mut d, &alice, "repository:team-a/x:delete", 1);
    replay(&mut d, &bob, "repository:team-a/x:delete", 1);
    replay(&mut d, &bob, "repository:bob/x:delete", 1);
    let r = d.finish();
    assert!(!r.has_loss());
    assert_eq!(r.gained, 1);
    let c = &only(&r, "user alice", "repository:team-a/x")[0];
    assert_eq!(c.change, Change::Gained);
    assert_eq!(
        c.candidate.allowed_by.iter().collect::<Vec<_>>(),
        ["teams-delete"]
    );
    assert!(c.live.allowed_by.is_empty());
    assert!(r.identities.iter().all(|i| i.identity != "user bob"));
}

#[test]
fn federated_groups_are_replayed_as_recorded() {
    let live = policy(LIVE);
    // The candidate drops the provider rule and widens the local one to federated users.
    let cand = policy(
        r#"
[[rule]]
id = "teams"
kind = ["user", "robot", "federated"]
group = "team-*"
name = "${group}/**"
allow = ["pull", "push"]
"#,
    );
    let mut d = Differ::new(&live, &cand);
    let erin = id(Kind::Federated, "erin", &["kc:team-x", "team-x"]);
    replay(
        &mut d,
        &erin,
        "repository:shared/lib:pull repository:team-x/a:push",
        7,
    );
    let r = d.finish();
    let lost = &only(&r, "federated erin", "repository:shared/lib")[0];
    assert_eq!((lost.change, lost.requests), (Change::Lost, 7));
    assert_eq!(
        lost.live.allowed_by.iter().collect::<Vec<_>>(),
        ["provider-teams"]
    );
    let gained = &only(&r, "federated erin", "repository:team-x/a")[0];
    assert_eq!(
        (gained.change, gained.action.as_str()),
        (Change::Gained, "push")
    );
    // The user's own namespace rule is gone too: a loss for alice.
    let mut d = Differ::new(&live, &cand);
    replay(
        &mut d,
        &id(Kind::User, "alice", &[]),
        "repository:alice/x:pull",
        1,
    );
    assert!(d.finish().has_loss());
}

#[test]
fn anonymous_and_wildcard_requests() {
    let live = policy("[[rule]]\nid = \"all\"\nname = \"pub/**\"\nallow = [\"*\"]\n");
    let cand = policy(
        "[[rule]]\nid = \"all\"\nname = \"pub/**\"\nallow = [\"*\"]\n[[rule]]\nid = \"nd\"\nname = \"pub/**\"\ndeny = [\"delete\"]\n",
    );
    let mut d = Differ::new(&live, &cand);
    replay(&mut d, &Identity::anonymous(), "repository:pub/x:*", 1);
    replay(&mut d, &Identity::anonymous(), "repository:pub/x:pull", 1);
    let r = d.finish();
    let c = only(&r, "anonymous", "repository:pub/x");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].action, "*");
    assert_eq!(c[0].candidate.denied_by.iter().collect::<Vec<_>>(), ["nd"]);
}

#[test]
fn rows_that_cannot_be_replayed_are_counted_not_guessed() {
    let p = policy(LIVE);
    let mut d = Differ::new(&p, &p);
    d.not_replayable(10);
    d.not_replayable(0);
    d.unreadable(1);
    let r = d.finish();
    assert_eq!(
        r.not_replayable,
        Counts {
            rows: 2,
            requests: 11
        }
    );
    assert_eq!(r.unreadable.rows, 1);
    assert_eq!(r.replayed.rows, 0);
    assert!(r
        .to_string()
        .contains("not replayable (no identity snapshot): 11 requests (2 rows)"));
}

#[test]
fn the_report_is_grouped_and_sorted() {
    let live = policy(LIVE);
    let cand = policy("");
    let mut d = Differ::new(&live, &cand);
    for (who, scope) in [
        ("bob", "repository:bob/z:pull"),
        ("alice", "repository:alice/b:push,pull"),
        ("alice", "repository:alice/a:pull"),
        ("bob", "repository:bob/z:pull"),
    ] {
        replay(&mut d, &id(Kind::User, who, &[]), scope, 1);
    }
    let r = d.finish();
    let names: Vec<&str> = r.identities.iter().map(|i| i.identity.as_str()).collect();
    assert_eq!(names, ["user alice", "user bob"]);
    let res: Vec<&str> = r.identities[0]
        .resources
        .iter()
        .map(|x| x.resource.as_str())
        .collect();
    assert_eq!(res, ["repository:alice/a", "repository:alice/b"]);
    let acts: Vec<&str> = r.identities[0].resources[1]
        .actions
        .iter()
        .map(|a| a.action.as_str())
        .collect();
    assert_eq!(acts, ["pull", "push"]);
    assert_eq!(only(&r, "user bob", "repository:bob/z")[0].rows, 2);
}

#[test]
fn cases_parse_like_test_files_and_report_locations() {
    let text = r#"
[[case]]
name = "team push"
account = "alice"
groups = ["team-a"]
scope = "repository:team-a/api:pull,push"
expect = ["pull", "push"]
count = 3

[[case]]
scope = "repository:pub/x:pull"
"#;
    let cases = cases::parse("c.toml", text).unwrap();
    assert_eq!(cases.len(), 2);
    let live = policy(LIVE);
    let cand = policy("");
    let mut d = Differ::new(&live, &cand);
    for c in &cases {
        c.replay(&mut d);
    }
    let r = d.finish();
    assert_eq!(
        r.replayed,
        Counts {
            rows: 2,
            requests: 4
        }
    );
    assert_eq!(r.lost, 6);
    let e = cases::parse(
        "c.toml",
        "[[case]]\nscope = 'repository:a:pull'\nbogus = 1\n",
    )
    .unwrap_err();
    assert!(e.starts_with("c.toml:3:1:"), "{e}");
    let e = cases::parse(
        "c.toml",
        "[[case]]\nname = 'x'\nscope = 'repository:A:pull'\n",
    )
    .unwrap_err();
    assert!(e.contains("x: invalid scope"), "{e}");
}
