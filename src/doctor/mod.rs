//! `berth doctor`: finds out why a registry refuses berth's tokens.
//!
//! It reads the registry's challenge (`GET /v2/`), checks that realm and service
//! point at this berth, obtains a token from berth's realm, presents it, and when
//! the registry refuses it, works out why from what the registry can be seen to
//! do: the `Date` headers (clock skew), and probe tokens that doctor signs itself
//! with berth's keys, varying one thing at a time (the key's header form, the
//! `aud` form, the algorithm). Probes with a wrong signature tell whether the
//! registry found the key at all: distribution 3 answers a bad signature from a
//! trusted key without `error="invalid_token"`, and an unknown key or a refused
//! algorithm with it. Doctor never changes anything.

pub mod challenge;
mod diagnose;
mod fetch;
mod probe;
mod steps;

use crate::config::Config;
use crate::token::keyset::KeySet;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Checked and fine.
    Ok,
    /// Works, but worth changing.
    Warn,
    /// Why the registry refuses (or would refuse) berth's tokens.
    Problem,
}

/// One result of a check, with a stable code for scripts and tests.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// Stable identifier, e.g. `issuer-mismatch`.
    pub code: &'static str,
    /// Plain-words explanation and what to change.
    pub text: String,
}

/// What doctor found, in the order it checked.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings in order.
    pub findings: Vec<Finding>,
}

impl Report {
    pub(crate) fn push(&mut self, level: Level, code: &'static str, text: impl Into<String>) {
        self.findings.push(Finding {
            level,
            code,
            text: text.into(),
        });
    }

    /// Whether any finding is a problem.
    pub fn has_problem(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Problem)
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the registry, e.g. `https://registry.example.com`.
    pub registry: String,
    /// Account to obtain a token for (anonymous when `None`).
    pub credentials: Option<(String, String)>,
}

/// Runs every check against the registry in `opts`, in order, stopping at the
/// first problem that makes the later checks meaningless.
pub async fn run(config: &Config, keys: &KeySet, opts: &Options) -> Report {
    let mut r = Report::default();
    let _stopped = steps::run(&mut r, config, keys, opts).await;
    r
}
