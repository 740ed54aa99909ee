//! The in-process test server and HTTP helpers shared by the `http` tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use berth::authn::Username;
use berth::config::Database;
use berth::state::AppState;
use berth::store::Store;
use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD};
use secrecy::SecretString;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::common::db::TestDb;

/// Password of the bootstrap `admin` user.
pub const ADMIN_PW: &str = "adminpw";
/// Issuer configured on every test server.
pub const ISSUER: &str = "berth-test";

struct NoEnv;
impl berth::config::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// How to start a server.
pub struct Opts {
    /// `(name, key_id)` per `[[service]]`, first is the default.
    pub services: Vec<(&'static str, &'static str)>,
    /// Text of one policy file; `None` uses the shipped `policies/`.
    pub policy: Option<&'static str>,
    /// `credential_cache_ttl`.
    pub cache_ttl: &'static str,
    /// `token_ttl`.
    pub token_ttl: &'static str,
    /// `refresh_idle` (and `refresh_absolute`, twice as long).
    pub refresh_idle: &'static str,
    /// The database, from a [`TestDb`] (`db.database()`); `None` is a fresh
    /// SQLite [`TestDb`] the server owns. A database that has users already
    /// gets no admin.
    pub database: Option<Database>,
    /// More top-level settings, as TOML lines (e.g. `login_failure_limit = 1000`).
    pub extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            services: vec![
                ("registry.test", "libtrust"),
                ("other.test", "thumbprint"),
                ("x5c.test", "x5c"),
            ],
            policy: None,
            cache_ttl: "5m",
            token_ttl: "5m",
            refresh_idle: "1d",
            database: None,
            extra: String::new(),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header name (lowercase) and value pairs.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Body text, lossily, for failure messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect()
    }

    /// Asserts a 2xx and returns the JSON body.
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {}: {}",
            self.status,
            self.text()
        );
        self.json()
    }

    /// Asserts the status and a JSON body whose `error` equals `code`.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let j = self.json();
        assert_eq!(j["error"], code, "body: {}", self.text());
        assert!(j["error_description"].is_string(), "body: {}", self.text());
    }

    /// Asserts a 4xx with a JSON body carrying a string `error` (what every bad input
    /// must get: never a 5xx, never an empty or HTML body).
    #[track_caller]
    pub fn client_error_json(&self, what: &str) {
        assert!(
            (400..500).contains(&self.status),
            "{what}: expected 4xx, got {}: {}",
            self.status,
            self.text()
        );
        assert!(
            self.json()["error"].is_string(),
            "{what}: {} without a JSON `error` body: {:?}",
            self.status,
            self.text()
        );
    }
}

/// A running berth on 127.0.0.1 with its own temp database, keys and policies.
pub struct TestServer {
    /// The server's state (store, config, signer).
    pub state: AppState,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Listening address.
    pub addr: SocketAddr,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The policy directory, when the test wrote its own policy.
    pub policy_dir: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
    _db: Option<TestDb>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn toml_path(p: &Path) -> String {
    format!("'{}'", p.display())
}

impl TestServer {
    /// Starts a server with `opts`.
    pub async fn start(opts: Opts) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let own_policy = opts.policy.is_some();
        let policies: PathBuf = match opts.policy {
            Some(text) => {
                let p = dir.path().join("policies");
                std::fs::create_dir_all(&p).expect("mkdir policies");
                std::fs::write(p.join("test.toml"), text).expect("write policy");
                p
            }
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        };
        let own_db = opts.database.is_none().then(TestDb::sqlite);
        let database = opts
            .database
            .clone()
            .or_else(|| own_db.as_ref().map(TestDb::database))
            .expect("a database");
        let db = match &database {
            Database::Postgres(url) => format!("'{url}'"),
            Database::Sqlite(path) => toml_path(path),
        };
        let mut text = format!(
            "listen = '127.0.0.1:0'\npublic_url = 'http://127.0.0.1:1'\ndatabase = {db}\nkeys_dir = {keys}\n\
             policies_dir = {pol}\nissuer = '{ISSUER}'\ntoken_ttl = '{ttl}'\nrefresh_idle = '{idle}'\n\
             refresh_absolute = '{idle}'\ncredential_cache_ttl = '{cache}'\ncredential_cache_size = 100\n\
             max_scopes = 32\nhash_concurrency = 4\n",
            keys = toml_path(&dir.path().join("keys")),
            pol = toml_path(&policies),
            ttl = opts.token_ttl,
            cache = opts.cache_ttl,
            idle = opts.refresh_idle,
        );
        text.push_str(&opts.extra);
        text.push('\n');
        for (name, mode) in &opts.services {
            text.push_str(&format!(
                "[[service]]\nname = '{name}'\nkey_id = '{mode}'\n"
            ));
        }
        let cfg = berth::config::Config::from_toml(Path::new("test.toml"), &text, &NoEnv)
            .expect("config");
        let (state, boot) = berth::app::build(cfg, Some(SecretString::from(ADMIN_PW)))
            .await
            .expect("build");
        assert!(boot.admin_created || own_db.is_none());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(berth::app::serve(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            state,
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            policy_dir: own_policy.then_some(policies),
            stop: Some(tx),
            _dir: dir,
            _db: own_db,
        }
    }

