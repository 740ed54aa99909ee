//! berth, a registry that trusts it and (optionally) dockerd, started
//! together with the users alice and bob, and the checks a scenario makes on
//! a client's outcome: it worked, or it was refused for authorization.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{repo_policies, Berth, Dockerd, Registry, ALICE_PASSWORD, BOB_PASSWORD};
use crate::common::proc::Out;
use crate::registries::lowercase_tempdir;

/// berth + registry (+ dockerd), torn down in reverse order on drop.
pub struct Stack {
    // Field order is drop order: clients' daemon first, berth last.
    pub dockerd: Option<Dockerd>,
    pub registry: Registry,
    pub berth: Berth,
    /// Scratch space for client config, auth files, images.
    pub work: tempfile::TempDir,
}

/// Words that show a client failed because it was refused, not because
/// something was unreachable or broken.
pub const DENIAL_MARKERS: &[&str] = &[
    "unauthorized",
    "denied",
    "authentication required",
    "invalid username/password",
    "invalid_grant",
    "http 401",
    "http 403",
];

impl Stack {
    /// Starts berth with users alice, bob (and the built-in admin) and a
    /// registry that trusts it; dockerd too when `with_docker`.
    pub fn start(with_docker: bool) -> Stack {
        Stack::start_with_policies(with_docker, &repo_policies())
    }

    /// Like [`Stack::start`], with berth reading its policy from `policies`.
    pub fn start_with_policies(with_docker: bool, policies: &Path) -> Stack {
        let started = Instant::now();
        let berth = Berth::start_with_policies(policies);
        berth.add_user("alice", ALICE_PASSWORD, &[]);
        berth.add_user("bob", BOB_PASSWORD, &[]);
        Stack::with_berth(with_docker, berth, started)
    }

    /// A registry (and dockerd when `with_docker`) in front of a berth the
    /// caller started and set up.
    pub fn with_berth(with_docker: bool, berth: Berth, started: Instant) -> Stack {
        let registry = Registry::start(&berth);
        let dockerd = with_docker.then(Dockerd::start);
        let work = lowercase_tempdir("berth-e2e-work-");
        eprintln!(
            "stack up in {:?}: berth {} registry {}{}",
            started.elapsed(),
            berth.url,
            registry.host,
            dockerd
                .as_ref()
                .map(|d| format!(" dockerd {}", d.host))
                .unwrap_or_default()
        );
        Stack {
            dockerd,
            registry,
            berth,
            work,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `127.0.0.1:PORT/<repo>`
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.host)
    }

    /// Logs of every component, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        s.push_str(&self.berth.log_tail(40));
        s.push_str(&self.registry.log_tail(30));
        if let Some(d) = &self.dockerd {
            s.push_str(&d.log_tail(20));
        }
        s
    }

    #[track_caller]
    pub fn expect_ok(&self, out: &Out, what: &str) {
        if !out.success() {
            panic!(
                "FAILED: {what} should succeed but did not\n{out}\n{}",
                self.diagnostics()
            );
        }
        eprintln!("ok: {what} ({:?})", out.elapsed);
    }

    /// The command must fail, and because access was refused.
    #[track_caller]
    pub fn expect_denied(&self, out: &Out, what: &str) {
        if out.success() {
            panic!(
                "FAILED: {what} should have been refused but succeeded\n{out}\n{}",
                self.diagnostics()
            );
        }
        if out.timed_out {
            panic!(
                "FAILED: {what} should have been refused but hung\n{out}\n{}",
                self.diagnostics()
            );
        }
        let text = out.text().to_lowercase();
        if !DENIAL_MARKERS.iter().any(|m| text.contains(m)) {
            panic!(
                "FAILED: {what} failed, but not with an authorization error \
                 (expected one of {DENIAL_MARKERS:?})\n{out}\n{}",
                self.diagnostics()
            );
        }
        eprintln!(
            "ok: {what} refused ({:?}): {}",
            out.elapsed,
            out.stderr.trim().replace('\n', " / ")
        );
    }
}
