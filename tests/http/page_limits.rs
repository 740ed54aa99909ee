//! Sign-in page tokens limited to repositories: used as a docker password at
//! `/token`, such a token is granted the intersection of the owner's policy and
//! its limits, as a local access token is. The tokens are stored as the page
//! stores them; the provider is configured but never reached (the owner was
//! checked a moment ago, so no re-check is due).

use berth::authn::machine::secret_hash;
use berth::authn::oidc::pat::PREFIX;
use berth::store::oidc::{FederatedOwner, OidcTokenRecord};
use serde_json::Value;

use crate::support::{enc, now, Opts, TestServer};

const SVC: &str = "registry.test";

/// Federated members of team-a pull and push on `team-a/**`.
const POLICY: &str = r#"
[[rule]]
id = "team-a"
kind = "federated"
group = "team-a"
type = "repository"
name = "team-a/**"
allow = ["pull", "push"]
"#;

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "page-limits-secret\n").unwrap();
    let s = TestServer::start(Opts {
        policy: Some(POLICY),
        extra: format!(
            "login_failure_limit = 1000\n[[oidc]]\nname = 'kc'\nissuer = 'http://127.0.0.1:1/realms/berth'\nclient_id = 'berth'\nclient_secret_file = '{}'\n",
            secret.display()
        ),
        ..Opts::default()
    })
    .await;
    (s, dir)
}

/// Stores a page token of frank with `limits`; returns its secret.
async fn page_token(s: &TestServer, n: u8, limits: &[&str]) -> String {
    let token = format!("{PREFIX}{}", char::from(b'A' + n).to_string().repeat(43));
    let t = now();
    let rec = OidcTokenRecord {
        id: 0,
        owner: FederatedOwner {
            provider: "kc".into(),
            subject: "sub-frank".into(),
            username: "frank".into(),
            groups: vec!["team-a".into()],
        },
        description: format!("token {n}"),
        actions: vec!["pull".into(), "push".into()],
        limits: limits.iter().map(|l| (*l).to_owned()).collect(),
        idp_refresh: vec![0xAB; 48],
        created_at: t,
        expires_at: t + 86_400,
        checked_at: t,
        last_used_at: None,
    };
    s.store()
        .insert_oidc_token(&secret_hash(&token), &rec)
        .await
        .unwrap();
    token
}

/// What `/token` grants frank with `token` for `scopes`, by repository.
async fn granted(s: &TestServer, token: &str, scopes: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut q = format!("service={SVC}&account=frank");
    for sc in scopes {
        q.push_str(&format!("&scope={}", enc(sc)));
    }
    let r = s.get(&q, Some(("frank", token))).await;
    assert_eq!(r.status, 200, "{scopes:?}: {}", r.text());
    let (_, claims) = s.verify(r.json()["token"].as_str().unwrap(), SVC).await;
    assert_eq!(claims["sub"], "frank");
    let mut out: Vec<(String, Vec<String>)> = claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions = a["actions"].as_array().unwrap().iter();
            let actions = actions.map(|x| x.as_str().unwrap().to_owned()).collect();
            (a["name"].as_str().unwrap().to_owned(), actions)
        })
        .collect();
    out.retain(|(_, actions)| !actions.is_empty());
    out.sort();
    out
}

fn grant(name: &str, actions: &[&str]) -> (String, Vec<String>) {
    (
        name.to_owned(),
        actions.iter().map(|a| (*a).to_owned()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_get_the_intersection_of_policy_and_limits() {
    let (s, _dir) = server().await;
    let scopes = [
        "repository:team-a/app:pull,push",
        "repository:team-a/other:pull",
        "repository:team-b/app:pull",
    ];
    // Without limits: all of frank's access.
    let all = page_token(&s, 0, &[]).await;
    assert_eq!(
        granted(&s, &all, &scopes).await,
        [
            grant("team-a/app", &["pull", "push"]),
            grant("team-a/other", &["pull"])
        ]
    );
    // Limited to team-a/app: team-a/other is not pulled, team-b never was.
    let app = page_token(&s, 1, &["repository:team-a/app:pull,push"]).await;
    assert_eq!(
        granted(&s, &app, &scopes).await,
        [grant("team-a/app", &["pull", "push"])]
    );
    // A limit's actions narrow too: pull only.
    let pull = page_token(&s, 2, &["repository:team-a/**:pull"]).await;
    assert_eq!(
        granted(&s, &pull, &scopes).await,
        [
            grant("team-a/app", &["pull"]),
            grant("team-a/other", &["pull"])
        ]
    );
    // A limit wider than the policy (written to the database by hand) never
    // widens it.
    let wide = page_token(&s, 3, &["repository:**:pull,push,delete"]).await;
    assert_eq!(
        granted(&s, &wide, &scopes).await,
        [
            grant("team-a/app", &["pull", "push"]),
            grant("team-a/other", &["pull"])
        ]
    );
    // Several limits: their union, within the policy.
    let two = page_token(
        &s,
        4,
        &["repository:team-a/other:pull", "repository:team-b/**:pull"],
    )
    .await;
    assert_eq!(
        granted(&s, &two, &scopes).await,
        [grant("team-a/other", &["pull"])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_page_token_limits_fail_closed() {
    let (s, _dir) = server().await;
    // A limit that no longer parses: the token grants nothing, never everything.
    let broken = page_token(&s, 5, &["repository:team-a/app"]).await;
    let q = format!(
        "service={SVC}&account=frank&scope={}",
        enc("repository:team-a/app:pull")
    );
    let r = s.get(&q, Some(("frank", &broken))).await;
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(body.get("token").is_none(), "{}", r.text());
}
