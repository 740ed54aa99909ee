//! A Keycloak client-credentials access token used as a password: a CI
//! service account pushes and pulls within its group's scope; the token under
//! another username, with edited claims, re-signed with `alg: none`, from
//! another issuer, or an ID token in its place is refused.

use data_encoding::BASE64URL_NOPAD;
use serde_json::Value;

use super::fixture::{self, keycloak};
use super::{expect_status, kc_password, skopeo_push, stack};
use crate::clients::{ClientEnv, TRANSFER_TIMEOUT};
use crate::components::{jwt_claims, tools_available, REGISTRY_BIN};
use crate::grants_nothing;
use crate::image::{config_digest_in_layout, write_oci_image};

/// A JWT with its payload edited (signature no longer matches), or with
/// `alg: none` and no signature.
fn forged(token: &str, edit: impl Fn(&mut Value), alg_none: bool) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let mut claims = jwt_claims(token);
    edit(&mut claims);
    let payload = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    if alg_none {
        let h = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        format!("{h}.{payload}.")
    } else {
        format!("{header}.{payload}.{}", parts.nth(1).unwrap_or_default())
    }
}

#[test]
fn keycloak_client_credentials_token_as_password() {
    if !tools_available("keycloak-ci-token", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let Some(kc) = keycloak("keycloak-ci-token") else {
        return;
    };
    let _kc = fixture::shared();
    let s = stack(kc, false);
    let c = ClientEnv::new(&s.path("skopeo"));
    let img = write_oci_image(&s.path("image"), "v1", "keycloak ci image");
    let token = kc.ci_token();
    let sa = "service-account-berth-ci";
    let creds = format!("{sa}:{token}");

    let out = skopeo_push(&s, &c, &img.oci_ref(), &creds, "team-a/ci:v1");
    s.expect_ok(
        &out,
        "CI service account (group /team-a) pushes with its token",
    );
    let pulled = s.path("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &format!("docker://{}", s.image("team-a/ci:v1")),
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    s.expect_ok(&out, "CI service account pulls with its token");
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        img.config_digest
    );
    let body = expect_status(
        &s,
        s.berth
            .get_token(Some((sa, &token)), &["repository:team-b/x:pull"]),
        200,
        "CI token for team-b (refused scope)",
    );
    assert!(grants_nothing(&jwt_claims(
        body["token"].as_str().unwrap_or_default()
    )));

    let scope = ["repository:team-a/ci:pull"];
    for (user, password, what) in [
        (
            "someone-else",
            token.clone(),
            "CI token with another username",
        ),
        (
            sa,
            forged(
                &token,
                |c| c["groups"] = serde_json::json!(["/team-b"]),
                false,
            ),
            "CI token with edited groups",
        ),
        (
            sa,
            forged(
                &token,
                |c| c["exp"] = serde_json::json!(4_102_444_800u64),
                true,
            ),
            "CI token re-signed with alg none",
        ),
        (
            sa,
            forged(
                &token,
                |c| c["iss"] = serde_json::json!("http://127.0.0.1:1/realms/berth"),
                false,
            ),
            "CI token claiming another issuer",
        ),
    ] {
        expect_status(
            &s,
            s.berth.get_token(Some((user, &password)), &scope),
            401,
            what,
        );
    }
    // An ID token is for berth, not a bearer credential.
    let (status, body) = kc.token(&[
        ("grant_type", "password"),
        ("client_id", fixture::CLIENT_ID),
        ("client_secret", fixture::CLIENT_SECRET),
        ("username", "alice"),
        ("password", &kc_password("alice")),
        ("scope", "openid"),
    ]);
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().expect("id_token");
    expect_status(
        &s,
        s.berth.get_token(Some(("alice", id_token)), &scope),
        401,
        "an ID token as password",
    );
}
