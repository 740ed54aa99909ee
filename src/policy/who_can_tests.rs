#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use crate::policy::load::parse_file;
use crate::policy::{evaluate, Request};

fn policy(text: &str) -> Policy {
    parse_file("w.toml", text).unwrap().policy
}

fn acct(name: &str, groups: &[&str]) -> Account {
    Account {
        name: name.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        disabled: false,
    }
}

fn dir() -> Directory {
    Directory {
        users: vec![
            acct("alice", &["team-a"]),
            acct("bob", &["team-b", "interns"]),
            acct("carol", &["admins"]),
            acct("dave", &[]),
        ],
        robots: vec![acct("robot$ci", &["team-a"]), acct("robot$other", &[])],
        role_prefixes: vec!["role:".into()],
    }
}

fn ask(p: &Policy, repo: &str, action: &str, service: &str) -> Vec<WhoEntry> {
    who_can(p, &parse_target(repo, action).unwrap(), service, &dir())
}

fn find<'a>(list: &'a [WhoEntry], who: Who, name: &str) -> Option<&'a WhoEntry> {
    list.iter().find(|e| e.who == who && e.name == name)
}

#[track_caller]
fn has<'a>(list: &'a [WhoEntry], who: Who, name: &str) -> &'a WhoEntry {
    find(list, who, name).unwrap_or_else(|| panic!("no {who:?} {name} in {list:#?}"))
}

fn names(list: &[WhoEntry], who: Who) -> Vec<&str> {
    list.iter()
        .filter(|e| e.who == who)
        .map(|e| e.name.as_str())
        .collect()
}

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
id = "admins"
kind = ["user", "robot"]
group = "admins"
allow = ["*"]

[[rule]]
id = "no-interns-push"
group = "interns"
deny = ["push"]

[[rule]]
id = "provider-team"
kind = "federated"
group = "kc:team-*"
name = "team-*/**"
allow = ["pull"]

[[rule]]
id = "provider-role"
kind = "federated"
group = "role:pusher"
name = "team-a/**"
allow = ["push"]

[[rule]]
id = "ldap-devs"
kind = "directory"
group = "cn=devs"
name = "team-a/**"
allow = ["pull"]

[[rule]]
id = "ci-accounts"
account = "ci-*"
type = "repository"
name = "team-a/**"
allow = ["push"]

[[rule]]
id = "public"
kind = "anonymous"
service = "public"
name = "team-a/docs"
allow = ["pull"]

[[rule]]
id = "any-robot"
kind = "robot"
name = "team-a/**"
allow = ["pull"]

[[rule]]
id = "everyone-docs"
name = "team-a/docs"
allow = ["pull"]

[[rule]]
id = "office"
kind = "user"
ip = "10.0.0.0/8"
name = "team-a/**"
allow = ["delete"]

[[rule]]
id = "catalog-only"
type = "registry"
allow = ["*"]
"#;

#[test]
fn stored_accounts_are_decided_with_their_own_groups() {
    let p = policy(POLICY);
    let got = ask(&p, "team-a/api", "push", "registry");
    assert_eq!(names(&got, Who::User), ["alice", "carol"]);
    assert_eq!(has(&got, Who::User, "alice").allowed_by, ["teams"]);
    assert_eq!(has(&got, Who::User, "carol").allowed_by, ["admins"]);
    assert_eq!(names(&got, Who::Robot), ["robot$ci"]);
    // ${account}: bob owns bob/**, alice does not.
    let got = ask(&p, "bob/x", "push", "registry");
    let bob = has(&got, Who::User, "bob");
    assert_eq!(bob.allowed_by, ["own"]);
    // …but interns may not push anywhere: cancelled, with the deny named.
    assert!(!bob.granted);
    assert_eq!(bob.denied_by, ["no-interns-push"]);
    assert!(find(&got, Who::User, "alice").is_none());
    // The rules' side: the account the placeholder stands for.
    let owner = has(&got, Who::Account, "bob");
    assert_eq!(owner.kinds, [Kind::User]);
    assert_eq!(owner.allowed_by, ["own"]);
    assert!(owner.granted);
    assert_eq!(owner.may_be_denied_by, ["no-interns-push"]);
}

