//! A cross-repository blob mount driven by the registry's own challenge: the
//! registry asks for `repository:DST:pull,push repository:SRC:pull` in one
//! `scope` value, the client sends that value back verbatim as one GET `scope`
//! parameter (as the OCI conformance client does), and berth must grant both
//! repositories so that the mount succeeds. A user without rights on the source
//! gets a token that the registry refuses for the mount.

use std::time::Duration;

use serde_json::Value;

use crate::components::{
    jwt_claims, rt, tools_available, ALICE_PASSWORD, BOB_PASSWORD, REGISTRY_BIN,
};
use crate::image::sha256;
use crate::registries::{
    dist3_bin, BerthOpts, CBerth, Kind, Reg, RegistrySpec, ServiceSpec, Trust,
};

/// One HTTP answer: status, `WWW-Authenticate` and `Location` headers.
struct Answer {
    status: u16,
    challenge: String,
    location: String,
}

fn send(method: &str, url: &str, bearer: Option<&str>, body: Option<Vec<u8>>) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut req = client.request(method, url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/octet-stream")
                .body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        Answer {
            status: resp.status().as_u16(),
            challenge: header("www-authenticate"),
            location: header("location"),
        }
    })
}

/// The `scope="…"` value of a Bearer challenge, verbatim.
fn challenge_scope(challenge: &str) -> String {
    let start = challenge
        .find("scope=\"")
        .unwrap_or_else(|| panic!("no scope in challenge {challenge:?}"))
        + "scope=\"".len();
    let len = challenge[start..]
        .find('"')
        .unwrap_or_else(|| panic!("unterminated scope in {challenge:?}"));
    challenge[start..start + len].to_string()
}

/// Repository name → actions, from a token's `access` claim; resources granted
/// no action are left out.
fn granted(token: &str) -> Vec<(String, Vec<String>)> {
    let claims = jwt_claims(token);
    let mut out: Vec<(String, Vec<String>)> = claims["access"]
        .as_array()
        .unwrap_or_else(|| panic!("no access claim in {claims}"))
        .iter()
        .map(|a| {
            let actions = a["actions"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            (a["name"].as_str().unwrap_or_default().to_string(), actions)
        })
        .filter(|(_, actions): &(String, Vec<String>)| !actions.is_empty())
        .collect();
    out.sort();
    out
}

fn mount_through_challenge(kind: Kind) {
    let d3 = dist3_bin();
    let registry_bin = if kind == Kind::Dist2 {
        REGISTRY_BIN
    } else {
        d3.as_str()
    };
    if !tools_available("cross-repository mount", &[registry_bin], false) {
        return;
    }
    let service = "mount.test";
    // The key naming each registry line understands (distribution 3 no longer
    // matches libtrust key ids).
    let key_id = if kind == Kind::Dist2 {
        "libtrust"
    } else {
        "thumbprint"
    };
    let berth = CBerth::start(BerthOpts {
        services: vec![ServiceSpec::new(service, key_id)],
        ..BerthOpts::default()
    });
    let trust = Trust::Bundle(berth.bundle_path());
    let reg = Reg::start(RegistrySpec::for_berth(kind, &berth, service, trust));
    let base = reg.url();
    let label = kind.label();

    // A blob in alice/src, uploaded monolithically with a token for that repository.
    let blob = format!("berth mount test on {label}").into_bytes();
    let digest = sha256(&blob);
    let push = berth.token(
        service,
        Some(("alice", ALICE_PASSWORD)),
        &["repository:alice/src:pull,push"],
    );
    let start = send(
        "POST",
        &format!("{base}/v2/alice/src/blobs/uploads/"),
        Some(&push),
        None,
    );
    assert_eq!(start.status, 202, "{label}: upload to alice/src");
    let location = if start.location.starts_with('/') {
        format!("{base}{}", start.location)
    } else {
        start.location.clone()
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let up = send(
        "PUT",
        &format!("{location}{sep}digest={digest}"),
        Some(&push),
        Some(blob),
    );
    assert_eq!(up.status, 201, "{label}: blob upload to alice/src");

    // The mount, first without a token: the registry's challenge names both.
    let mount_url = format!("{base}/v2/alice/dst/blobs/uploads/?mount={digest}&from=alice/src");
    let first = send("POST", &mount_url, None, None);
    assert_eq!(first.status, 401, "{label}: mount without a token");
    let scope = challenge_scope(&first.challenge);
    assert!(
        scope.contains(' '),
        "{label}: expected several space-separated scopes in the challenge, got {scope:?}"
    );

    // The challenge's value goes back as ONE scope parameter.
    let (status, body) = berth.get_token(service, Some(("alice", ALICE_PASSWORD)), &[&scope]);
    assert_eq!(
        status, 200,
        "{label}: berth refused scope {scope:?}: {body}"
    );
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(
        granted(&token),
        [
            (
                "alice/dst".to_string(),
                vec!["pull".to_string(), "push".to_string()]
            ),
            ("alice/src".to_string(), vec!["pull".to_string()]),
        ],
        "{label}: grants for {scope:?}"
    );
    let mounted = send("POST", &mount_url, Some(&token), None);
    assert_eq!(
        mounted.status,
        201,
        "{label}: the mount with berth's token was not made\n{}",
        reg.log_tail(20)
    );
    assert!(
        mounted
            .location
            .contains(&format!("/v2/alice/dst/blobs/{digest}")),
        "{label}: mount answered Location {:?}",
        mounted.location
    );
    let pull = berth.token(
        service,
        Some(("alice", ALICE_PASSWORD)),
        &["repository:alice/dst:pull"],
    );
    let head = send(
        "HEAD",
        &format!("{base}/v2/alice/dst/blobs/{digest}"),
        Some(&pull),
        None,
    );
    assert_eq!(head.status, 200, "{label}: mounted blob not in alice/dst");

    // bob asks for the same challenge into his own repository: he may push to
    // bob/dst but may not read alice/src, so his token names only bob/dst and the
    // registry does not mount alice's blob for him.
    let bob_url = format!("{base}/v2/bob/dst/blobs/uploads/?mount={digest}&from=alice/src");
    let bob_first = send("POST", &bob_url, None, None);
    let bob_scope = challenge_scope(&bob_first.challenge);
    let (status, body) = berth.get_token(service, Some(("bob", BOB_PASSWORD)), &[&bob_scope]);
    assert_eq!(status, 200, "{label}: {body}");
    let bob_token = body["token"].as_str().expect("token").to_string();
    assert_eq!(
        granted(&bob_token),
        [(
            "bob/dst".to_string(),
            vec!["pull".to_string(), "push".to_string()]
        )],
        "{label}: bob's grants for {bob_scope:?}"
    );
    let bob_mount = send("POST", &bob_url, Some(&bob_token), None);
    assert_ne!(
        bob_mount.status, 201,
        "{label}: bob mounted a blob from alice/src"
    );
    let bob_head = send(
        "HEAD",
        &format!("{base}/v2/bob/dst/blobs/{digest}"),
        Some(&bob_token),
        None,
    );
    assert_eq!(
        bob_head.status, 404,
        "{label}: alice's blob reached bob/dst"
    );
}

#[test]
fn cross_repository_mount_distribution2() {
    mount_through_challenge(Kind::Dist2);
}

#[test]
fn cross_repository_mount_distribution3() {
    mount_through_challenge(Kind::Dist3);
}
