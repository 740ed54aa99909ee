//! The real parts of an end-to-end setup, each started in its own temp dir on
//! free loopback ports and stopped on drop: berth ([`berth`], on the shared
//! `common::server`), `docker-registry` ([`registry`]), dockerd ([`dockerd`])
//! and the three together ([`stack`]). This file holds what they share: the
//! test identities, the check for external tools, and small HTTP helpers.

mod berth;
mod dockerd;
mod registry;
mod stack;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub use berth::{get_token, granted, Berth};
pub use dockerd::Dockerd;
pub use registry::Registry;
pub use stack::{Stack, DENIAL_MARKERS};

pub use crate::common::server::repo_policies;

/// The service (registry) name berth issues tokens for.
pub const SERVICE: &str = "registry.e2e.test";
/// berth's issuer (`iss`), as the registry expects it.
pub const ISSUER: &str = "berth-e2e";
/// The bootstrap admin's password.
pub const ADMIN_PASSWORD: &str = "admin-Secret-1";
/// Local user alice's password.
pub const ALICE_PASSWORD: &str = "alice-Secret-1";
/// Local user bob's password.
pub const BOB_PASSWORD: &str = "bob-Secret-1";

/// Debian's distribution 2.8.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// Debian's docker.io client; /usr/local/bin/docker may be another client.
pub const DOCKER_BIN: &str = "/usr/bin/docker";

/// Wait for a readiness probe, bounded.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // dockerd lives in sbin, which a non-login PATH may lack.
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Checks that the external tools a test needs are present. Returns false
/// (after printing why) when the test should be skipped; with
/// `BERTH_E2E=require` a missing tool is a hard failure instead.
pub fn tools_available(test: &str, tools: &[&str], needs_root: bool) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| which(t).is_none())
        .map(|t| format!("`{t}` not found"))
        .collect();
    if needs_root && !is_root() {
        missing.push("must run as root (dockerd)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join(", ");
    if std::env::var("BERTH_E2E").as_deref() == Ok("require") {
        panic!("{test}: BERTH_E2E=require but {reason}; run scripts/install-test-deps.sh as root");
    }
    eprintln!("SKIPPED {test}: {reason} (set BERTH_E2E=require to make this an error)");
    false
}

/// A single-threaded runtime for one blocking request.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Plain HTTP GET, returning status and body (None if unreachable).
pub fn http_get(url: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        let mut req = client.get(url);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.unwrap_or_default()))
    })
}

/// The decoded claims (middle part) of a JWT, for messages and checks.
pub fn jwt_claims(token: &str) -> Value {
    let Some(payload) = token.split('.').nth(1) else {
        return Value::Null;
    };
    data_encoding::BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}
