#![allow(clippy::unwrap_used, clippy::panic)]
use super::load::parse_file;
use super::*;
use proptest::prelude::*;

fn policy(text: &str) -> Policy {
    parse_file("t.toml", text).unwrap().policy
}

fn user(name: &str, groups: &[&str]) -> Identity {
    Identity {
        subject: name.into(),
        kind: Kind::User,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        via: "local",
    }
}

fn eval(p: &Policy, id: &Identity, scope: &str) -> Vec<String> {
    let req = Request {
        identity: id,
        service: "registry",
        ip: None,
    };
    evaluate(p, &req, &scope.parse().unwrap())
        .granted
        .into_iter()
        .collect()
}

const DEFAULT: &str = include_str!("../../policies/default.toml");

#[test]
fn default_policy() {
    let p = policy(DEFAULT);
    let alice = user("alice", &[]);
    assert_eq!(
        eval(&p, &alice, "repository:alice/app:pull,push"),
        ["pull", "push"]
    );
    assert_eq!(eval(&p, &alice, "repository:alice/a/b:delete"), ["delete"]);
    assert!(eval(&p, &alice, "repository:bob/app:pull,push").is_empty());
    assert!(eval(&p, &alice, "registry:catalog:*").is_empty());
    assert!(eval(&p, &alice, "repository:alice/app:*").is_empty());
    let admin = user("admin", &["admins"]);
    assert_eq!(eval(&p, &admin, "registry:catalog:*"), ["*"]);
    assert_eq!(
        eval(&p, &admin, "repository:bob/app:pull,push"),
        ["pull", "push"]
    );
    let anon = Identity::anonymous();
    assert!(eval(&p, &anon, "repository:alice/app:pull").is_empty());
}

#[test]
fn deny_wins_and_partial_grants() {
    let p = policy(
        r#"
[[rule]]
name = "releases/**"
allow = ["pull", "push", "delete"]
[[rule]]
id = "no-delete"
name = "releases/**"
deny = ["delete"]
"#,
    );
    let u = user("u", &[]);
    assert_eq!(eval(&p, &u, "repository:releases/x:pull,delete"), ["pull"]);
    assert!(eval(&p, &u, "repository:releases/x:*").is_empty());
}

#[test]
fn kind_and_service_and_group_globs() {
    let p = policy(
        r#"
[[rule]]
kind = "anonymous"
service = "public-*"
name = "mirror/**"
allow = ["pull"]
[[rule]]
group = "team-*"
name = "${group}/**"
allow = ["pull", "push"]
"#,
    );
    let anon = Identity::anonymous();
    let req = |service| Request {
        identity: &anon,
        service,
        ip: None,
    };
    let scope: Scope = "repository:mirror/x:pull".parse().unwrap();
    assert_eq!(evaluate(&p, &req("public-reg"), &scope).granted.len(), 1);
    assert!(evaluate(&p, &req("private"), &scope).granted.is_empty());
    let dev = user("dev", &["team-a", "other"]);
    assert_eq!(eval(&p, &dev, "repository:team-a/app:push"), ["push"]);
    assert!(eval(&p, &dev, "repository:other/app:push").is_empty());
}

#[test]
fn load_errors_have_locations() {
    let cases = [
        ("[[rule]]\nallow = ['pull']\nbogus = 1\n", "3:1"),
        ("[[rule]]\nname = '${nope}/x'\nallow = ['pull']\n", "2:8"),
        ("[[rule]]\nkind = 'martian'\nallow = ['pull']\n", "2:8"),
        ("[[rule]]\nname = 'x'\n", "1:1"),
        ("[[rule]]\nallow = ['Pull']\n", "2:10"),
        ("[[rule\n", "1:"),
    ];
    for (text, loc) in cases {
        let e = parse_file("f.toml", text).unwrap_err();
        assert!(
            e.location.starts_with("f.toml:") && e.location.contains(loc),
            "{text:?} -> {e}"
        );
    }
    let w = parse_file("f.toml", "[[rule]]\nallow = ['frob']\n").unwrap();
    assert_eq!(w.warnings.len(), 1);
}

