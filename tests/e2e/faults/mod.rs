//! Faults while `berth serve` runs: its PostgreSQL stopped and restarted under
//! load ([`postgres_outage`], on a [`private_pg`] cluster), its policy directory
//! gone or swapped ([`policy_dir`]), its SQLite disk full ([`disk_full`]), its
//! signing key file deleted ([`signing_key`]). berth must answer clearly (503,
//! never 500 or a hang), keep serving what does not need the broken part,
//! recover by itself, and lose no audit record of a request it answered.
//!
//! This file holds what the faults share: skipping, the decisions berth
//! logged and the audit rows it stored, and policies with one rule added.

mod disk_full;
mod policy_dir;
mod postgres_outage;
mod private_pg;
mod signing_key;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::components::{repo_policies, Berth};

pub(crate) fn require() -> bool {
    std::env::var("BERTH_E2E").as_deref() == Ok("require")
}

/// Skips (or, with `BERTH_E2E=require`, fails) for a reason other than a tool.
pub(crate) fn skip(test: &str, reason: &str) {
    if require() {
        panic!("{test}: BERTH_E2E=require but {reason}");
    }
    eprintln!("SKIPPED {test}: {reason} (set BERTH_E2E=require to make this an error)");
}

/// Decisions berth logged (it runs with `BERTH_LOG_FORMAT=json`).
pub(crate) fn decisions(berth: &Berth) -> Vec<Value> {
    berth
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|d| d["target"] == "berth::decision")
        .collect()
}

/// Every audit row, through `berth audit --json` on berth's database.
pub(crate) fn audit_rows(berth: &Berth) -> Vec<Value> {
    let out = berth.cli_ok(&["audit", "--json", "--limit", "100000"], None);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (at most `limit`) until every logged decision has its audit row;
/// returns the request ids still missing.
pub(crate) fn missing_rows(berth: &Berth, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let rows = audit_rows(berth);
        let missing: Vec<String> = decisions(berth)
            .iter()
            .map(|d| d["request_id"].as_str().unwrap_or("").to_owned())
            .filter(|id| !rows.iter().any(|r| r["request_id"] == id.as_str()))
            .collect();
        if missing.is_empty() || start.elapsed() > limit {
            return missing;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Anyone may pull public/**, next to the shipped policy.
pub(crate) const PUBLIC: &str = r#"
[[rule]]
id = "public-read"
type = "repository"
name = "public/**"
allow = ["pull"]
"#;

pub(crate) fn policies_with(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_policies().join("default.toml"),
        dir.path().join("default.toml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("extra.toml"), extra).unwrap();
    dir
}
