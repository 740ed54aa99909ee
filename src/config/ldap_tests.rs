//! `[[ldap]]` validation: defaults, Active Directory defaults, every refusal
//! naming its key, secrets never echoed, and the shipped example.

#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    ldap: Vec<RawDirectory>,
}

fn parse_with(text: &str, order: &[Backend]) -> Result<Vec<DirectoryConfig>, String> {
    let d: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
    validate(d.ldap, order).map_err(|e| e.to_string())
}

fn parse(text: &str) -> Result<Vec<DirectoryConfig>, String> {
    parse_with(text, &[Backend::Local, Backend::Oidc, Backend::Ldap])
}

const MIN: &str =
    "[[ldap]]\nurl = 'ldap://ldap.example.com'\nuser_base = 'ou=people,dc=example,dc=com'\n";

#[test]
fn defaults() {
    let d = &parse(MIN).unwrap()[0];
    assert_eq!(d.name, "ldap");
    assert_eq!(
        d.urls,
        vec![ServerUrl {
            url: "ldap://ldap.example.com".into(),
            transport: Transport::StartTls
        }]
    );
    assert_eq!(d.bind, None);
    assert_eq!(
        d.user,
        UserLookup::Search {
            base: "ou=people,dc=example,dc=com".into(),
            scope: UserScope::Subtree,
            filter: "(&(objectClass=person)(uid={username}))".into()
        }
    );
    assert_eq!(d.username_attribute, "uid");
    assert_eq!(d.group_attribute.as_deref(), Some("memberOf"));
    assert_eq!(d.group_search, None);
    assert_eq!(d.group_name_attribute, "cn");
    // On by default: a directory group `admins` is `ldap:admins` in policy.
    assert_eq!(d.groups_prefix, "ldap:");
    assert_eq!(d.max_groups, 1000);
    assert_eq!(d.revalidate, Duration::from_secs(300));
    assert_eq!(d.cache_ttl, Duration::from_secs(30));
    assert_eq!(d.connect_timeout, Duration::from_secs(5));
    assert_eq!(d.pool_size, 8);
    assert!(parse("").unwrap().is_empty());
}