#[test]
fn duplicate_ids_across_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[rule]]\nid='x'\nallow=['pull']\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[[rule]]\nid='x'\nallow=['pull']\n",
    )
    .unwrap();
    let e = load_dir(dir.path()).unwrap_err();
    assert!(e.reason.contains("duplicate"), "{e}");
}

#[test]
fn hostile_files() {
    assert!(parse_file("f.toml", "").unwrap().policy.rules().is_empty());
    let nested = format!("a = {}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(parse_file("f.toml", &nested).is_err());
    let stars = format!(
        "[[rule]]\nname = '{}'\nallow=['pull']\n",
        "*".repeat(10_000)
    );
    assert!(parse_file("f.toml", &stars).is_err());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bin.toml"), [0xffu8, 0xfe, 0, 1]).unwrap();
    assert!(load_dir(dir.path()).is_err());
}

fn arb_actions() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![Just("pull"), Just("push"), Just("delete"), Just("*")].prop_map(String::from),
        0..3,
    )
}

prop_compose! {
    fn arb_rule()(
        name in prop_oneof![Just(None), Just(Some("a/**")), Just(Some("${account}/*")), Just(Some("a/b")),
            Just(Some("*/d")), Just(Some("*/c/*")), Just(Some("u")), Just(Some("**/x"))],
        group in prop_oneof![Just(None), Just(Some("g*")), Just(Some("admins"))],
        allow in arb_actions(),
        deny in arb_actions(),
    ) -> String {
        let mut s = String::from("[[rule]]\n");
        if let Some(n) = name { s += &format!("name = '{n}'\n"); }
        if let Some(g) = group { s += &format!("group = '{g}'\n"); }
        let mut allow = allow;
        if allow.is_empty() && deny.is_empty() { allow.push("pull".into()); }
        s += &format!("allow = {allow:?}\ndeny = {deny:?}\n");
        s
    }
}

fn arb_request() -> impl Strategy<Value = (Identity, Scope)> {
    (
        prop_oneof![Just("a"), Just("u")],
        proptest::collection::vec(prop_oneof![Just("g1"), Just("admins")], 0..2),
        prop_oneof![Just("a/b"), Just("a/c/d"), Just("u/x"), Just("z")],
        proptest::collection::btree_set(
            prop_oneof![Just("pull"), Just("push"), Just("delete"), Just("*")],
            1..4,
        ),
    )
        .prop_map(|(acct, groups, name, actions)| {
            let id = user(acct, &groups);
            let actions: Vec<_> = actions.into_iter().collect();
            let scope = format!("repository:{name}:{}", actions.join(","))
                .parse()
                .unwrap();
            (id, scope)
        })
}

proptest! {
    #[test]
    fn policy_properties(rules in proptest::collection::vec(arb_rule(), 0..6), (id, scope) in arb_request()) {
        let text: String = rules.concat();
        let p = policy(&text);
        let req = Request { identity: &id, service: "registry", ip: None };
        let d = evaluate(&p, &req, &scope);
        // granted ⊆ requested, and granted/refused partition the request.
        prop_assert!(d.granted.is_subset(&scope.actions));
        prop_assert_eq!(d.granted.len() + d.refused.len(), scope.actions.len());
        // deny always wins.
        for r in p.rules() {
            if r.matches(&req, &scope) {
                for a in &d.granted {
                    prop_assert!(!covers(&r.deny, a));
                }
            }
        }
        // the index never hides a matching rule.
        let mut brute: Vec<_> = p.rules().iter().filter(|r| r.matches(&req, &scope)).map(|r| r.id.clone()).collect();
        let mut matched = d.matched.clone();
        brute.sort();
        matched.sort();
        prop_assert_eq!(brute, matched);
        // rule order never changes the result.
        let mut rev_rules = p.rules().to_vec();
        rev_rules.reverse();
        let reversed = Policy::new(rev_rules);
        prop_assert_eq!(evaluate(&reversed, &req, &scope).granted, d.granted.clone());
        // no rules, nothing granted.
        prop_assert!(evaluate(&Policy::default(), &req, &scope).granted.is_empty());
        // parsing the same text again gives the same decision.
        prop_assert_eq!(evaluate(&policy(&text), &req, &scope), d);
    }

    #[test]
    fn policy_parser_never_panics(s in "\\PC{0,200}") {
        let _ = parse_file("f.toml", &s);
    }
}
