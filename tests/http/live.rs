//! A running server: policy changes apply without a restart (and a broken
//! policy file keeps the last good one), and parallel requests each get their
//! own answer.

use serde_json::{json, Value};

use crate::support::{entry, Opts, TestServer, SVC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_apply_without_restart() {
    const BEFORE: &str =
        "[[rule]]\nid = \"a\"\ntype = \"repository\"\nname = \"shared/**\"\nallow = [\"pull\"]\n";
    const AFTER: &str = "[[rule]]\nid = \"a\"\ntype = \"repository\"\nname = \"shared/**\"\nallow = [\"pull\", \"push\"]\n\n";
    let s = TestServer::start(Opts {
        policy: Some(BEFORE),
        ..Opts::default()
    })
    .await;
    s.add_user("alice", "wonderland", &[]).await;
    let alice = Some(("alice", "wonderland"));
    let q = format!("service={SVC}&scope=repository:shared/app:pull,push");
    assert_eq!(
        entry(&s.access(&q, alice).await, "shared/app")["actions"],
        json!(["pull"])
    );
    let file = s.policy_dir.as_ref().unwrap().join("test.toml");

    std::fs::write(&file, AFTER).unwrap();
    let mut granted = Value::Null;
    for _ in 0..50 {
        granted = entry(&s.access(&q, alice).await, "shared/app")["actions"].clone();
        if granted == json!(["pull", "push"]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        granted,
        json!(["pull", "push"]),
        "new policy not applied within 5 s"
    );

    // A broken file: the last good policy keeps serving; health says degraded.
    std::fs::write(&file, "[[rule]\nthis is not toml").unwrap();
    let mut health = Value::Null;
    for _ in 0..50 {
        health = s.get_path("/healthz").await.ok();
        if health["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        entry(&s.access(&q, alice).await, "shared/app")["actions"],
        json!(["pull", "push"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests() {
    let s = std::sync::Arc::new(TestServer::start(Opts::default()).await);
    s.add_user("alice", "wonderland", &[]).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let pw = if i % 2 == 0 { "wonderland" } else { "wrong" };
            let r = s
                .get(
                    &format!("service={SVC}&scope=repository:alice/app:pull"),
                    Some(("alice", pw)),
                )
                .await;
            (i, r.status, r.header("cache-control").map(str::to_owned))
        }));
    }
    for t in tasks {
        let (i, status, cache) = t.await.unwrap();
        assert_eq!(status, if i % 2 == 0 { 200 } else { 401 }, "request {i}");
        assert_eq!(cache.as_deref(), Some("no-store"), "request {i}");
    }
}