#[test]
fn active_directory_defaults() {
    let d = &parse(&format!("{MIN}active_directory = true\nname = 'corp'\nurl = ['ldaps://dc1.corp.example', 'ldaps://dc2.corp.example:3269/']\n").replace("url = 'ldap://ldap.example.com'\n", ""))
        .unwrap()[0];
    assert_eq!(d.username_attribute, "sAMAccountName");
    assert_eq!(d.groups_prefix, "corp:");
    assert_eq!(d.urls.len(), 2);
    assert_eq!(d.urls[1].url, "ldaps://dc2.corp.example:3269");
    assert_eq!(d.urls[1].transport, Transport::Ldaps);
    match &d.user {
        UserLookup::Search { filter, .. } => {
            assert!(filter.contains("sAMAccountName={username}"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inline_password_is_refused_without_echo() {
    let e = parse(&format!(
        "{MIN}bind_dn = 'cn=berth,dc=example,dc=com'\nbind_password = 'hunter2-very-secret'\n"
    ))
    .unwrap_err();
    assert!(e.contains("bind_password"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn errors_name_the_key() {
    for (text, needle) in [
        ("[[ldap]]\nuser_base='dc=x'", "ldap[0].url"),
        ("[[ldap]]\nurl='http://x'\nuser_base='dc=x'", "ldap[0].url"),
        (
            "[[ldap]]\nurl='ldap://x/dc=x?uid'\nuser_base='dc=x'",
            "ldap[0].url",
        ),
        (&format!("{MIN}starttls = false"), "ldap[0].url"),
        ("[[ldap]]\nurl='ldap://x'", "ldap[0].user_base"),
        (
            &format!("{MIN}user_dn='uid={{username}},dc=x'"),
            "ldap[0].user_dn",
        ),
        (
            &format!("{MIN}user_filter='(uid=alice)'"),
            "ldap[0].user_filter",
        ),
        (
            &format!("{MIN}user_filter='(uid={{username}}'"),
            "ldap[0].user_filter",
        ),
        (&format!("{MIN}user_scope='base'"), "ldap[0].user_scope"),
        (
            &format!("{MIN}bind_dn='cn=b'"),
            "ldap[0].bind_password_file",
        ),
        (&format!("{MIN}bind_password_env='X'"), "ldap[0].bind_dn"),
        (
            &format!("{MIN}bind_dn='cn=b'\nbind_password_env='X'\nbind_password_file='/x'"),
            "ldap[0].bind_password_env",
        ),
        (
            &format!("{MIN}group_filter='(member={{dn}})'"),
            "ldap[0].group_base",
        ),
        (
            &format!("{MIN}group_base='dc=x'\ngroup_filter='(objectClass=group)'"),
            "ldap[0].group_filter",
        ),
        (
            &format!("{MIN}username_attribute='u id'"),
            "ldap[0].username_attribute",
        ),
        (
            &format!("{MIN}group_attribute='member Of'"),
            "ldap[0].group_attribute",
        ),
        (
            &format!("{MIN}groups_prefix='a b'"),
            "ldap[0].groups_prefix",
        ),
        (&format!("{MIN}max_groups=0"), "ldap[0].max_groups"),
        (&format!("{MIN}max_groups=10001"), "ldap[0].max_groups"),
        (&format!("{MIN}cache_ttl='1h'"), "ldap[0].cache_ttl"),
        (&format!("{MIN}revalidate='2d'"), "ldap[0].revalidate"),
        (
            &format!("{MIN}connect_timeout='0s'"),
            "ldap[0].connect_timeout",
        ),
        (
            &format!("{MIN}search_timeout='2m'"),
            "ldap[0].search_timeout",
        ),
        (&format!("{MIN}pool_size=0"), "ldap[0].pool_size"),
        (&format!("{MIN}name='Bad Name'"), "ldap[0].name"),
        (&format!("{MIN}{MIN}"), "ldap[1].name"),
        (&format!("{MIN}unknown_key=1"), "unknown"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn plaintext_needs_an_explicit_opt_in() {
    let d = &parse(&format!("{MIN}starttls = false\ninsecure_no_tls = true\n")).unwrap()[0];
    assert_eq!(d.urls[0].transport, Transport::Plain);
}

#[test]
fn a_directory_must_be_in_the_chain() {
    let e = parse_with(MIN, &[Backend::Local, Backend::Oidc]).unwrap_err();
    assert!(e.contains("auth_order"), "{e}");
    assert!(parse_with("", &[Backend::Local]).unwrap().is_empty());
}

struct NoEnv;
impl crate::config::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

#[test]
fn the_example_configuration_is_valid() {
    let path = std::path::Path::new("examples/ldap/berth.toml");
    let text = include_str!("../../examples/ldap/berth.toml");
    let c = crate::config::Config::from_toml(path, text, &NoEnv).unwrap();
    assert_eq!(c.ldap.len(), 1);
    assert_eq!(c.ldap[0].urls.len(), 2);
    assert!(c.ldap[0].group_search.is_some());
    assert_eq!(c.oidc.order, vec![Backend::Local, Backend::Ldap]);
    // The commented Active Directory table, switched on.
    let (_, ad) = text.split_once("# Active Directory").unwrap();
    let ad: String = ad
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
        .collect();
    let c = crate::config::Config::from_toml(path, &format!("{text}\n{ad}"), &NoEnv).unwrap();
    assert_eq!(c.ldap[1].name, "corp");
    assert_eq!(c.ldap[1].username_attribute, "sAMAccountName");
    assert_eq!(c.ldap[1].groups_prefix, "corp:");
}

#[test]
fn group_search_default_filter_covers_both_styles() {
    let d = &parse(&format!(
        "{MIN}group_base='ou=groups,dc=example,dc=com'\ngroup_attribute=''\n"
    ))
    .unwrap()[0];
    assert_eq!(d.group_attribute, None);
    let gs = d.group_search.as_ref().unwrap();
    assert!(gs.filter.contains("member={dn}") && gs.filter.contains("memberUid={username}"));
}
