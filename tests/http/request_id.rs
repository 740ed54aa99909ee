//! The request id: every answer carries one in `X-Request-Id`, the audit row
//! of the request holds the same id, and an id sent by the client is believed
//! only from a trusted proxy and only when well formed.

use std::time::Duration;

use berth::store::AuditQuery;

use crate::edge::opts;
use crate::support::TestServer;

const QUERY: &str = "/token?service=registry.test&scope=repository:alice/app:pull";

/// Sends `GET QUERY` as alice with `ids` as `X-Request-Id` header lines;
/// returns the status and the echoed id.
async fn ask(s: &TestServer, ids: &[&str]) -> (u16, String) {
    let mut rb = s
        .client
        .get(format!("{}{QUERY}", s.base))
        .basic_auth("alice", Some("wonderland"));
    for id in ids {
        rb = rb.header("x-request-id", *id);
    }
    let r = rb.send().await.unwrap();
    let ids: Vec<_> = r.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "exactly one id is echoed: {ids:?}");
    let id = ids[0].to_str().unwrap().to_owned();
    (r.status().as_u16(), id)
}

/// The audit row with request id `id`, waiting for the writer.
async fn audited(s: &TestServer, id: &str) -> berth::store::AuditRecord {
    for _ in 0..100 {
        let rows = s
            .store()
            .query_audit(&AuditQuery {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.request_id == id) {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit row with request id {id}");
}

fn generated(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_id_of_its_audit_row() {
    // Every grant gets its own row (no folding), so every id has one.
    let s = TestServer::start(opts("audit_fold_window = '0'")).await;
    s.add_user("alice", "wonderland", &[]).await;
    let (status, id) = ask(&s, &[]).await;
    assert_eq!(status, 200);
    assert!(generated(&id), "{id}");
    assert_eq!(audited(&s, &id).await.outcome, "issued");

    // Refusals and errors carry one too, and so do other endpoints.
    let r = s.get("service=registry.test&scope=bogus", None).await;
    assert_eq!(r.status, 400);
    assert!(r.header("x-request-id").is_some_and(generated));
    let r = s.get_path("/healthz").await;
    assert!(r.header("x-request-id").is_some_and(generated));

    // 64 requests at once: 64 different ids, each with its own row.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let rb = s
            .client
            .get(format!("{}{QUERY}", s.base))
            .basic_auth("alice", Some("wonderland"));
        tasks.spawn(async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-request-id"].to_str().unwrap().to_owned()
        });
    }
    let ids: std::collections::HashSet<_> = tasks.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 64, "ids repeat under load");
    for id in ids.iter().take(8) {
        audited(&s, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_its_id() {
    // No trusted proxies: the loopback client is an ordinary client.
    let s = TestServer::start(opts("audit_fold_window = '0'")).await;
    s.add_user("alice", "wonderland", &[]).await;
    let (status, id) = ask(&s, &["forged-id-1"]).await;
    assert_eq!(status, 200);
    assert_ne!(id, "forged-id-1");
    assert!(generated(&id), "{id}");
    assert_eq!(audited(&s, &id).await.account, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_passes_a_well_formed_id_through() {
    let s = TestServer::start(opts(
        "trusted_proxies = ['127.0.0.0/8']\naudit_fold_window = '0'",
    ))
    .await;
    s.add_user("alice", "wonderland", &[]).await;
    let (status, id) = ask(&s, &["edge-7f3a.2_b"]).await;
    assert_eq!((status, id.as_str()), (200, "edge-7f3a.2_b"));
    assert_eq!(audited(&s, "edge-7f3a.2_b").await.account, "alice");

    // Malformed or repeated ids are replaced, never echoed or recorded.
    let long = "a".repeat(65);
    for bad in [
        vec![long.as_str()],
        vec!["has space"],
        vec!["quote\"d"],
        vec!["<script>"],
        vec!["one", "two"],
    ] {
        let (status, id) = ask(&s, &bad).await;
        assert_eq!(status, 200, "{bad:?}");
        assert!(generated(&id), "{bad:?} gave {id}");
        audited(&s, &id).await;
    }
}

/// Every line `berth serve` logs while serving a request is in the request's
/// span, whose id is the one the client got back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_a_request_carry_its_id() {
    let mut srv = crate::machine::serve_debug_json("Admin-Secret-4711");
    let r = reqwest::Client::new()
        .get(format!("{}{QUERY}", srv.url))
        .basic_auth("admin", Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    crate::machine::stop(&mut srv);
    let logs = crate::machine::logs(&srv);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["span"]["id"] == id.as_str())
        .collect();
    let targets: Vec<&str> = lines.iter().filter_map(|l| l["target"].as_str()).collect();
    assert!(
        targets.contains(&"berth::decision"),
        "the decision line is not in the request's span: {targets:?}\n{logs}"
    );
    assert!(
        lines.len() >= 3,
        "the request's span holds too few lines: {targets:?}\n{logs}"
    );
}
