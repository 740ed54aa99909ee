//! What the operations tests share: an in-process server started from a config
//! with extra TOML lines (metrics on their own port, trusted proxies, TLS from
//! a test CA), a plain GET, and reading samples out of `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::state::AppState;
use secrecy::SecretString;
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::support::{enc, Resp, ADMIN_PW};

pub trait FullText {
    /// The whole body as text (`Resp::text` cuts it short for messages).
    fn text_full(&self) -> String;
}

impl FullText for Resp {
    /// The whole body as text (`Resp::text` cuts it short for messages).
    fn text_full(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct NoEnv;
impl berth::config::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// A server started from a config with extra TOML lines (the shared test
/// server has no knobs for metrics, proxies or TLS).
pub struct OpsServer {
    pub state: AppState,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub dir: TempDir,
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

pub fn quoted(p: &Path) -> String {
    format!("'{}'", p.display())
}

pub const POLICY: &str = r#"
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
    pub async fn start(extra: &str, tls: Option<&TestPki>, separate_metrics: bool) -> OpsServer {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn add_user(&self, name: &str, pw: &str) {
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
    pub async fn shutdown(mut self) {
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

pub async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Resp {
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
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[track_caller]
pub fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

pub fn token_query(scope: &str) -> String {
    format!("service=registry.test&scope={}", enc(scope))
}

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
