//! `/login/start` before anyone authenticates: a flood from one address writes
//! nothing (the database keeps every row count and page), every answer is a
//! redirect with a sealed flow cookie, and sign-ins still work after it: a
//! callback with its own cookie and state reaches the code exchange, while a
//! forged state, a tampered cookie or no cookie never does. The provider is a
//! small stand-in serving discovery and counting token-endpoint calls (the
//! real browser sign-in runs against Keycloak in the e2e tests).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::common::db::TestDb;
use crate::support::{Opts, TestServer};

const FLOOD: usize = 10_000;
const PARALLEL: usize = 16;

struct Idp {
    issuer: String,
    token_calls: Arc<AtomicUsize>,
}

/// Discovery, and a token endpoint that refuses every code (and counts them).
async fn idp() -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/realms/flood", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let discovery = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/certs"),
    })
    .to_string();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/realms/flood/.well-known/openid-configuration",
            get(move || async move { ([("content-type", "application/json")], discovery) }),
        )
        .route(
            "/realms/flood/token",
            post(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    [("content-type", "application/json")],
                    r#"{"error":"invalid_grant","error_description":"Code not valid"}"#,
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Idp {
        issuer,
        token_calls: calls,
    }
}

/// Every table's row count and the database's page count.
fn footprint(db: &Path) -> (Vec<(String, i64)>, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let counts = tables
        .into_iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            (t, n)
        })
        .collect();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    (counts, pages)
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_start_flood_writes_nothing_and_sign_ins_still_work() {
    let idp = idp().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "flood-client-secret\n").unwrap();
    let test_db = TestDb::sqlite_at("flood.db");
    let db = std::path::PathBuf::from(&test_db.url);
    let s = TestServer::start(Opts {
        database: Some(test_db.database()),
        extra: format!(
            "[[oidc]]\nname = 'flood'\nissuer = '{}'\nclient_id = 'berth'\nclient_secret_file = '{}'\n",
            idp.issuer,
            secret.display()
        ),
        ..Opts::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start_url = format!("{}/login/start/flood", s.base);
    // Discovery is fetched once, on the first start.
    let first = client.get(&start_url).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let before = footprint(&db);

    let sent = Arc::new(AtomicUsize::new(1));
    let mut workers = Vec::new();
    for _ in 0..PARALLEL {
        let (client, url, sent) = (client.clone(), start_url.clone(), sent.clone());
        let auth = format!("{}/auth?", idp.issuer);
        workers.push(tokio::spawn(async move {
            let mut last = None;
            while sent.fetch_add(1, Ordering::SeqCst) < FLOOD {
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 303, "a /login/start of the flood");
                let to = r.headers()["location"].to_str().unwrap().to_owned();
                assert!(to.starts_with(&auth), "{to}");
                let flow = set_cookie(&r, "berth_login_flow").expect("a flow cookie");
                last = Some((to, flow));
            }
            last
        }));
    }
    let mut flows = Vec::new();
    for w in workers {
        flows.extend(w.await.unwrap());
    }
    let after = footprint(&db);
    assert_eq!(
        before, after,
        "{FLOOD} sign-ins started before anyone authenticated must leave every table and page as it was"
    );
    eprintln!(
        "ok: {FLOOD} /login/start: database unchanged ({} pages)",
        after.1
    );

    // After the flood a sign-in still works: its callback passes berth's checks
    // and reaches the provider's token endpoint (which refuses this made-up code).
    let (location, flow) = flows.pop().expect("a flow from the flood");
    let state = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap()
        .to_owned();
    let callback = |state: &str, cookie: Option<&str>| {
        let mut req = client.get(format!("{}/login/callback?state={state}&code=c0de", s.base));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("berth_login_flow={c}"));
        }
        req.send()
    };
    let calls = || idp.token_calls.load(Ordering::SeqCst);
    let mut tampered = flow.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (_, other_flow) = flows.pop().expect("a second flow");
    for (what, state, cookie) in [
        ("no flow cookie", state.as_str(), None),
        ("a forged state", "forged", Some(flow.as_str())),
        ("a tampered cookie", state.as_str(), Some(tampered.as_str())),
        (
            "another sign-in's cookie",
            state.as_str(),
            Some(other_flow.as_str()),
        ),
        (
            "a cookie for no provider",
            state.as_str(),
            Some("nobody.AAAA"),
        ),
    ] {
        let r = callback(state, cookie).await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert_eq!(calls(), 0, "{what}: the code must not reach the provider");
    }
    // A flow past its ten minutes is refused too (berth's clock, moved on).
    let oidc = s.state.auth.oidc().expect("oidc configured").clone();
    let later = time::OffsetDateTime::now_utc().unix_timestamp()
        + berth::authn::oidc::browser::PENDING_TTL.as_secs() as i64
        + 1;
    let e = oidc
        .finish_login(&state, &flow, "c0de", later)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    assert_eq!(calls(), 0, "an expired flow must not reach the provider");
    let r = callback(&state, Some(&flow)).await.unwrap();
    assert_eq!(r.status(), 400, "the provider refused the made-up code");
    let page = r.text().await.unwrap();
    assert!(page.contains("invalid_grant"), "{page}");
    assert_eq!(calls(), 1, "the real callback reached the code exchange");
    assert_eq!(
        footprint(&db),
        before,
        "refused callbacks write nothing either"
    );
}
