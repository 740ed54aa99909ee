//! Parts for the compatibility matrix: a berth started from a configuration file
//! (several services, a chosen key algorithm, extra environment), and
//! distribution registries 2.8 (Debian) and 3.x (built by
//! `scripts/install-go-tools.sh`) with any `auth.token` settings, including
//! deliberately wrong ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::cli::{berth, Cli};
use crate::common::proc::{free_port, Daemon, Out};
use crate::common::server::{repo_policies, BerthProcess, Serve};
use crate::components::{http_get, rt, ADMIN_PASSWORD, ALICE_PASSWORD, BOB_PASSWORD};

/// The issuer of the compatibility berth.
pub const ISSUER: &str = "berth-compat";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `scripts/install-go-tools.sh` puts the Go-built tools.
pub fn go_tools_dir() -> PathBuf {
    match std::env::var_os("BERTH_GO_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/berth-test-tools/bin"),
    }
}

/// A Go-built tool: from the tools cache, else from PATH. Returns the name
/// unchanged when absent (`tools_available` then reports it).
pub fn go_tool(name: &str) -> String {
    let cached = go_tools_dir().join(name);
    if cached.is_file() {
        return cached.display().to_string();
    }
    name.to_string()
}

/// The distribution 3.x binary (named `registry` by its module; looked for in
/// the tools cache only, as "registry" in PATH could be anything).
pub fn dist3_bin() -> String {
    go_tools_dir().join("registry").display().to_string()
}

/// One `[[service]]` of berth's configuration.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub name: String,
    pub key_id: &'static str,
    pub audience_list: bool,
    pub expand_wildcard: bool,
}

impl ServiceSpec {
    pub fn new(name: &str, key_id: &'static str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            key_id,
            audience_list: false,
            expand_wildcard: false,
        }
    }
}

/// How [`CBerth::start`] sets berth up.
pub struct BerthOpts {
    /// Algorithm of the first key, generated before `serve`.
    pub alg: &'static str,
    pub services: Vec<ServiceSpec>,
    pub key_publish_delay: &'static str,
    /// Extra environment for `berth serve` and the key generation before it
    /// (e.g. a fake clock, so the key is valid on berth's clock).
    pub serve_env: Vec<(String, String)>,
    /// Host name in berth's public URL (the realm); clients built on
    /// go-containerregistry refuse a realm whose host is a loopback IP literal.
    pub public_host: &'static str,
    /// Rules added, as one more policy file, to the repository's policies.
    pub extra_policy: Option<String>,
}

impl Default for BerthOpts {
    fn default() -> Self {
        BerthOpts {
            alg: "es256",
            services: vec![ServiceSpec::new("registry.compat.test", "libtrust")],
            key_publish_delay: "1h",
            serve_env: Vec::new(),
            public_host: "127.0.0.1",
            extra_policy: None,
        }
    }
}

/// A temp dir whose path is all lower case (podman names images pulled from
/// `oci:DIR` after DIR, and image names must be lower case).
pub fn lowercase_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::temp_dir().to_string_lossy().to_lowercase();
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}{}-{n}", std::process::id());
        if let Ok(d) = tempfile::Builder::new()
            .prefix(&name)
            .rand_bytes(0)
            .tempdir_in(&base)
        {
            return d;
        }
    }
    panic!("could not create a lower-case temp dir in {base}");
}

/// A copy of the policy files of `from` in `to`, plus `extra.toml` holding `extra`.
fn policies_with(from: &Path, extra: &str, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("mkdir policies");
    for entry in std::fs::read_dir(from).expect("read policies") {
        let path = entry.expect("policy entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, to.join(path.file_name().expect("file name")))
                .expect("copy policy");
        }
    }
    std::fs::write(to.join("extra.toml"), extra).expect("write extra policy");
    to.to_path_buf()
}

/// berth started from a TOML file, with users alice, bob and admin.
pub struct CBerth {
    proc: BerthProcess,
    /// berth's public URL, on [`BerthOpts::public_host`].
    pub url: String,
    /// Its keys directory (bundle, JWKS).
    pub keys_dir: PathBuf,
    /// The `BERTH_CONFIG` file it was started with.
    pub config_path: PathBuf,
}

