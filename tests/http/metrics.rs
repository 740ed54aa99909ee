//! `/metrics` and `/readyz`: request, stage, cache and key series; backend
//! errors and readiness when the database goes away; scrapes during policy
//! reloads; and metrics on their own address.

use crate::ops::{get, sample, token_query, value, FullText, OpsServer, POLICY};
use crate::support::Resp;

/// A server that answered two logins of alice (the second from the credential
/// cache), a wrong password, a bad scope and an unknown path; the server, a
/// client and its `/metrics` answer.
async fn after_five_requests() -> (OpsServer, reqwest::Client, Resp) {
    let s = OpsServer::start("", None, false).await;
    s.add_user("alice", "wonderland").await;
    let c = reqwest::Client::new();
    let url = s.url(&format!(
        "/token?{}",
        token_query("repository:alice/app:pull")
    ));
    for _ in 0..2 {
        let r = c
            .get(&url)
            .basic_auth("alice", Some("wonderland"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(&url)
        .basic_auth("alice", Some("not-her-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(s.url("/token?scope=%%%")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let _ = c.get(s.url("/nope")).send().await.unwrap();

    let m = get(&c, &s.url("/metrics"), &[]).await;
    assert_eq!(m.status, 200);
    (s, c, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_endpoint_and_outcome() {
    let (s, _, m) = after_five_requests().await;
    let text = m.text_full();
    let token = |outcome: &str| {
        value(
            &text,
            &format!("berth_http_requests_total{{endpoint=\"token\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(token("issued"), 2.0);
    assert_eq!(token("unauthorized"), 1.0);
    assert_eq!(token("invalid_scope"), 1.0);
    assert_eq!(
        value(
            &text,
            "berth_http_requests_total{endpoint=\"other\",outcome=\"not_found\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "berth_http_request_duration_seconds_count{endpoint=\"token\"}"
        ),
        4.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_time_each_stage_and_count_cache_lookups() {
    let (s, _, m) = after_five_requests().await;
    let text = m.text_full();
    // Three requests got as far as authentication, two past it.
    let stage = |s: &str| {
        value(
            &text,
            &format!("berth_token_stage_duration_seconds_count{{stage=\"{s}\"}}"),
        )
    };
    assert_eq!(stage("authentication"), 3.0);
    assert_eq!(stage("policy"), 2.0);
    assert_eq!(stage("signing"), 2.0);
    assert!(
        value(
            &text,
            "berth_token_stage_duration_seconds_sum{stage=\"authentication\"}"
        ) > 0.0
    );
    // First login hashed, second was a cache hit, the wrong password hashed.
    assert_eq!(
        value(
            &text,
            "berth_credential_cache_lookups_total{result=\"hit\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "berth_credential_cache_lookups_total{result=\"miss\"}"
        ),
        2.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_policy_keys_and_backends() {
    let (s, _, m) = after_five_requests().await;
    let text = m.text_full();
    assert_eq!(value(&text, "berth_policy_generation"), 1.0);
    assert_eq!(value(&text, "berth_policy_reload_failed"), 0.0);
    assert_eq!(value(&text, "berth_policy_rules"), 2.0);
    let key = &s.state.signer.keys().keys[0];
    let days = value(
        &text,
        &format!(
            "berth_signing_key_expiry_days{{key=\"{}\",alg=\"{}\"}}",
            key.name,
            key.alg.jose()
        ),
    );
    let expected = (key.not_after - time::OffsetDateTime::now_utc()).as_seconds_f64() / 86_400.0;
    assert!((days - expected).abs() < 0.01, "{days} vs {expected}");
    assert_eq!(
        value(
            &text,
            &format!("berth_signing_key_active{{key=\"{}\"}}", key.name)
        ),
        1.0
    );
    assert!(sample(&text, "berth_tls_certificate_expiry_days").is_none());
    // The test server's CA key is beside its signing keys: berth renews them.
    assert_eq!(value(&text, "berth_signing_ca_online"), 1.0);
    // No backend failed.
    assert!(!text.contains("berth_auth_backend_errors_total{"), "{text}");
    s.shutdown().await;
}

/// No account name, password or address in any label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_no_account_password_or_address() {
    let (s, _, m) = after_five_requests().await;
    let text = m.text_full();
    for secret in ["alice", "wonderland", "not-her-password", "127.0.0.1"] {
        assert!(!text.contains(secret), "{secret} in metrics:\n{text}");
    }
    s.shutdown().await;
}

/// The Prometheus text format by default, OpenMetrics when asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_formats() {
    let (s, c, m) = after_five_requests().await;
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = get(
        &c,
        &s.url("/metrics"),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )],
    )
    .await;
    assert!(m
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/openmetrics-text"));
    assert!(m.text_full().trim_end().ends_with("# EOF"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_are_counted_and_readyz_fails_without_database() {
    let s = OpsServer::start("", None, true).await;
    s.add_user("alice", "wonderland").await;
    let c = reqwest::Client::new();
    let internal = format!("http://{}/readyz", s.metrics_addr.unwrap());
    // The public port says only a status…
    let r = get(&c, &s.url("/readyz"), &[]).await;
    assert_eq!(
        r.json(),
        serde_json::json!({ "status": "ok" }),
        "{}",
        r.text()
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // …the metrics port names every check.
    let r = get(&c, &internal, &[]).await;
    let j = r.ok();
    assert_eq!(j["status"], "ok", "{j}");
    assert_eq!(j["checks"]["database"], "ok");
    assert_eq!(j["checks"]["keys"], "ok");
    assert_eq!(j["checks"]["policy"], "ok");
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // The database goes away: not ready (503, JSON reason), still alive, and
    // password logins fail with 503 counted as backend errors.
    s.state.auth.store().close().await;
    let r = get(&c, &s.url("/readyz"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({ "status": "not ready" }),
        "{}",
        r.text()
    );
    let r = get(&c, &internal, &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], "not ready");
    assert_eq!(j["checks"]["database"], "unreachable");
    assert_eq!(j["reason"][0], "database unreachable");
    assert_eq!(j["checks"]["keys"], "ok");
    assert_eq!(get(&c, &s.url("/healthz"), &[]).await.status, 200);
    let url = s.url(&format!(
        "/token?{}",
        token_query("repository:alice/app:pull")
    ));
    let r = c
        .get(&url)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let text = get(
        &c,
        &format!("http://{}/metrics", s.metrics_addr.unwrap()),
        &[],
    )
    .await
    .text_full();
    assert!(
        value(
            &text,
            "berth_auth_backend_errors_total{backend=\"database\"}"
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "berth_http_requests_total{endpoint=\"readyz\",outcome=\"unavailable\"}"
        ),
        // Once on the public port, once on the metrics port.
        2.0
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrapes_during_policy_reloads() {
    let s = OpsServer::start("", None, false).await;
    let policy_file = s.dir.path().join("policies").join("test.toml");
    let handle = s.state.policies.clone();
    let reloads = tokio::task::spawn_blocking(move || {
        for i in 0..61 {
            // Every third version is broken: the last good policy must keep serving.
            let text = if i % 3 == 2 {
                format!("{POLICY}\n[[rule]]\nbogus = {i}\n")
            } else {
                format!("{POLICY}\n# {i}\n")
            };
            std::fs::write(&policy_file, text).unwrap();
            let _ = handle.reload();
        }
    });
    let c = reqwest::Client::new();
    let mut scrapes = 0;
    let mut saw_failed = false;
    while !reloads.is_finished() || scrapes < 20 {
        let (metrics_url, readyz_url) = (s.url("/metrics"), s.url("/readyz"));
        let (m, ready) = tokio::join!(get(&c, &metrics_url, &[]), get(&c, &readyz_url, &[]));
        assert_eq!(m.status, 200, "{}", m.text());
        assert_eq!(ready.status, 200, "{}", ready.text());
        let text = m.text_full();
        assert!(value(&text, "berth_policy_generation") >= 1.0);
        saw_failed |= value(&text, "berth_policy_reload_failed") == 1.0;
        scrapes += 1;
    }
    reloads.await.unwrap();
    let text = get(&c, &s.url("/metrics"), &[]).await.text_full();
    // 41 good reloads after the initial load (the file watcher may add some);
    // the last version written is good.
    assert!(value(&text, "berth_policy_generation") >= 42.0, "{text}");
    assert_eq!(value(&text, "berth_policy_reload_failed"), 0.0);
    eprintln!("{scrapes} scrapes during reloads; saw a failed reload: {saw_failed}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address() {
    let s = OpsServer::start("", None, true).await;
    let c = reqwest::Client::new();
    let maddr = s.metrics_addr.unwrap();
    // Not on the public port …
    assert_eq!(get(&c, &s.url("/metrics"), &[]).await.status, 404);
    // … but on the metrics port, which serves nothing else.
    let m = get(&c, &format!("http://{maddr}/metrics"), &[]).await;
    assert_eq!(m.status, 200);
    assert!(m.text_full().contains("berth_policy_generation"));
    assert_eq!(
        get(&c, &format!("http://{maddr}/token"), &[]).await.status,
        404
    );
    s.shutdown().await;
}
