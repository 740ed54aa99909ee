//! Trusted proxies decide the client address policy and the audit log see;
//! without them `X-Forwarded-For` is ignored.

use crate::ops::{token_query, OpsServer};

/// A repository the office network (198.51.100.0/24) may pull.
const SCOPE: &str = "repository:office/app:pull";

/// Whether the token in `r` grants pull, read from its claims.
fn pulled(r: &serde_json::Value) -> bool {
    let token = r["token"].as_str().unwrap_or_default();
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| data_encoding::BASE64URL_NOPAD.decode(p.as_bytes()).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    claims["access"].as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e["actions"] == serde_json::json!(["pull"]))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_decide_the_client_address() {
    let scope = SCOPE;
    let c = reqwest::Client::new();

    // berth behind a proxy on loopback.
    let s = OpsServer::start(
        "trusted_proxies = ['127.0.0.0/8', '10.0.0.0/8']\n",
        None,
        false,
    )
    .await;
    let url = s.url(&format!("/token?{}", token_query(scope)));
    let ask = |xff: Vec<&'static str>| {
        let mut rb = c.get(&url);
        for h in xff {
            rb = rb.header("x-forwarded-for", h);
        }
        async move {
            rb.send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert!(
        pulled(&ask(vec!["198.51.100.7"]).await),
        "office address via proxy"
    );
    assert!(
        pulled(&ask(vec!["203.0.113.1, 198.51.100.7, 10.1.2.3"]).await),
        "office address behind two trusted proxies"
    );
    assert!(
        !pulled(&ask(vec!["198.51.100.7, 203.0.113.5"]).await),
        "a client-written office address left of the real one is ignored"
    );
    assert!(!pulled(&ask(vec!["203.0.113.5"]).await));
    assert!(
        !pulled(&ask(vec![]).await),
        "the proxy itself is not in the office"
    );
    assert!(!pulled(&ask(vec!["not an address"]).await));
    assert!(
        pulled(&ask(vec!["203.0.113.9", "198.51.100.7"]).await),
        "header lines form one list"
    );
    // The audit records carry the same client addresses policy saw (written
    // when the server stops).
    let state = s.state.clone();
    s.shutdown().await;
    let records = state
        .auth
        .store()
        .query_audit(&berth::store::AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    // Repeated grants fold into one row per address; count what rows stand for.
    let clients: Vec<&str> = records
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.client.as_str(), r.repeats as usize))
        .collect();
    assert_eq!(clients.len(), 7, "{clients:?}");
    assert_eq!(
        clients.iter().filter(|c| **c == "198.51.100.7").count(),
        3,
        "{clients:?}"
    );
    assert_eq!(
        clients.iter().filter(|c| **c == "203.0.113.5").count(),
        2,
        "{clients:?}"
    );
    assert_eq!(
        clients.iter().filter(|c| **c == "127.0.0.1").count(),
        2,
        "no header, or garbage in it: the proxy's own address; {clients:?}"
    );
    for forged in ["203.0.113.1", "203.0.113.9"] {
        assert!(!clients.contains(&forged), "{clients:?}");
    }
}

/// Without trusted proxies, the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_the_header_is_ignored() {
    let (scope, c) = (SCOPE, reqwest::Client::new());
    let s = OpsServer::start("", None, false).await;
    let url = s.url(&format!("/token?{}", token_query(scope)));
    let r: serde_json::Value = c
        .get(&url)
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!pulled(&r), "untrusted peer may not choose its address");
    s.shutdown().await;
}