impl CBerth {
    /// Writes the configuration for `opts`, generates the first key with
    /// `opts.alg`, starts `berth serve` and adds the users.
    pub fn start(opts: BerthOpts) -> CBerth {
        let serve = Serve::bare();
        let port = serve.port();
        let dir = serve.dir().to_path_buf();
        let url = format!("http://{}:{port}", opts.public_host);
        let keys_dir = dir.join("keys");
        let mut policies = repo_policies();
        if let Some(extra) = &opts.extra_policy {
            policies = policies_with(&policies, extra, &dir.join("policies"));
        }
        let mut toml = format!(
            "listen = '127.0.0.1:{port}'\npublic_url = '{url}'\ndatabase = '{db}'\n\
             keys_dir = '{keys}'\npolicies_dir = '{pol}'\nissuer = '{ISSUER}'\n\
             key_publish_delay = '{delay}'\n",
            db = dir.join("berth.db").display(),
            keys = keys_dir.display(),
            pol = policies.display(),
            delay = opts.key_publish_delay,
        );
        for s in &opts.services {
            toml.push_str(&format!(
                "\n[[service]]\nname = '{}'\nkey_id = '{}'\naudience_list = {}\nexpand_wildcard = {}\n",
                s.name, s.key_id, s.audience_list, s.expand_wildcard
            ));
        }
        let serve = serve.config(&toml);
        let config_path = dir.join("berth.toml");
        berth(["key", "generate", "--alg", opts.alg])
            .env("BERTH_CONFIG", &config_path)
            .envs(opts.serve_env.iter().map(|(k, v)| (k, v)))
            .ok();
        let serve = opts.serve_env.iter().fold(
            serve.env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
            |s, (k, v)| s.env(k, v.clone()),
        );
        let b = CBerth {
            proc: serve.start(),
            url,
            keys_dir,
            config_path,
        };
        b.add_user("alice", ALICE_PASSWORD);
        b.add_user("bob", BOB_PASSWORD);
        b
    }

    /// The berth CLI with only `BERTH_CONFIG` set: not the serve-only
    /// environment (a faked clock stays with the server).
    pub fn command<I, S>(&self, args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        berth(args).env("BERTH_CONFIG", &self.config_path)
    }

    /// The token endpoint on the public URL.
    pub fn realm(&self) -> String {
        format!("{}/token", self.url)
    }

    /// The certificate bundle registries trust.
    pub fn bundle_path(&self) -> PathBuf {
        self.keys_dir.join("bundle.pem")
    }

    /// The JWKS file registries may trust instead.
    pub fn jwks_path(&self) -> PathBuf {
        self.keys_dir.join("jwks.json")
    }

    /// The last `n` lines of its logs.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// Runs the berth CLI on the same configuration file.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.command(args).stdin_opt(stdin).run()
    }

    /// [`CBerth::cli`], which must succeed.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.command(args)
            .stdin_opt(stdin)
            .ok_or_show(|| self.log_tail(40))
    }

    fn add_user(&self, name: &str, password: &str) {
        self.cli_ok(
            &["user", "add", name, "--password-stdin"],
            Some(&format!("{password}\n")),
        );
    }

    /// `GET /token` for `service`; the token string, or panics with the answer.
    pub fn token(&self, service: &str, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let (status, body) = self.get_token(service, creds, scopes);
        assert_eq!(status, 200, "token request failed: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    pub fn get_token(
        &self,
        service: &str,
        creds: Option<(&str, &str)>,
        scopes: &[&str],
    ) -> (u16, Value) {
        crate::components::get_token(&self.realm(), service, creds, scopes)
    }
}

/// Which registry implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Debian's docker-registry 2.8.
    Dist2,
    /// distribution v3 from the Go tools cache.
    Dist3,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Dist2 => "distribution 2.8",
            Kind::Dist3 => "distribution 3.1",
        }
    }

    pub fn bin(self) -> String {
        match self {
            Kind::Dist2 => crate::components::REGISTRY_BIN.to_string(),
            Kind::Dist3 => dist3_bin(),
        }
    }
}

/// How the registry is told which keys to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    Bundle(PathBuf),
    Jwks(PathBuf),
}

