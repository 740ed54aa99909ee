//! What a policy change does to real requests: the pure core of
//! `berth policy diff`.
//!
//! Requests (recorded in the audit log, or written as cases) are fed one at a
//! time to a [`Differ`], which decides each requested scope under the live and
//! the candidate policy and keeps, per identity, repository and action, how many
//! requests would gain or lose that action and the rules responsible on either
//! side. Requests are not kept: memory grows with the number of distinct
//! changes (capped at [`MAX_ITEMS`]; changes past it are counted, not itemised),
//! never with the number of requests, so the caller can stream millions of rows.
//!
//! Pure: no I/O, no clock.

pub mod cases;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use super::explain::explain;
use super::{evaluate, Identity, Kind, Policy, Request};
use crate::scope::Scope;

/// Most distinct (identity, service, resource, action, change) items kept.
pub const MAX_ITEMS: usize = 100_000;

/// One request to replay.
#[derive(Debug, Clone, Copy)]
pub struct Replay<'a> {
    /// Who asked, as policy saw them.
    pub identity: &'a Identity,
    /// The service (audience).
    pub service: &'a str,
    /// The client address, when known.
    pub ip: Option<IpAddr>,
    /// The scopes requested.
    pub scopes: &'a [Scope],
    /// How many requests this stands for (a folded row's repeat count).
    pub weight: u64,
}

/// Whether an action is gained or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Refused by the live policy, granted by the candidate.
    Gained,
    /// Granted by the live policy, refused by the candidate.
    Lost,
}

/// The rules that decided an action under one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Why {
    /// Matching rules whose `allow` covers the action.
    pub allowed_by: BTreeSet<String>,
    /// Matching rules whose `deny` takes it away.
    pub denied_by: BTreeSet<String>,
}

/// One action gained or lost on one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionChange {
    /// The action.
    pub action: String,
    /// Gained or lost.
    pub change: Change,
    /// Requests affected (rows weighted by their repeat count).
    pub requests: u64,
    /// Rows (or cases) affected.
    pub rows: u64,
    /// Why, under the live policy (over every affected request).
    pub live: Why,
    /// Why, under the candidate.
    pub candidate: Why,
}

/// The changes on one resource for one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceChanges {
    /// Service (audience).
    pub service: String,
    /// The resource, `type:name` (`repository:team-a/api`).
    pub resource: String,
    /// Per action, sorted.
    pub actions: Vec<ActionChange>,
}

/// The changes for one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityChanges {
    /// `anonymous`, or `KIND SUBJECT` (`user alice`).
    pub identity: String,
    /// Per resource, sorted.
    pub resources: Vec<ResourceChanges>,
}

/// Counts of what was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Rows (or cases).
    pub rows: u64,
    /// Requests they stand for.
    pub requests: u64,
}

impl Counts {
    fn add(&mut self, weight: u64) {
        self.rows += 1;
        self.requests = self.requests.saturating_add(weight);
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    /// Replayed under both policies.
    pub replayed: Counts,
    /// Rows without an identity snapshot (written before berth recorded one):
    /// never guessed.
    pub not_replayable: Counts,
    /// Rows whose recorded scopes do not parse (skipped).
    pub unreadable: Counts,
    /// With current groups: rows of local accounts no longer in the database
    /// (skipped: such an account cannot sign in at all).
    pub gone: Counts,
    /// Grants gained: (item, request) pairs, weighted.
    pub gained: u64,
    /// Grants lost, weighted.
    pub lost: u64,
    /// Items past [`MAX_ITEMS`], counted but not listed.
    pub unitemised: u64,
    /// Per identity, sorted.
    pub identities: Vec<IdentityChanges>,
}

impl DiffReport {
    /// Whether any request would lose access.
    pub fn has_loss(&self) -> bool {
        self.lost > 0
    }
}

type Key = (String, String, String, String, Change);

#[derive(Debug, Default)]
struct Agg {
    requests: u64,
    rows: u64,
    live: Why,
    candidate: Why,
}

/// Replays requests under two policies and gathers the differences.
#[derive(Debug)]
pub struct Differ<'p> {
    live: &'p Policy,
    candidate: &'p Policy,
    items: BTreeMap<Key, Agg>,
    report: DiffReport,
}

/// `anonymous`, or `KIND SUBJECT`.
pub fn identity_label(id: &Identity) -> String {
    match id.account() {
        None => "anonymous".to_owned(),
        Some(a) => format!("{} {a}", id.kind),
    }
}

/// The rules behind `action` in an explanation.
fn why(policy: &Policy, req: &Request<'_>, scope: &Scope, action: &str) -> Why {
    let e = explain(policy, req, scope);
    let mut out = Why::default();
    if let Some(a) = e.actions.into_iter().find(|a| a.action == action) {
        out.allowed_by.extend(a.allowed_by);
        out.denied_by.extend(a.denied_by);
    }
    out
}

impl<'p> Differ<'p> {
    /// A replay of `live` against `candidate`.
    pub fn new(live: &'p Policy, candidate: &'p Policy) -> Self {
        Differ {
            live,
            candidate,
            items: BTreeMap::new(),
            report: DiffReport::default(),
        }
    }

    /// Counts a row that cannot be replayed (no identity snapshot).
    pub fn not_replayable(&mut self, weight: u64) {
        self.report.not_replayable.add(weight.max(1));
    }

    /// Counts a row whose recorded scopes do not parse.
    pub fn unreadable(&mut self, weight: u64) {
        self.report.unreadable.add(weight.max(1));
    }

    /// Counts a row of a local account that no longer exists.
    pub fn gone(&mut self, weight: u64) {
        self.report.gone.add(weight.max(1));
    }