#[test]
fn stored_accounts_agree_with_evaluate() {
    let p = policy(POLICY);
    let d = dir();
    for repo in [
        "team-a/api",
        "team-b/x",
        "bob/x",
        "alice/a/b",
        "team-a/docs",
        "x",
    ] {
        for action in ["pull", "push", "delete", "*"] {
            let scope = parse_target(repo, action).unwrap();
            let got = who_can(&p, &scope, "registry", &d);
            for (who, list, kind) in [
                (Who::User, &d.users, Kind::User),
                (Who::Robot, &d.robots, Kind::Robot),
            ] {
                for a in list {
                    let id = Identity {
                        subject: a.name.clone(),
                        kind,
                        groups: a.groups.clone(),
                        via: "t",
                    };
                    let req = Request {
                        identity: &id,
                        service: "registry",
                        ip: None,
                    };
                    let granted = !evaluate(&p, &req, &scope).granted.is_empty();
                    let entry = find(&got, who, &a.name);
                    // Without an address, only rules without `ip` count.
                    let listed = entry.is_some_and(|e| {
                        e.granted && e.conditions.iter().all(|c| !c.starts_with("from "))
                    });
                    assert_eq!(granted, listed, "{repo} {action} {}: {entry:?}", a.name);
                }
            }
        }
    }
}

#[test]
fn groups_federated_groups_roles_and_directory_groups() {
    let p = policy(POLICY);
    let got = ask(&p, "team-a/api", "push", "registry");
    // ${group} resolved against the name, only for groups the rule's `group` admits.
    let team = has(&got, Who::Group, "team-a");
    assert_eq!(team.kinds, [Kind::User, Kind::Robot]);
    assert_eq!(team.allowed_by, ["teams"]);
    assert_eq!(team.may_be_denied_by, ["no-interns-push"]);
    assert!(team.granted);
    assert_eq!(has(&got, Who::Group, "admins").allowed_by, ["admins"]);
    assert_eq!(
        has(&got, Who::FederatedRole, "role:pusher").allowed_by,
        ["provider-role"]
    );
    assert!(
        find(&got, Who::FederatedGroup, "kc:team-*").is_none(),
        "pull only"
    );
    let got = ask(&p, "team-a/api", "pull", "registry");
    let fed = has(&got, Who::FederatedGroup, "kc:team-*");
    assert_eq!(fed.kinds, [Kind::Federated]);
    assert_eq!(
        has(&got, Who::DirectoryGroup, "cn=devs").kinds,
        [Kind::Directory]
    );
    // A group that is not team-* does not make a namespace.
    let got = ask(&p, "interns/x", "pull", "registry");
    assert!(find(&got, Who::Group, "interns").is_none(), "{got:#?}");
}

#[test]
fn account_patterns_kinds_anonymous_and_everyone() {
    let p = policy(POLICY);
    let got = ask(&p, "team-a/docs", "pull", "registry");
    assert_eq!(has(&got, Who::Kind, "robot").allowed_by, ["any-robot"]);
    assert_eq!(
        has(&got, Who::Everyone, "everyone").allowed_by,
        ["everyone-docs"]
    );
    // `service` decides: anonymous only on the public service.
    assert!(find(&got, Who::Anonymous, "anonymous").is_none());
    let got = ask(&p, "team-a/docs", "pull", "public");
    assert_eq!(
        has(&got, Who::Anonymous, "anonymous").allowed_by,
        ["public"]
    );
    // An account pattern stays a pattern; stored users matching it are decided by name.
    let got = ask(&p, "team-a/api", "push", "registry");
    let ci = has(&got, Who::Account, "ci-*");
    assert!(ci.kinds.is_empty());
    assert_eq!(ci.allowed_by, ["ci-accounts"]);
}

