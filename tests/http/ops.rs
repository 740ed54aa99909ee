//! Operations: `/metrics`, `/readyz`, request head limits, trusted proxies,
//! TLS (HTTP/1.1 and HTTP/2, certificate reload), and SIGTERM handling of the
//! real `berth serve` process.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::state::AppState;
use secrecy::SecretString;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::common::server::Serve;
use crate::support::{enc, Resp, ADMIN_PW};

trait FullText {
    fn text_full(&self) -> String;
}

impl FullText for Resp {
    /// The whole body as text (`Resp::text` cuts it short for messages).
    fn text_full(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct NoEnv;
impl berth::config::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// A server started from a config with extra TOML lines (the shared test
/// server has no knobs for metrics, proxies or TLS).
struct OpsServer {
    state: AppState,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn quoted(p: &Path) -> String {
    format!("'{}'", p.display())
}

const POLICY: &str = r#"
[[rule]]
id = "own"
kind = "user"
type = "repository"
name = "${account}/**"
allow = ["pull", "push"]

[[rule]]
id = "office"
ip = ["198.51.100.0/24"]
type = "repository"
name = "office/**"
allow = ["pull"]
"#;

impl OpsServer {
    /// `extra` is TOML appended to the config; `tls` writes a certificate and key
    /// (made by `tls`) and configures them; `separate_metrics` binds `/metrics`
    /// on its own port.
    async fn start(extra: &str, tls: Option<&TestPki>, separate_metrics: bool) -> OpsServer {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("test.toml"), POLICY).unwrap();
        let mut text = format!(
            "listen = '127.0.0.1:0'\ndatabase = {db}\nkeys_dir = {keys}\npolicies_dir = {pol}\n\
             issuer = 'berth-ops'\nshutdown_timeout = '5s'\n",
            db = quoted(&dir.path().join("berth.db")),
            keys = quoted(&dir.path().join("keys")),
            pol = quoted(&policies),
        );
        if let Some(pki) = tls {
            let (cert, key) = pki.write_leaf(dir.path(), "server", &["localhost"]);
            text.push_str(&format!(
                "tls_cert = {}\ntls_key = {}\n",
                quoted(&cert),
                quoted(&key)
            ));
        }
        let metrics_listener = if separate_metrics {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            text.push_str(&format!("metrics_listen = '{}'\n", l.local_addr().unwrap()));
            Some(l)
        } else {
            None
        };
        text.push_str(extra);
        text.push_str("[[service]]\nname = 'registry.test'\n");
        let cfg = berth::config::Config::from_toml(Path::new("ops.toml"), &text, &NoEnv).unwrap();
        let (state, _) = berth::app::build(cfg, Some(SecretString::from(ADMIN_PW)))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(berth::app::serve_with(
            state.clone(),
            listener,
            metrics_listener,
            async move {
                let _ = rx.await;
            },
        ));
        OpsServer {
            state,
            addr,
            metrics_addr,
            dir,
            stop: Some(tx),
            done: Some(done),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn add_user(&self, name: &str, pw: &str) {
        let hash = berth::authn::password::hash(&SecretString::from(pw)).unwrap();
        self.state
            .auth
            .store()
            .create_user(
                &crate::support::uname(name),
                &hash,
                &[],
                crate::support::now(),
            )
            .await
            .unwrap();
    }

    /// Stops the server and waits until it has finished.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            // Connections drain within the shutdown timeout (5 s here), then the
            // audit writer gets at most as long again when the database is gone:
            // two timeouts, plus room for a loaded machine.
            tokio::time::timeout(Duration::from_secs(15), done)
                .await
                .expect("server stops within twice its shutdown timeout")
                .unwrap()
                .unwrap();
        }
    }
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = client.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let res = rb.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = res.bytes().await.unwrap().to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// The value of the sample whose line starts with `series` (name and labels
/// exactly as exposed), or `None`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[track_caller]
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn token_query(scope: &str) -> String {
    format!("service=registry.test&scope={}", enc(scope))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_stages_cache_and_keys() {
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
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
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
    // No account name, password or address in any label.
    for secret in ["alice", "wonderland", "not-her-password", "127.0.0.1"] {
        assert!(!text.contains(secret), "{secret} in metrics:\n{text}");
    }

    // OpenMetrics when asked for.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_decide_the_client_address() {
    let scope = "repository:office/app:pull";
    let pulled = |r: &serde_json::Value| -> bool {
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
    };
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

    // Without trusted proxies, the header is ignored.
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

async fn raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let head = String::from_utf8_lossy(&buf);
    head.split(' ').nth(1).and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_limits() {
    let s = OpsServer::start("", None, false).await;
    let req = |extra: String| {
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    // Ordinary large headers are fine.
    let ok = format!("X-Big: {}\r\n", "a".repeat(32 * 1024));
    assert_eq!(raw(s.addr, &req(ok)).await, Some(200));
    // A head over the limit gets 431, so do too many fields.
    let big = format!(
        "X-Big: {}\r\n",
        "a".repeat(berth::net::server::MAX_HEAD_BYTES)
    );
    assert_eq!(raw(s.addr, &req(big)).await, Some(431));
    let many: String = (0..berth::net::server::MAX_HEADERS + 20)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    assert_eq!(raw(s.addr, &req(many)).await, Some(431));

    // HTTP/2 (cleartext, prior knowledge) has the same limit.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = h2
        .get(s.url("/healthz"))
        .header("x-big", "a".repeat(berth::net::server::MAX_HEAD_BYTES))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => eprintln!("oversized HTTP/2 header list refused: {e}"),
    }
    // The server is still fine.
    assert_eq!(raw(s.addr, &req(String::new())).await, Some(200));
    s.shutdown().await;
}

// ---------------------------------------------------------------------------
// TLS

/// A test CA that signs server certificates.
pub struct TestPki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    /// PEM of the CA certificate (what clients trust).
    pub ca_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_pem = ca.pem();
        TestPki { ca, ca_key, ca_pem }
    }

    /// Writes a fresh key and a certificate for `names` signed by the CA into
    /// `dir/{stem}.crt|key`; returns the paths.
    pub fn write_leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

fn tls_client(pki: &TestPki, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_info(true)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_http1_http2_and_certificate_reload() {
    let pki = TestPki::new();
    let s = OpsServer::start("", Some(&pki), false).await;
    assert!(s.state.config.public_url.starts_with("https://"));
    let https = format!("https://localhost:{}", s.addr.port());

    let h2 = tls_client(&pki, false);
    let r = h2.get(format!("{https}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
    let first = peer_cert(&r);
    assert!(!first.is_empty());

    let h1 = tls_client(&pki, true);
    let r = h1
        .get(format!(
            "{https}/token?{}",
            token_query("repository:admin/app:pull")
        ))
        .basic_auth("admin", Some(ADMIN_PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);

    // Plain HTTP on the TLS port gets no answer a client could mistake for one.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", s.addr.port()))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    // New certificate on disk + reload: new connections get it.
    let cert_path = s.dir.path().join("server.crt");
    let key_path = s.dir.path().join("server.key");
    let (new_cert, new_key) = pki.write_leaf(s.dir.path(), "next", &["localhost"]);
    std::fs::copy(&new_key, &key_path).unwrap();
    // Key written, certificate not yet: a reload now must keep the old pair.
    assert!(s.state.tls.as_ref().unwrap().reload().is_err());
    let r = tls_client(&pki, false)
        .get(format!("{https}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_cert(&r), first, "a mismatched pair is never served");
    std::fs::copy(&new_cert, &cert_path).unwrap();
    s.state.tls.as_ref().unwrap().reload().unwrap();
    let r = tls_client(&pki, false)
        .get(format!("{https}/healthz"))
        .send()
        .await
        .unwrap();
    let second = peer_cert(&r);
    assert!(!second.is_empty());
    assert_ne!(second, first, "reloaded certificate is served");

    let text = tls_client(&pki, false)
        .get(format!("{https}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(value(&text, "berth_tls_certificate_expiry_days") > 1.0);
    s.shutdown().await;
}

#[test]
fn ops_settings_validate() {
    let parse = |t: &str| berth::config::Config::from_toml(Path::new("b.toml"), t, &NoEnv);
    let c = parse(
        "trusted_proxies = ['10.0.0.0/8', '192.0.2.7']\nmetrics_listen = '127.0.0.1:9101'\nshutdown_timeout = '30s'\n",
    )
    .unwrap();
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.metrics_listen.unwrap().port(), 9101);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    let d = parse("").unwrap();
    assert_eq!(d.shutdown_timeout, Duration::from_secs(10));
    assert!(d.trusted_proxies.is_empty() && d.metrics_listen.is_none() && d.tls.is_none());
    let c = parse("tls_cert = 'a.crt'\ntls_key = 'a.key'\nlisten = '0.0.0.0:8443'\n").unwrap();
    assert!(c.tls.is_some());
    assert_eq!(c.public_url, "https://0.0.0.0:8443");
    for (text, key) in [
        ("trusted_proxies = ['10.0.0.0/99']", "trusted_proxies"),
        ("trusted_proxies = ['proxy.local']", "trusted_proxies"),
        ("metrics_listen = 'nope'", "metrics_listen"),
        ("metrics_listen = '127.0.0.1:5001'", "metrics_listen"),
        ("tls_cert = 'a.crt'", "tls_key"),
        ("tls_key = 'a.key'", "tls_cert"),
        ("shutdown_timeout = 'soon'", "shutdown_timeout"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_that_do_not_work_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (cert, _) = pki.write_leaf(dir.path(), "a", &["localhost"]);
    let (_, other_key) = pki.write_leaf(dir.path(), "b", &["localhost"]);
    let text = format!(
        "database = {}\nkeys_dir = {}\npolicies_dir = '{}/policies'\ntls_cert = {}\ntls_key = {}\n",
        quoted(&dir.path().join("db")),
        quoted(&dir.path().join("keys")),
        env!("CARGO_MANIFEST_DIR"),
        quoted(&cert),
        quoted(&other_key),
    );
    let cfg = berth::config::Config::from_toml(Path::new("b.toml"), &text, &NoEnv).unwrap();
    let e = berth::app::build(cfg, Some(SecretString::from(ADMIN_PW)))
        .await
        .expect_err("mismatched key refused")
        .to_string();
    assert!(e.starts_with("TLS:") && e.contains("b.key"), "{e}");
}

// ---------------------------------------------------------------------------
// SIGTERM on the real process

#[test]
fn sigterm_finishes_requests_in_flight_and_exits_zero_in_bounded_time() {
    let mut srv = Serve::new("registry.test", "berth-ops", ADMIN_PW)
        .env("BERTH_SHUTDOWN_TIMEOUT", "3s")
        .env("RUST_LOG", "info")
        .start();
    let addr: SocketAddr = srv.addr().parse().unwrap();
    let started = Instant::now();
    while srv.get("/readyz").map(|(status, _)| status) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "berth did not become ready:\n{}",
            srv.log()
        );
        assert!(srv.running(), "berth exited:\n{}", srv.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Request A: a password grant whose body arrives slowly, across the SIGTERM.
    let body = format!(
        "grant_type=password&username=admin&password={ADMIN_PW}&client_id=t&service=registry.test&scope={}",
        enc("repository:admin/app:pull")
    );
    let mut a = std::net::TcpStream::connect(addr).unwrap();
    write!(
        a,
        "POST /token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.as_bytes().split_at(10);
    a.write_all(first).unwrap();
    // Request B: headers sent, body never finished; it must not hold up the exit
    // beyond the shutdown timeout.
    let mut b = std::net::TcpStream::connect(addr).unwrap();
    b.write_all(b"POST /token HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\ngrant")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    srv.signal("TERM");
    let term_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // The listener is closed: new connections are refused.
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "berth still accepts connections after SIGTERM"
    );
    // A finishes and gets its token.
    a.write_all(rest).unwrap();
    let mut answer = String::new();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = a.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request did not complete: {answer:?}\n{}",
        srv.log()
    );
    assert!(answer.contains("\"access_token\""), "{answer}");

    // The process exits 0 once B is cut off at the shutdown timeout.
    let status = srv
        .wait_exit(Duration::from_secs(15).saturating_sub(term_at.elapsed()))
        .unwrap_or_else(|| panic!("berth still running 15 s after SIGTERM:\n{}", srv.log()));
    let took = term_at.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", srv.log());
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(12),
        "exit after {took:?} (shutdown timeout 3 s)"
    );
    let log = srv.log();
    assert!(log.contains("shutdown timeout reached"), "{log}");
    drop(b);
}

// ---------------------------------------------------------------------------
// The example deployments' configurations stay valid.

struct ExampleEnv;
impl berth::config::Env for ExampleEnv {
    fn var(&self, name: &str) -> Option<String> {
        // Secrets the examples take from the environment.
        (name == "BERTH_KEYCLOAK_SECRET").then(|| "example".to_owned())
    }
}

/// The text of a `key: |` block in a YAML file (indented by `indent` spaces).
fn yaml_block(yaml: &str, key: &str, indent: usize) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("no block {key}"));
    let pad = " ".repeat(indent);
    lines
        .take_while(|l| l.is_empty() || l.starts_with(&pad))
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_configurations_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    for file in ["systemd/berth.toml", "compose/berth.toml"] {
        let c = berth::config::Config::from_toml(Path::new(file), &read(file), &ExampleEnv)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(c.metrics_listen.is_some(), "{file}");
    }
    let k8s = read("kubernetes/configmap.yaml");
    let c = berth::config::Config::from_toml(
        Path::new("configmap berth.toml"),
        &yaml_block(&k8s, "berth.toml", 4),
        &ExampleEnv,
    )
    .unwrap();
    assert_eq!(c.trusted_proxies.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        yaml_block(&k8s, "default.toml", 4),
    )
    .unwrap();
    let policy = berth::policy::reload::PolicyHandle::load(dir.path()).unwrap();
    assert_eq!(policy.status().rules, 2);
    // The registry examples point at the same service and issuer as the
    // berth configurations.
    for file in [
        "registry/distribution2.yml",
        "registry/distribution3.yml",
        "registry/zot.json",
        "compose/registry.yml",
    ] {
        let text = read(file);
        assert!(text.contains("registry.example.com"), "{file}");
        assert!(text.contains("/token"), "{file}");
    }
}