    /// Replays one request.
    pub fn add(&mut self, r: &Replay<'_>) {
        let weight = r.weight.max(1);
        self.report.replayed.add(weight);
        let req = Request {
            identity: r.identity,
            service: r.service,
            ip: r.ip,
        };
        for scope in r.scopes {
            let before = evaluate(self.live, &req, scope).granted;
            let after = evaluate(self.candidate, &req, scope).granted;
            if before == after {
                continue;
            }
            let lost = before.difference(&after).map(|a| (a, Change::Lost));
            let gained = after.difference(&before).map(|a| (a, Change::Gained));
            let changed: Vec<(&String, Change)> = lost.chain(gained).collect();
            for (action, change) in changed {
                match change {
                    Change::Lost => self.report.lost = self.report.lost.saturating_add(weight),
                    Change::Gained => {
                        self.report.gained = self.report.gained.saturating_add(weight)
                    }
                }
                let key: Key = (
                    identity_label(r.identity),
                    r.service.to_owned(),
                    format!("{}:{}", scope.resource_type, scope.name),
                    action.clone(),
                    change,
                );
                let known = self.items.contains_key(&key);
                if !known && self.items.len() >= MAX_ITEMS {
                    self.report.unitemised = self.report.unitemised.saturating_add(weight);
                    continue;
                }
                let live = why(self.live, &req, scope, action);
                let candidate = why(self.candidate, &req, scope, action);
                let agg = self.items.entry(key).or_default();
                agg.requests = agg.requests.saturating_add(weight);
                agg.rows += 1;
                agg.live.allowed_by.extend(live.allowed_by);
                agg.live.denied_by.extend(live.denied_by);
                agg.candidate.allowed_by.extend(candidate.allowed_by);
                agg.candidate.denied_by.extend(candidate.denied_by);
            }
        }
    }

    /// The report, grouped by identity, then service and resource.
    pub fn finish(self) -> DiffReport {
        let mut report = self.report;
        for ((identity, service, resource, action, change), agg) in self.items {
            if report
                .identities
                .last()
                .is_none_or(|i| i.identity != identity)
            {
                report.identities.push(IdentityChanges {
                    identity,
                    resources: Vec::new(),
                });
            }
            let Some(ident) = report.identities.last_mut() else {
                continue;
            };
            let same = ident
                .resources
                .last()
                .is_some_and(|r| r.service == service && r.resource == resource);
            if !same {
                ident.resources.push(ResourceChanges {
                    service,
                    resource,
                    actions: Vec::new(),
                });
            }
            if let Some(res) = ident.resources.last_mut() {
                res.actions.push(ActionChange {
                    action,
                    change,
                    requests: agg.requests,
                    rows: agg.rows,
                    live: agg.live,
                    candidate: agg.candidate,
                });
            }
        }
        report
    }
}

/// Parses a recorded kind (`user`, `robot`, …).
pub fn parse_kind(s: &str) -> Option<Kind> {
    match s {
        "user" => Some(Kind::User),
        "robot" => Some(Kind::Robot),
        "anonymous" => Some(Kind::Anonymous),
        "federated" => Some(Kind::Federated),
        "directory" => Some(Kind::Directory),
        _ => None,
    }
}

/// Parses a space-separated list of recorded scopes; `None` if any is invalid.
pub fn parse_scopes(s: &str) -> Option<Vec<Scope>> {
    s.split_whitespace().map(|x| x.parse().ok()).collect()
}

fn why_text(w: &Why) -> String {
    let mut parts = Vec::new();
    if !w.allowed_by.is_empty() {
        let ids: Vec<&str> = w.allowed_by.iter().map(String::as_str).collect();
        parts.push(format!("allowed by {}", ids.join(", ")));
    }
    if !w.denied_by.is_empty() {
        let ids: Vec<&str> = w.denied_by.iter().map(String::as_str).collect();
        parts.push(format!("denied by {}", ids.join(", ")));
    }
    if parts.is_empty() {
        parts.push("no rule allows it".into());
    }
    parts.join("; ")
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

impl std::fmt::Display for DiffReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for ident in &self.identities {
            writeln!(f, "{}", ident.identity)?;
            for res in &ident.resources {
                writeln!(f, "  {} (service {})", res.resource, res.service)?;
                for a in &res.actions {
                    let (sign, word) = match a.change {
                        Change::Lost => ('-', "LOST"),
                        Change::Gained => ('+', "gained"),
                    };
                    writeln!(
                        f,
                        "    {sign} {} {word} on {} ({}): live {}; candidate {}",
                        a.action,
                        plural(a.requests, "request"),
                        plural(a.rows, "row"),
                        why_text(&a.live),
                        why_text(&a.candidate),
                    )?;
                }
            }
        }
        if self.gone.rows > 0 {
            writeln!(
                f,
                "skipped {} of accounts no longer in the database",
                plural(self.gone.rows, "row")
            )?;
        }
        if self.unitemised > 0 {
            writeln!(
                f,
                "… and {} more changed grants not listed (over {MAX_ITEMS} items)",
                self.unitemised
            )?;
        }
        writeln!(
            f,
            "replayed {} ({}); not replayable (no identity snapshot): {} ({}); unreadable scopes: {}",
            plural(self.replayed.requests, "request"),
            plural(self.replayed.rows, "row"),
            plural(self.not_replayable.requests, "request"),
            plural(self.not_replayable.rows, "row"),
            plural(self.unreadable.rows, "row"),
        )?;
        write!(
            f,
            "grants lost: {}; gained: {}",
            plural(self.lost, "request"),
            plural(self.gained, "request")
        )
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