#[test]
fn address_and_type_fields() {
    let p = policy(POLICY);
    let got = ask(&p, "team-a/api", "delete", "registry");
    let office = has(&got, Who::Kind, "user");
    assert_eq!(office.conditions, ["from 10.0.0.0/8"]);
    let dave = has(&got, Who::User, "dave");
    assert_eq!(dave.conditions, ["from 10.0.0.0/8"]);
    assert_eq!(dave.allowed_by, ["office"]);
    // `type = "registry"` never answers for a repository.
    for e in &got {
        assert!(!e.allowed_by.contains(&"catalog-only".to_owned()), "{e:?}");
    }
}

#[test]
fn denies_always_some_and_never() {
    let p = policy(
        r#"
[[rule]]
id = "grant"
kind = ["user", "robot"]
group = "team-*"
name = "prod/**"
allow = ["pull", "push"]
[[rule]]
id = "freeze"
name = "prod/**"
deny = ["push"]
[[rule]]
id = "robots-never"
kind = "robot"
name = "prod/api"
deny = ["*"]
[[rule]]
id = "anon-irrelevant"
account = "mallory"
name = "prod/**"
deny = ["push"]
[[rule]]
id = "not-this-repo"
name = "dev/**"
deny = ["push"]
"#,
    );
    let got = ask(&p, "prod/api", "push", "registry");
    let team = has(&got, Who::Group, "team-*");
    assert!(!team.granted);
    assert_eq!(team.denied_by, ["freeze"]);
    assert_eq!(team.may_be_denied_by, ["anon-irrelevant", "robots-never"]);
    let got = ask(&p, "prod/api", "pull", "registry");
    let team = has(&got, Who::Group, "team-*");
    assert!(team.granted);
    assert_eq!(team.may_be_denied_by, ["robots-never"]);
}

#[test]
fn disabled_accounts_are_marked() {
    let p = policy(POLICY);
    let mut d = dir();
    d.users[0].disabled = true;
    let got = who_can(
        &p,
        &parse_target("team-a/x", "pull").unwrap(),
        "registry",
        &d,
    );
    assert_eq!(has(&got, Who::User, "alice").conditions, ["disabled"]);
}

#[test]
fn patterns_and_bad_names_are_refused() {
    for bad in [
        "team-*/app",
        "team-a/**",
        "a?",
        "${account}/x",
        "a[b]",
        "{a,b}",
    ] {
        let e = parse_target(bad, "pull").unwrap_err();
        assert!(e.contains("is a pattern"), "{bad}: {e}");
    }
    assert!(parse_target("Team/App", "pull")
        .unwrap_err()
        .contains("invalid repository name"));
    assert!(parse_target("", "pull").is_err());
    assert!(parse_target("a/b", "PULL")
        .unwrap_err()
        .contains("invalid action"));
    assert!(parse_target("a/b", "").is_err());
    assert!(parse_target("a/b", "*").is_ok());
}

#[test]
fn placeholders_bind_inside_one_component_and_long_names_stay_cheap() {
    let p = policy(
        r#"
[[rule]]
id = "suffix"
kind = "user"
name = "apps/${account}-*"
allow = ["pull"]
"#,
    );
    let got = ask(&p, "apps/my-team-app", "pull", "registry");
    let mut owners = names(&got, Who::Account);
    owners.sort();
    assert_eq!(owners, ["my", "my-team"]);
    let long = format!("apps/{}", "a-".repeat(120) + "z");
    let start = std::time::Instant::now();
    let _ = ask(&p, &long, "pull", "registry");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // Both placeholders: pairs of separator runs, still cheap on long names.
    let both = policy(
        r#"
[[rule]]
id = "pair"
kind = "user"
name = "${group}/${account}-*"
allow = ["pull"]
"#,
    );
    let got = who_can(
        &both,
        &parse_target("team-a/bob-app", "pull").unwrap(),
        "registry",
        &dir(),
    );
    let e = has(&got, Who::Account, "bob");
    assert_eq!(e.conditions, ["in group team-a"]);
    let long = format!("{}/{}", "b".repeat(60), "c-".repeat(90) + "z");
    let start = std::time::Instant::now();
    let _ = who_can(
        &both,
        &parse_target(&long, "pull").unwrap(),
        "registry",
        &dir(),
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}