    /// The user store (as the CLI would use it from another process).
    pub fn store(&self) -> &Store {
        self.state.auth.store()
    }

    /// Creates a user with an argon2id hash of `pw`.
    pub async fn add_user(&self, name: &str, pw: &str, groups: &[&str]) {
        let hash = berth::authn::password::hash(&SecretString::from(pw)).expect("hash");
        self.add_user_hash(name, &hash, groups).await;
    }

    /// Creates a user with a given stored hash.
    pub async fn add_user_hash(&self, name: &str, hash: &str, groups: &[&str]) {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.store()
            .create_user(&uname(name), hash, &groups, now())
            .await
            .expect("create user");
    }

    /// `GET /token?{query}` with optional Basic credentials.
    pub async fn get(&self, query: &str, basic: Option<(&str, &str)>) -> Resp {
        let mut rb = self.client.get(format!("{}/token?{query}", self.base));
        if let Some((u, p)) = basic {
            rb = rb.basic_auth(u, Some(p));
        }
        into_resp(rb.send().await.expect("send")).await
    }

    /// `GET /token?{query}` with a raw `Authorization` header value.
    pub async fn get_auth(&self, query: &str, authorization: &[u8]) -> Resp {
        self.raw(
            &[
                format!("GET /token?{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: ").as_bytes(),
                authorization,
                b"\r\n\r\n",
            ]
            .concat(),
        )
        .await
    }

    /// `GET /token?{query}` sent as raw bytes (for queries an HTTP library refuses,
    /// e.g. longer than a `Uri` may be).
    pub async fn get_raw(&self, query: &[u8]) -> Resp {
        self.raw(
            &[
                b"GET /token?".as_slice(),
                query,
                b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            ]
            .concat(),
        )
        .await
    }

    /// `POST /token` with a urlencoded form.
    pub async fn post(&self, form: &[(&str, &str)]) -> Resp {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.post_raw(body.into_bytes()).await
    }

