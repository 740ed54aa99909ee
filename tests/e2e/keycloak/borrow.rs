//! Federated users never borrow local authority, tried against the real
//! Keycloak: a realm user whose only group is `/admins` (mallory) asks for the
//! catalog and for push to a local user's repository, with the documented
//! `[[oidc]]` settings and with the default group namespace, under the shipped
//! policy and the Keycloak example's. And a federated refresh token stops
//! working once a local account takes its name.

use std::path::Path;

use serde_json::Value;

use super::fixture::{self, keycloak};
use super::sync::{login, refresh};
use super::{
    kc_password, policies, start_berth, start_berth_with, DOCUMENTED_GROUPS, IDP_TIMEOUT,
    LOCAL_USER,
};
use crate::components::{jwt_claims, ADMIN_PASSWORD};
use crate::grants_nothing;

const CATALOG: &str = "registry:catalog:*";

fn claims(body: &Value) -> Value {
    jwt_claims(body["token"].as_str().unwrap_or_default())
}

#[test]
fn keycloak_realm_admins_group_borrows_no_local_authority() {
    let Some(kc) = keycloak("keycloak-group-clash") else {
        return;
    };
    let _kc = fixture::shared();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let example = policies();
    let push_other = format!("repository:{LOCAL_USER}/app:pull,push,delete");
    for (what, provider, dir) in [
        (
            "documented settings, shipped policy",
            DOCUMENTED_GROUPS,
            &shipped,
        ),
        (
            "documented settings, Keycloak example policy",
            DOCUMENTED_GROUPS,
            &example,
        ),
        ("default group namespace, shipped policy", "", &shipped),
    ] {
        let berth = start_berth_with(&kc.issuer(), IDP_TIMEOUT, "", provider, dir);
        let mallory = ("mallory", kc_password("mallory"));
        for scope in [CATALOG, push_other.as_str()] {
            let (status, body) = berth.get_token(Some((mallory.0, &mallory.1)), &[scope]);
            assert_eq!(
                status,
                200,
                "{what}: mallory signs in (Keycloak password): {body}\n{}",
                berth.log_tail(20)
            );
            let c = claims(&body);
            assert_eq!(c["sub"], "mallory", "{what}: {c}");
            assert!(
                grants_nothing(&c),
                "{what}: mallory (realm group /admins) must get nothing for {scope}: {c}\n{}",
                berth.log_tail(20)
            );
            eprintln!("ok: {what}: mallory (/admins) gets nothing for {scope}");
        }
        // The local group admins still holds: the rule is live, not dead.
        let (status, body) = berth.get_token(Some(("admin", ADMIN_PASSWORD)), &[CATALOG]);
        assert_eq!(status, 200, "{what}: local admin: {body}");
        assert_eq!(
            claims(&body)["access"][0]["actions"],
            serde_json::json!(["*"]),
            "{what}: the local admin lists the catalog"
        );
    }
}

/// With the default settings the realm group `/admins` arrives as
/// `keycloak:admins`: a rule for that name matches mallory, a federated rule
/// for the bare name `admins` does not.
#[test]
fn keycloak_groups_are_namespaced_by_default() {
    let Some(kc) = keycloak("keycloak-group-namespace") else {
        return;
    };
    let _kc = fixture::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ns.toml"),
        r#"
[[rule]]
id = "namespaced"
kind = "federated"
group = "keycloak:admins"
type = "repository"
name = "ns/**"
allow = ["pull"]

[[rule]]
id = "bare"
kind = "federated"
group = "admins"
type = "repository"
name = "bare/**"
allow = ["pull"]
"#,
    )
    .expect("policy");
    let berth = start_berth_with(&kc.issuer(), IDP_TIMEOUT, "", "", dir.path());
    let (status, body) = berth.get_token(
        Some(("mallory", &kc_password("mallory"))),
        &["repository:ns/app:pull", "repository:bare/app:pull"],
    );
    assert_eq!(status, 200, "mallory: {body}");
    let access = claims(&body)["access"].clone();
    assert_eq!(
        access,
        serde_json::json!([{"type": "repository", "name": "ns/app", "actions": ["pull"]},
                           {"type": "repository", "name": "bare/app", "actions": []}]),
        "only the namespaced group name matches"
    );
}

#[test]
fn keycloak_refresh_token_refused_once_a_local_account_takes_the_name() {
    let Some(kc) = keycloak("keycloak-refresh-clash") else {
        return;
    };
    let _kc = fixture::shared();
    let berth = start_berth(kc);
    let scope = "repository:team-a/app:pull";
    let token = login(&berth, "ivan", &kc_password("ivan"));
    let (status, body) = refresh(&berth, &token, scope);
    assert_eq!(status, 200, "ivan's refresh before the clash: {body}");
    assert_eq!(
        claims(&body)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );

    // A local account named ivan appears (name_conflict = "refuse", the
    // default): the federated session may no longer speak for that name.
    berth.add_user("ivan", "local-ivan-Secret-1", &["team-a"]);
    let (status, body) = refresh(&berth, &token, scope);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "ivan's federated refresh token after a local ivan exists: {body}\n{}",
        berth.log_tail(20)
    );
    // The local ivan is unaffected.
    let (status, body) = berth.get_token(Some(("ivan", "local-ivan-Secret-1")), &[scope]);
    assert_eq!(status, 200, "local ivan: {body}");
    eprintln!("ok: federated refresh refused once the name is a local account");
}
