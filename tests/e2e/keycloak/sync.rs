//! Staying in sync with Keycloak through the token endpoint, as docker uses it
//! after `docker login` (refresh grant with the identity token): a user removed
//! from a group loses that group's access, and a user whose Keycloak sessions
//! were ended loses the session, both within the re-validation window.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::fixture::{self, keycloak};
use super::{kc_password, start_berth, start_berth_for, IDP_TIMEOUT, REVALIDATE};
use crate::components::{jwt_claims, rt, Berth, SERVICE};

/// `docker login`: GET with Basic auth and `offline_token=true`.
pub(super) fn login(berth: &Berth, user: &str, password: &str) -> String {
    let url = berth.realm();
    rt().block_on(async {
        let resp = reqwest::Client::new()
            .get(&url)
            .query(&[
                ("account", user),
                ("client_id", "docker"),
                ("offline_token", "true"),
                ("service", SERVICE),
            ])
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("GET /token");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "docker-style login of {user}: {body}");
        body["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh_token for {user}: {body}"))
            .to_owned()
    })
}

/// docker's later requests: the refresh grant.
pub(super) fn refresh(berth: &Berth, token: &str, scope: &str) -> (u16, Value) {
    let url = berth.realm();
    rt().block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", "docker"),
                ("service", SERVICE),
                ("scope", scope),
            ])
            .send()
            .await
            .expect("POST /token");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

fn actions(body: &Value) -> Value {
    jwt_claims(body["token"].as_str().unwrap_or_default())["access"][0]["actions"].clone()
}

#[test]
fn keycloak_group_removal_and_logout_take_effect_within_the_window() {
    let Some(kc) = keycloak("keycloak-sync") else {
        return;
    };
    let _kc = fixture::shared();
    let berth = start_berth(kc);
    let scope = "repository:team-a/app:pull,push";
    let token = login(&berth, "ivan", &kc_password("ivan"));
    assert!(
        token.starts_with("oidc."),
        "federated refresh token: {token}"
    );

    let (status, body) = refresh(&berth, &token, scope);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        actions(&body),
        serde_json::json!(["pull", "push"]),
        "{body}"
    );

    kc.leave_group("ivan", "team-a");
    thread::sleep(REVALIDATE + Duration::from_secs(1));
    let (status, body) = refresh(&berth, &token, scope);
    assert_eq!(status, 200, "partial access is not an error: {body}");
    assert_eq!(
        actions(&body),
        serde_json::json!([]),
        "ivan left /team-a in Keycloak: no team-a access after the window: {body}\n{}",
        berth.log_tail(20)
    );
    eprintln!("ok: group removal took effect within {REVALIDATE:?} + 1s");

    kc.logout("ivan");
    thread::sleep(REVALIDATE + Duration::from_secs(1));
    let (status, body) = refresh(&berth, &token, scope);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "ivan's Keycloak sessions were ended: the refresh token must die: {body}\n{}",
        berth.log_tail(20)
    );
    eprintln!("ok: logout in Keycloak ended the berth session");
}

#[test]
fn keycloak_name_conflict_is_configurable() {
    let Some(kc) = keycloak("keycloak-name-conflict") else {
        return;
    };
    let _kc = fixture::shared();
    let scope = ["repository:bob/app:pull"];
    let local_pw = "local-bob-Secret-1";
    // The kind is not in the token; the own-namespace rule (local users only)
    // tells the two accounts apart.
    let granted = |body: &Value| actions(body).to_string();

    // Default: refused, and the local password still works.
    let berth = start_berth(kc);
    berth.add_user("bob", local_pw, &[]);
    let (status, body) = berth.get_token(Some(("bob", &kc_password("bob"))), &scope);
    assert_eq!(status, 401, "Keycloak bob clashes with local bob: {body}");
    let (status, body) = berth.get_token(Some(("bob", local_pw)), &scope);
    assert_eq!(status, 200, "local bob: {body}");
    assert_eq!(granted(&body), "[\"pull\"]", "local bob owns bob/**");

    // "allow": each password finds its own account.
    let berth = start_berth_for(&kc.issuer(), IDP_TIMEOUT, "name_conflict = \"allow\"");
    berth.add_user("bob", local_pw, &[]);
    let (status, body) = berth.get_token(Some(("bob", &kc_password("bob"))), &scope);
    assert_eq!(
        status, 200,
        "Keycloak bob with name_conflict = allow: {body}"
    );
    assert_eq!(
        granted(&body),
        "[]",
        "Keycloak bob is federated: no personal namespace"
    );
    let (status, body) = berth.get_token(Some(("bob", local_pw)), &scope);
    assert_eq!(status, 200, "local bob with name_conflict = allow: {body}");
    assert_eq!(granted(&body), "[\"pull\"]");
    eprintln!("ok: name_conflict refuse and allow");
}

/// With `token_username = "ignore"`, a provider token is accepted under any
/// name, and the `account` parameter docker sends with that name is accepted
/// too; with the default `match`, another name is refused.
#[test]
fn keycloak_token_username_ignore_works_with_docker_s_account_parameter() {
    let Some(kc) = keycloak("keycloak-token-username-ignore") else {
        return;
    };
    let _kc = fixture::shared();
    let token = kc.ci_token();
    let scope = ["repository:team-a/ci:pull"];
    let berth = super::start_berth_with(
        &kc.issuer(),
        IDP_TIMEOUT,
        "",
        &format!("{}\ntoken_username = \"ignore\"", super::DOCUMENTED_GROUPS),
        &super::policies(),
    );
    let (status, body) = berth.get_token(Some(("ci-runner-42", &token)), &scope);
    assert_eq!(
        status, 200,
        "ignore: any name with account=that name: {body}"
    );
    assert_eq!(actions(&body), serde_json::json!(["pull"]), "{body}");
    let berth = start_berth(kc);
    let (status, body) = berth.get_token(Some(("ci-runner-42", &token)), &scope);
    assert_eq!(status, 401, "match: another name is refused: {body}");
}