    /// `POST /token` with a raw body.
    pub async fn post_raw(&self, body: Vec<u8>) -> Resp {
        let res = self
            .client
            .post(format!("{}/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("send");
        into_resp(res).await
    }

    /// `GET path` on the server.
    pub async fn get_path(&self, path: &str) -> Resp {
        into_resp(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// Sends raw bytes as one HTTP/1.1 request (`Connection: close`) and parses the
    /// answer: lets tests send what a well-behaved client library would refuse to.
    pub async fn raw(&self, request: &[u8]) -> Resp {
        let mut s = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        // The server may answer and close before reading all we sent, so a
        // failed write still leaves its answer to read.
        let _ = s.write_all(request).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        parse_raw_response(&buf)
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> Value {
        self.get_path("/.well-known/jwks.json").await.ok()
    }

    /// Verifies `token` with the key the JWKS publishes for it (by `kid`, or the
    /// `x5c` certificate), checking signature, `iss`, `aud` = `service`, `exp`, `nbf`.
    /// Returns the header and claims.
    pub async fn verify(&self, token: &str, service: &str) -> (jsonwebtoken::Header, Value) {
        let jwks = self.jwks().await;
        let header = jsonwebtoken::decode_header(token).expect("header");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
        let jwk = match (&header.kid, &header.x5c) {
            (Some(kid), None) => jwks["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .find(|k| k["kid"] == kid.as_str())
                .unwrap_or_else(|| panic!("kid {kid} not in JWKS {jwks}"))
                .clone(),
            (None, Some(chain)) => {
                // The header's certificate must carry a published key.
                let der = BASE64.decode(chain[0].as_bytes()).expect("x5c base64");
                let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x5c cert");
                let point = cert.public_key().subject_public_key.data.to_vec();
                jwks["keys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .find(|k| ec_point(k) == point)
                    .unwrap_or_else(|| panic!("x5c key not in JWKS {jwks}"))
                    .clone()
            }
            other => panic!("header needs exactly one of kid and x5c: {other:?}"),
        };
        let key = jsonwebtoken::DecodingKey::from_ec_components(
            jwk["x"].as_str().expect("x"),
            jwk["y"].as_str().expect("y"),
        )
        .expect("decoding key");
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&[service]);
        v.set_issuer(&[ISSUER]);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v)
            .expect("token verifies with the JWKS key");
        (data.header, data.claims)
    }

    /// Gets a token and returns its verified claims' `access`.
    pub async fn access(&self, query: &str, basic: Option<(&str, &str)>) -> Value {
        let r = self.get(query, basic).await;
        let body = r.ok();
        let service = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .unwrap_or("registry.test");
        let (_, claims) = self
            .verify(body["token"].as_str().expect("token"), service)
            .await;
        claims["access"].clone()
    }
}

/// The default service of every test server.
pub const SVC: &str = "registry.test";

/// The refresh token of a 200 answer.
pub fn refresh_of(r: &Resp) -> String {
    let j = r.ok();
    j["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token in {j}"))
        .to_owned()
}

/// A refresh-token grant form.
pub fn refresh_form<'a>(
    token: &'a str,
    service: &'a str,
    scope: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", "docker"),
        ("service", service),
        ("scope", scope),
    ]
}

/// The entry for `name` in an `access` claim.
pub fn entry(access: &Value, name: &str) -> Value {
    access
        .as_array()
        .unwrap_or_else(|| panic!("access is not an array: {access}"))
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no access entry for {name} in {access}"))
        .clone()
}

/// `0x04 || x || y` of an EC JWK.
pub fn ec_point(jwk: &Value) -> Vec<u8> {
    let x = BASE64URL_NOPAD
        .decode(jwk["x"].as_str().unwrap_or("").as_bytes())
        .expect("x");
    let y = BASE64URL_NOPAD
        .decode(jwk["y"].as_str().unwrap_or("").as_bytes())
        .expect("y");
    [vec![4u8], x, y].concat()
}

/// libtrust key ID of a DER SubjectPublicKeyInfo, computed here independently.
pub fn libtrust_kid(spki: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, spki);
    let b32 = BASE32_NOPAD.encode(&hash.as_ref()[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 7638 thumbprint of an EC JWK, computed here independently.
pub fn thumbprint(jwk: &Value) -> String {
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["crv"].as_str().unwrap_or(""),
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or("")
    );
    BASE64URL_NOPAD
        .encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
}

/// A username (test input is always valid).
pub fn uname(s: &str) -> Username {
    s.parse().expect("username")
}

/// Now, unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn into_resp(res: reqwest::Response) -> Resp {
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = res.bytes().await.expect("body").to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

fn parse_raw_response(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Resp {
        status,
        headers,
        body,
    }
}
