//! berth for the end-to-end tests: the shared `common::server` process with
//! the e2e service, issuer and admin password, a policy directory of the
//! test's choice, and the checks and requests the scenarios repeat (the key
//! bundle written before ready, `/healthz` on both addresses, `GET /token`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{http_get, jwt_claims, repo_policies, rt, ADMIN_PASSWORD, ISSUER, SERVICE};
use crate::common::proc::Out;
use crate::common::server::{BerthProcess, Serve};

/// A running `berth serve` with a SQLite database, keys and logs in its own
/// temp directory; stopped on drop.
pub struct Berth {
    proc: BerthProcess,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Where its signing keys and `bundle.pem` are.
    pub keys_dir: PathBuf,
}

impl Berth {
    /// berth with the repository's policies.
    pub fn start() -> Berth {
        Berth::start_with_policies(&repo_policies())
    }

    /// Starts berth with `BERTH_POLICIES_DIR` at `policies`: a test that edits
    /// policy files while berth runs passes its own temp copy here.
    pub fn start_with_policies(policies: &Path) -> Berth {
        Berth::start_with_env(policies, &[])
    }

    /// Like [`Berth::start_with_policies`], with more environment for berth and
    /// its CLI (`BERTH_CONFIG` for settings that only a file can hold). A later
    /// value replaces an earlier one: replicas share one `BERTH_KEYS_DIR`.
    pub fn start_with_env(policies: &Path, extra: &[(&str, String)]) -> Berth {
        let serve = extra.iter().fold(
            Serve::new(SERVICE, ISSUER, ADMIN_PASSWORD)
                .env("BERTH_POLICIES_DIR", policies.display().to_string()),
            |s, (k, v)| s.env(k, v.clone()),
        );
        Berth::from_process(serve.start())
    }

    /// Wraps a process started (and answering) elsewhere; checks that berth
    /// wrote the key bundle before it said it was ready.
    pub fn from_process(proc: BerthProcess) -> Berth {
        let berth = Berth {
            url: proc.url.clone(),
            keys_dir: proc.keys_dir(),
            proc,
        };
        assert!(
            berth.bundle_path().is_file(),
            "berth is ready but {} does not exist\n{}",
            berth.bundle_path().display(),
            berth.log_tail(60)
        );
        berth
    }

    /// A setting berth was started with (`BERTH_*`), as its environment holds it.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.proc.setting(key)
    }

    /// The certificate bundle registries trust.
    pub fn bundle_path(&self) -> PathBuf {
        self.keys_dir.join("bundle.pem")
    }

    /// The token endpoint.
    pub fn realm(&self) -> String {
        self.proc.realm()
    }

    /// The last `n` lines of its logs.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// `GET /healthz` on the metrics address, with the policy's details:
    /// status and JSON body (`None` if unreachable or not JSON).
    pub fn healthz(&self) -> Option<(u16, Value)> {
        let metrics = self.setting("BERTH_METRICS_LISTEN")?;
        let (status, body) = http_get(&format!("http://{metrics}/healthz"), None)?;
        serde_json::from_str(&body).ok().map(|v| (status, v))
    }

    /// `GET /healthz` on the public address: the status word only.
    pub fn public_healthz(&self) -> Option<(u16, Value)> {
        let (status, body) = http_get(&format!("{}/healthz", self.url), None)?;
        serde_json::from_str(&body).ok().map(|v| (status, v))
    }

    /// Everything `berth serve` logged (stderr) so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Whether `berth serve` is still running.
    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// What `berth serve` printed on stdout so far.
    pub fn serve_stdout(&self) -> String {
        self.proc.stdout()
    }

    /// Runs the berth CLI against the same configuration as the server.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.proc.cli(args).stdin_opt(stdin).run()
    }

    /// [`Berth::cli`], which must succeed.
    #[track_caller]
    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.proc
            .cli(args)
            .stdin_opt(stdin)
            .ok_or_show(|| self.log_tail(40))
    }

    /// `berth user add NAME --group G… --password-stdin`, which must succeed.
    #[track_caller]
    pub fn add_user(&self, name: &str, password: &str, groups: &[&str]) {
        self.proc.add_user(name, password, groups);
    }

    /// `GET /token` as a client would; returns status and JSON body.
    pub fn get_token(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> (u16, Value) {
        get_token(&self.realm(), SERVICE, creds, scopes)
    }
}

/// The actions the token in `body` grants on `name`.
pub fn granted(body: &Value, name: &str) -> Vec<String> {
    let claims = jwt_claims(body["token"].as_str().unwrap_or_default());
    claims["access"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["name"] == name)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// `GET realm?service=…&account=…&scope=…` with Basic credentials, as a
/// client asks for a token: the status and the JSON body (the text as a JSON
/// string when it is not JSON).
pub fn get_token(
    realm: &str,
    service: &str,
    creds: Option<(&str, &str)>,
    scopes: &[&str],
) -> (u16, Value) {
    let mut query: Vec<(&str, &str)> = vec![("service", service)];
    if let Some((user, _)) = creds {
        query.push(("account", user));
    }
    for s in scopes {
        query.push(("scope", s));
    }
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut req = client.get(realm).query(&query);
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {realm}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    })
}
