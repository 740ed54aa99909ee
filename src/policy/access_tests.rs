#![allow(clippy::unwrap_used, clippy::panic)]
use std::collections::BTreeSet;

use super::*;
use crate::policy::load::parse_file;
use crate::policy::Kind;

fn policy(text: &str) -> Policy {
    parse_file("a.toml", text).unwrap().policy
}

fn id(kind: Kind, subject: &str, groups: &[&str]) -> Identity {
    Identity {
        subject: subject.into(),
        kind,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: "test",
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn patterns(entries: &[AccessEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.pattern.as_str()).collect()
}

const POLICY: &str = r#"
[[rule]]
id = "own-namespace"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push", "delete"]

[[rule]]
id = "admins"
kind = ["user", "robot"]
group = "admins"
allow = ["*"]

[[rule]]
id = "teams"
kind = ["user", "robot"]
group = "team-*"
type = "repository"
name = "${group}/**"
allow = ["pull", "push"]

[[rule]]
id = "releases-read"
type = "repository"
name = "releases/**"
allow = ["pull", "push"]

[[rule]]
id = "releases-are-forever"
name = "releases/**"
deny = ["delete", "push"]

[[rule]]
id = "public-mirror"
kind = "anonymous"
service = "public-*"
type = "repository"
name = "mirror/**"
allow = ["pull"]

[[rule]]
id = "office-only"
kind = "user"
ip = "10.0.0.0/8"
type = "repository"
name = "internal/*"
allow = ["pull"]

[[rule]]
id = "provider-team"
kind = "federated"
group = "kc:team-*"
type = "repository"
name = "shared/**"
allow = ["pull"]
"#;

#[test]
fn placeholders_resolve_for_the_identity() {
    let p = policy(POLICY);
    let carol = id(Kind::User, "carol", &["team-a", "staff", "team-b"]);
    let got = access_for(&p, &carol, "registry");
    assert_eq!(
        patterns(&got),
        ["${account}/**", "${group}/**", "internal/*", "releases/**"]
    );
    assert_eq!(got[0].names, ["carol/**"]);
    assert_eq!(got[0].granted_by, ["own-namespace"]);
    assert_eq!(got[0].actions, set(&["delete", "pull", "push"]));
    assert_eq!(got[0].effective, got[0].actions);
    // `${group}` binds only groups the rule's `group` lets through: not staff.
    assert_eq!(got[1].names, ["team-a/**", "team-b/**"]);
    assert!(got
        .iter()
        .all(|e| e.resource_type.as_deref() == Some("repository")));
}

#[test]
fn denies_are_attached_to_the_grants_they_cancel() {
    let p = policy(POLICY);
    let carol = id(Kind::User, "carol", &["team-a"]);
    let got = access_for(&p, &carol, "registry");
    let releases = got.iter().find(|e| e.pattern == "releases/**").unwrap();
    assert_eq!(releases.actions, set(&["pull", "push"]));
    assert_eq!(releases.denies.len(), 1);
    assert_eq!(releases.denies[0].rule, "releases-are-forever");
    assert_eq!(releases.denies[0].actions, set(&["push"]));
    assert!(releases.denies[0].everywhere);
    assert_eq!(releases.effective, set(&["pull"]));
    // The deny on releases/** does not touch carol's own namespace or the team's.
    for e in got.iter().filter(|e| e.pattern != "releases/**") {
        assert!(e.denies.is_empty(), "{e:?}");
    }
}

#[test]
fn a_wildcard_grant_loses_denied_actions_only_where_the_deny_holds() {
    let p = policy(POLICY);
    let admin = id(Kind::User, "root", &["admins"]);
    let got = access_for(&p, &admin, "registry");
    let all = got.iter().find(|e| e.granted_by == ["admins"]).unwrap();
    assert_eq!(all.resource_type, None);
    assert_eq!(all.pattern, "**");
    assert_eq!(all.actions, set(&["*"]));
    // The deny holds only under releases/**, so everything stays allowed elsewhere.
    assert_eq!(all.denies.len(), 1);
    assert_eq!(all.denies[0].actions, set(&["*", "delete", "push"]));
    assert!(!all.denies[0].everywhere);
    assert_eq!(all.effective, set(&["*"]));
}

#[test]
fn a_deny_everywhere_on_a_wildcard_leaves_the_other_actions() {
    let p = policy(
        r#"
[[rule]]
id = "all"
name = "ops/**"
allow = ["*"]
[[rule]]
id = "no-delete"
deny = ["delete"]
[[rule]]
id = "nothing-here"
name = "ops/**"
account = "mallory"
deny = ["*"]
"#,
    );
    let got = access_for(&p, &id(Kind::User, "u", &[]), "registry");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].effective, set(&["pull", "push"]));
    let got = access_for(&p, &id(Kind::User, "mallory", &[]), "registry");
    assert!(got[0].effective.is_empty(), "{got:?}");
    assert_eq!(got[0].denies.len(), 2);
}

