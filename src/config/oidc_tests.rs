#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    oidc: Vec<RawProvider>,
    auth_order: Option<Vec<String>>,
    name_conflict: Option<String>,
}

fn parse(text: &str) -> Result<OidcSettings, String> {
    let d: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
    validate(d.oidc, d.auth_order, d.name_conflict).map_err(|e| e.to_string())
}

const MIN: &str = "[[oidc]]\nissuer = 'https://kc.example.com/realms/acme/'\nclient_id = 'berth'\nclient_secret_env = 'KC_SECRET'\n";

#[test]
fn defaults() {
    let s = parse(MIN).unwrap();
    let p = &s.providers[0];
    assert_eq!(p.name, "oidc");
    assert_eq!(p.issuer, "https://kc.example.com/realms/acme");
    assert_eq!(p.username_claim, "preferred_username");
    assert_eq!(p.groups_claim.as_deref(), Some("groups"));
    assert_eq!(p.groups_prefix, "oidc:", "provider groups are namespaced");
    assert_eq!(p.realm_roles_prefix, "role:");
    assert_eq!(p.client_roles, vec!["berth".to_owned()]);
    assert_eq!(p.audiences, vec!["berth".to_owned()]);
    assert_eq!(p.revalidate, Duration::from_secs(300));
    assert_eq!(p.timeout, Duration::from_secs(5));
    assert_eq!(p.token_username, TokenUsername::Match);
    assert_eq!(s.order, vec![Backend::Local, Backend::Oidc, Backend::Ldap]);
    assert_eq!(s.name_conflict, NameConflict::Refuse);
    assert_eq!(parse("").unwrap(), OidcSettings::default());
}

#[test]
fn inline_secret_is_refused_without_echo() {
    let e = parse(&format!("{MIN}client_secret = 'hunter2-very-secret'\n")).unwrap_err();
    assert!(e.contains("client_secret"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn errors_name_the_key() {
    for (text, needle) in [
        (
            "[[oidc]]\nclient_id='b'\nclient_secret_env='X'",
            "oidc[0].issuer",
        ),
        (
            "[[oidc]]\nissuer='ftp://x'\nclient_id='b'\nclient_secret_env='X'",
            "oidc[0].issuer",
        ),
        (
            "[[oidc]]\nissuer='https://x'\nclient_id='b'",
            "client_secret_file",
        ),
        (
            &format!("{MIN}client_secret_file='/x'"),
            "client_secret_env",
        ),
        (&format!("{MIN}token_username='maybe'"), "token_username"),
        (&format!("{MIN}timeout='0s'"), "timeout"),
        (&format!("{MIN}grant_cache_ttl='1h'"), "grant_cache_ttl"),
        (&format!("{MIN}name='Bad Name'"), "oidc[0].name"),
        (&format!("{MIN}{MIN}"), "oidc[1].name"),
        (&format!("auth_order=['oidc']\n{MIN}"), "auth_order"),
        (
            &format!("auth_order=['local','kerberos']\n{MIN}"),
            "auth_order",
        ),
        (
            &format!("auth_order=['local','ldap','ldap']\n{MIN}"),
            "auth_order",
        ),
        (&format!("name_conflict='merge'\n{MIN}"), "name_conflict"),
        (&format!("{MIN}groups_prefix='a b'"), "groups_prefix"),
    ] {
        let e = parse(text).unwrap_err();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn groups_prefix_defaults_to_the_provider_name_and_may_be_emptied() {
    let s = parse(&format!("{MIN}name = 'keycloak'\n")).unwrap();
    assert_eq!(s.providers[0].groups_prefix, "keycloak:");
    let s = parse(&format!("{MIN}groups_prefix = ''\n")).unwrap();
    assert_eq!(s.providers[0].groups_prefix, "");
}

#[test]
fn order_and_conflict() {
    let s = parse(&format!(
        "auth_order=['oidc','local']\nname_conflict='allow'\n{MIN}"
    ))
    .unwrap();
    assert_eq!(s.order, vec![Backend::Oidc, Backend::Local]);
    assert_eq!(s.name_conflict, NameConflict::Allow);
}