/// The `auth.token` settings of a registry; start from [`RegistrySpec::for_berth`]
/// and change a field to misconfigure it.
#[derive(Clone, Debug)]
pub struct RegistrySpec {
    pub kind: Kind,
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub trust: Trust,
    pub signing_algorithms: Option<Vec<String>>,
    /// A complete `auth:` block to use instead of the fields above; an empty
    /// one runs the registry without auth.
    pub auth_block: Option<String>,
}

impl RegistrySpec {
    pub fn for_berth(kind: Kind, berth: &CBerth, service: &str, trust: Trust) -> RegistrySpec {
        RegistrySpec {
            kind,
            realm: berth.realm(),
            service: service.to_string(),
            issuer: ISSUER.to_string(),
            trust,
            signing_algorithms: None,
            auth_block: None,
        }
    }

    fn auth_yaml(&self) -> String {
        if let Some(block) = &self.auth_block {
            return block.clone();
        }
        let mut s = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n",
            self.realm, self.service, self.issuer
        );
        match &self.trust {
            Trust::Bundle(b) => s.push_str(&format!("    rootcertbundle: {}\n", b.display())),
            Trust::Jwks(j) => s.push_str(&format!("    jwks: {}\n", j.display())),
        }
        if let Some(algs) = &self.signing_algorithms {
            s.push_str("    signingalgorithms:\n");
            for a in algs {
                s.push_str(&format!("      - {a}\n"));
            }
        }
        s
    }
}

/// A running distribution registry; stopped on drop.
pub struct Reg {
    daemon: Option<Daemon>,
    pub spec: RegistrySpec,
    /// `127.0.0.1:PORT`
    pub host: String,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Reg {
    pub fn start(spec: RegistrySpec) -> Reg {
        let dir = tempfile::Builder::new()
            .prefix("berth-compat-registry.")
            .tempdir()
            .expect("tempdir");
        let host = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {host}\n  secret: berth-compat-not-secret\n{auth}",
            storage = dir.path().join("storage").display(),
            auth = spec.auth_yaml(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut reg = Reg {
            daemon: None,
            spec,
            host,
            config_path,
            dir,
        };
        reg.launch();
        reg
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(self.spec.kind.bin());
        cmd.arg("serve")
            .arg(&self.config_path)
            .env("OTEL_TRACES_EXPORTER", "none")
            .env("OTEL_SDK_DISABLED", "true");
        let name = match self.spec.kind {
            Kind::Dist2 => "registry2",
            Kind::Dist3 => "registry3",
        };
        self.daemon = Some(Daemon::spawn(
            name,
            cmd,
            self.dir.path(),
            Duration::from_secs(5),
        ));
        self.wait_ready();
    }

    /// Stops and starts the registry with the same configuration (it reads its
    /// bundle and JWKS file at start).
    pub fn restart(&mut self) {
        self.daemon = None;
        self.launch();
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let url = format!("http://{}/v2/", self.host);
        loop {
            if let Some(st) = self.daemon.as_mut().and_then(|d| d.exited()) {
                panic!(
                    "registry exited during start-up ({st})\n{}",
                    self.log_tail(40)
                );
            }
            // With token auth the registry challenges; without, it answers.
            let open = self.spec.auth_yaml().is_empty();
            match http_get(&url, None) {
                Some((401, _)) if !open => return,
                Some((200, _)) if open => return,
                Some((status, body)) => {
                    let want = if open { 200 } else { 401 };
                    panic!("GET {url} should be {want}, got {status}: {body}")
                }
                None => {}
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "registry not ready on {url}\n{}",
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log_tail(n))
            .unwrap_or_default()
    }

    /// A request with a bearer token: status and body.
    pub fn request(&self, method: &str, path: &str, token: &str) -> (u16, String) {
        let url = format!("{}{path}", self.url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        rt().block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client");
            match client
                .request(method, &url)
                .bearer_auth(token)
                .header(
                    "Accept",
                    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
                )
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let digest = r
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let body = r.text().await.unwrap_or_default();
                    (status, if body.is_empty() { digest } else { body })
                }
                Err(e) => (0, e.to_string()),
            }
        })
    }
}