#[test]
fn kinds_services_and_addresses() {
    let p = policy(POLICY);
    // releases-read names no kind: anonymous reads releases too.
    let anon = Identity::anonymous();
    assert_eq!(
        patterns(&access_for(&p, &anon, "registry")),
        ["releases/**"]
    );
    let got = access_for(&p, &anon, "public-eu");
    assert_eq!(patterns(&got), ["mirror/**", "releases/**"]);
    assert_eq!(got[0].granted_by, ["public-mirror"]);

    // A robot is not a user: no own namespace, no office rule.
    let robot = id(Kind::Robot, "robot$ci", &["team-a"]);
    assert_eq!(
        patterns(&access_for(&p, &robot, "registry")),
        ["${group}/**", "releases/**"]
    );

    let carol = id(Kind::User, "carol", &[]);
    let office = access_for(&p, &carol, "registry")
        .into_iter()
        .find(|e| e.pattern == "internal/*")
        .unwrap();
    assert_eq!(office.only_from, ["10.0.0.0/8"]);
}

#[test]
fn federated_groups_do_not_borrow_local_grants() {
    let p = policy(POLICY);
    let fed = id(Kind::Federated, "erin", &["team-a", "admins", "kc:team-x"]);
    let got = access_for(&p, &fed, "registry");
    assert_eq!(patterns(&got), ["releases/**", "shared/**"]);
    assert_eq!(got[1].granted_by, ["provider-team"]);
}

#[test]
fn rules_with_the_same_pattern_merge_and_the_order_is_fixed() {
    let p = policy(
        r#"
[[rule]]
id = "b"
name = "z/**"
allow = ["push"]
[[rule]]
id = "a"
name = "a/**"
allow = ["pull"]
[[rule]]
id = "c"
name = "z/**"
allow = ["pull"]
"#,
    );
    let u = id(Kind::User, "u", &[]);
    let got = access_for(&p, &u, "registry");
    assert_eq!(patterns(&got), ["a/**", "z/**"]);
    assert_eq!(got[1].granted_by, ["b", "c"]);
    assert_eq!(got[1].actions, set(&["pull", "push"]));
    assert_eq!(got, access_for(&p, &u, "registry"));
}

#[test]
fn overlap_is_conservative() {
    for (a, b) in [
        ("a/**", "a/b"),
        ("**", "x/y/z"),
        ("team-*/x", "team-a/x"),
        ("*", "anything"),
        ("a/*/c", "a/b/*"),
        ("a/b", "a/b/**"),
        ("v?", "v1"),
    ] {
        assert!(may_overlap(a, b), "{a} {b}");
        assert!(may_overlap(b, a), "{b} {a}");
    }
    for (a, b) in [
        ("a/**", "b/**"),
        ("a/b", "a/c"),
        ("a/b", "a/b/c"),
        ("team-*/x", "prod/x"),
        ("*-dev", "app-prod"),
        ("a/*", "a/b/c"),
    ] {
        assert!(!may_overlap(a, b), "{a} {b}");
        assert!(!may_overlap(b, a), "{b} {a}");
    }
}

#[test]
fn covering_is_decided_only_when_plain() {
    for (g, p) in [
        ("team-a/**", "team-a/app"),
        ("team-a/**", "team-a/x/y"),
        ("team-a/**", "team-a/*"),
        ("team-a/**", "team-a/x/**"),
        ("team-a/*", "team-a/app"),
        ("team-a/*", "team-a/*"),
        ("**", "anything/**"),
        ("alice/**", "alice/**"),
    ] {
        assert!(covers(g, p), "{g} covers {p}");
    }
    for (g, p) in [
        ("team-a/**", "team-b/app"),
        ("team-a/**", "team-a"),
        ("team-a/**", "team-*/app"),
        ("team-a/**", "**"),
        ("team-a/*", "team-a/x/y"),
        ("team-a/app", "team-a/*"),
        // Decidable in theory, refused by the plain rule: the user writes it narrower.
        ("team-a/*", "team-a/app-*"),
        ("team-a/**", "team-ab/app"),
    ] {
        assert!(!covers(g, p), "{g} does not cover {p}");
    }
}
