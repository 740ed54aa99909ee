//! TLS: HTTP/1.1 and HTTP/2 over ALPN, certificate reload (never a mismatched
//! pair), the certificate expiry metric, and files that do not work stopping
//! the start with a clear error.

use std::path::Path;

use secrecy::SecretString;

use crate::ops::{quoted, token_query, value, NoEnv, OpsServer, TestPki};
use crate::support::ADMIN_PW;

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
