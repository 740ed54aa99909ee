//! Keycloak groups and realm roles decide what a federated user may do
//! through skopeo, and bad credentials (wrong password, unknown user, a
//! disabled account) are refused.

use super::fixture::{self, keycloak};
use super::{expect_status, kc_password, skopeo_push, stack};
use crate::clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use crate::components::{http_get, jwt_claims, tools_available, ADMIN_PASSWORD, REGISTRY_BIN};
use crate::grants_nothing;
use crate::image::{config_digest_in_layout, write_oci_image};

#[test]
fn keycloak_groups_and_roles_decide_access_bad_credentials_refused() {
    if !tools_available("keycloak-groups", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let Some(kc) = keycloak("keycloak-groups") else {
        return;
    };
    let _kc = fixture::shared();
    let s = stack(kc, false);
    let c = ClientEnv::new(&s.path("skopeo"));
    let img = write_oci_image(&s.path("image"), "v1", "keycloak groups image");
    let alice = format!("alice:{}", kc_password("alice"));
    let bob = format!("bob:{}", kc_password("bob"));

    let out = skopeo_push(&s, &c, &img.oci_ref(), &alice, "team-a/app:v1");
    s.expect_ok(&out, "alice (Keycloak group /team-a) pushes team-a/app");
    let out = skopeo_push(&s, &c, &img.oci_ref(), &alice, "team-b/app:v1");
    s.expect_denied(&out, "alice (Keycloak group /team-a) pushes team-b/app");
    let out = skopeo_push(&s, &c, &img.oci_ref(), &bob, "team-b/app:v1");
    s.expect_ok(&out, "bob (Keycloak group /team-b) pushes team-b/app");

    let pulled = s.path("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &alice,
            &format!("docker://{}", s.image("team-a/app:v1")),
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "alice pulls team-a/app");
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        img.config_digest
    );

    // Role-based: carol has the realm role registry-admin.
    let catalog = "registry:catalog:*";
    let body = expect_status(
        &s,
        s.berth
            .get_token(Some(("carol", &kc_password("carol"))), &[catalog]),
        200,
        "carol (realm role registry-admin) asks for the catalog",
    );
    let token = body["token"].as_str().expect("token");
    let url = format!("http://{}/v2/_catalog", s.registry.host);
    let (status, text) = http_get(&url, Some(token)).expect("registry reachable");
    assert_eq!(
        status,
        200,
        "catalog with carol's token (claims {}): {text}",
        jwt_claims(token)
    );
    assert!(
        text.contains("team-a/app") && text.contains("team-b/app"),
        "carol's catalog should list both team repositories: {text}"
    );
    let body = expect_status(
        &s,
        s.berth
            .get_token(Some(("alice", &kc_password("alice"))), &[catalog]),
        200,
        "alice asks for the catalog (partial access is not an error)",
    );
    let claims = jwt_claims(body["token"].as_str().unwrap_or_default());
    assert!(
        grants_nothing(&claims),
        "alice must get no catalog: {claims}"
    );
    assert_eq!(claims["sub"], "alice");

    // Refusals.
    for (user, password, what) in [
        (
            "alice",
            "wrong-password".to_owned(),
            "wrong Keycloak password",
        ),
        ("dave", kc_password("dave"), "disabled Keycloak user"),
        ("nosuchuser", "whatever-1".to_owned(), "unknown user"),
        // Keycloak has an `admin` too: refused, the name is a local account.
        (
            "admin",
            kc_password("admin"),
            "Keycloak account named like a local one",
        ),
    ] {
        let body = expect_status(
            &s,
            s.berth
                .get_token(Some((user, &password)), &["repository:team-a/app:pull"]),
            401,
            what,
        );
        assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
    }
    let out = c.skopeo(
        &[
            "login",
            "--tls-verify=false",
            "-u",
            "alice",
            "--password-stdin",
            &s.registry.host,
        ],
        Some("wrong-password\n"),
        LOGIN_TIMEOUT,
    );
    s.expect_denied(&out, "skopeo login with a wrong Keycloak password");
    // The local admin still signs in with the local password.
    expect_status(
        &s,
        s.berth
            .get_token(Some(("admin", ADMIN_PASSWORD)), &[catalog]),
        200,
        "local admin",
    );
}
