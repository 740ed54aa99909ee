//! What one identity may do under a policy, pattern by pattern: the "Your access"
//! view of the sign-in page and the building block of `berth policy who-can`.
//!
//! This module reads rules; it does not decide single requests (that is
//! [`super::evaluate`], which stays the only authority). Its answer is a summary
//! for people: for each name pattern a rule grants on, the actions and the rules
//! granting them, and the deny rules that may take some of them away. A pattern
//! is shown as written (`${account}/**`) and resolved for the identity
//! (`alice/**`). Whether a deny's pattern overlaps a grant's is decided
//! conservatively: a deny listed here may cancel the grant for some names under
//! the pattern; one marked `everywhere` cancels it for every name.
//!
//! Pure: no I/O, no clock. The order of entries is fixed (by resource type, then
//! pattern), so the page and tests see the same list every time.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::pattern::Pattern;
use super::{Identity, Policy, Rule};

/// One name pattern the identity holds actions on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessEntry {
    /// The resource type the rules name (`repository`, `registry`); `None` when
    /// a granting rule has no `type` (any type).
    pub resource_type: Option<String>,
    /// The name pattern as written in the rules; `**` when a rule has no `name`.
    pub pattern: String,
    /// The pattern with `${account}` and `${group}` replaced for this identity
    /// (one entry per group a `${group}` can stand for), sorted.
    pub names: Vec<String>,
    /// Actions the granting rules allow (before denies).
    pub actions: BTreeSet<String>,
    /// Actions left once the denies that hold `everywhere` are taken away (an
    /// allowed `*` that loses some actions is written out as the known actions
    /// left: `pull`, `push`, `delete`).
    pub effective: BTreeSet<String>,
    /// Ids of the rules granting on this pattern, in file order.
    pub granted_by: Vec<String>,
    /// Client address ranges the grant is limited to (empty: any address).
    pub only_from: Vec<String>,
    /// Deny rules that may cancel some of these actions.
    pub denies: Vec<AccessDeny>,
}

/// A deny rule that cancels some actions of an [`AccessEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessDeny {
    /// Rule id.
    pub rule: String,
    /// The deny's name pattern as written (`**` without `name`).
    pub pattern: String,
    /// The entry's actions it takes away (`*` stands for a requested `*`).
    pub actions: BTreeSet<String>,
    /// Whether it holds for every name of the entry and from every address;
    /// otherwise it cancels only for some names or addresses.
    pub everywhere: bool,
}

/// Whether `rule`'s `allow` grants `action` (a requested `*` needs `*`).
pub fn allows(rule: &Rule, action: &str) -> bool {
    rule.allow.contains("*") || (action != "*" && rule.allow.contains(action))
}

/// Whether `rule`'s `deny` takes `action` away (any deny takes a requested `*`).
pub fn denies(rule: &Rule, action: &str) -> bool {
    if action == "*" {
        !rule.deny.is_empty()
    } else {
        rule.deny.contains("*") || rule.deny.contains(action)
    }
}

/// Whether the rule's identity and service fields (`kind`, `account`, `group`,
/// `service`) hold for `id` asking for `service`. `ip`, `type` and `name` are
/// not looked at.
pub fn holds_for_identity(rule: &Rule, id: &Identity, service: &str) -> bool {
    if let Some(kinds) = &rule.kinds {
        if !kinds.contains(&id.kind) {
            return false;
        }
    }
    if let Some(p) = &rule.account {
        if !id.account().is_some_and(|a| p.matches(a)) {
            return false;
        }
    }
    if let Some(p) = &rule.group {
        if !id.groups.iter().any(|g| p.matches(g)) {
            return false;
        }
    }
    if let Some(p) = &rule.service {
        if !p.matches(service) {
            return false;
        }
    }
    true
}

/// The rule's name pattern with placeholders written out for `id`: one string
/// per value `${group}` can take. Empty when the pattern needs a value the
/// identity lacks (so the rule can match no name for it).
pub fn resolve_names(rule: &Rule, id: &Identity) -> Vec<String> {
    let Some(name) = &rule.name else {
        return vec!["**".to_owned()];
    };
    let source = name.as_str();
    let mut base = source.to_owned();
    if source.contains("${account}") {
        match id.account() {
            Some(a) => base = base.replace("${account}", a),
            None => return Vec::new(),
        }
    }
    if !source.contains("${group}") {
        return vec![base];
    }
    let mut out: BTreeSet<String> = BTreeSet::new();
    for g in &id.groups {
        let eligible = !g.is_empty() && rule.group.as_ref().is_none_or(|p| p.matches(g));
        if eligible {
            out.insert(base.replace("${group}", g));
        }
    }
    out.into_iter().collect()
}

/// Whether two globs (placeholders already written out) may match a common
/// name. Conservative: `false` only when a fixed part tells them apart (a
/// different literal component, or a different number of components without
/// `**`), so a `true` may be wrong but a `false` never is.
pub fn may_overlap(a: &str, b: &str) -> bool {
    let ac: Vec<&str> = a.split('/').collect();
    let bc: Vec<&str> = b.split('/').collect();
    for (x, y) in ac.iter().zip(bc.iter()) {
        if x.contains("**") || y.contains("**") {
            return true;
        }
        if !components_may_meet(x, y) {
            return false;
        }
    }
    // Every compared component may meet; the shorter pattern can only match as
    // many components as it has, unless what remains of the longer is `**`.
    ac.len() == bc.len() || {
        let (short, long) = if ac.len() < bc.len() {
            (&ac, &bc)
        } else {
            (&bc, &ac)
        };
        long.get(short.len()..)
            .is_some_and(|rest| rest.iter().all(|c| *c == "**"))
    }
}

/// Whether every name `pattern` matches is also matched by `granting` (both
/// globs, placeholders already written out). Conservative: `true` only when a
/// plain rule shows it, so a `false` may be wrong but a `true` never is:
/// `pattern` is a plain name that `granting` matches, the same text, or begins
/// with the literal head of a `granting` that ends in `**` (`team-a/**` covers
/// `team-a/app`, `team-a/*` and `team-a/x/**`).
pub fn covers(granting: &str, pattern: &str) -> bool {
    let wild = |c: char| c == '*' || c == '?' || c == '$';
    if granting == pattern {
        return true;
    }
    if !pattern.contains(wild) {
        return super::pattern::Pattern::compile(granting, false).is_ok_and(|g| g.matches(pattern));
    }
    granting
        .strip_suffix("**")
        .is_some_and(|head| !head.contains(wild) && pattern.starts_with(head))
}

/// Whether two single-component globs may match a common component: their
/// literal heads must agree as far as both go, and so must their literal tails.
fn components_may_meet(x: &str, y: &str) -> bool {
    let wild = |c: char| c == '*' || c == '?' || c == '$';
    let head = |s: &str| s.find(wild).map_or(s.to_owned(), |i| s[..i].to_owned());
    let tail = |s: &str| {
        s.rfind(wild)
            .map_or(s.to_owned(), |i| s[i + 1..].to_owned())
    };
    let (xw, yw) = (x.contains(wild), y.contains(wild));
    match (xw, yw) {
        (false, false) => x == y,
        _ => {
            let (hx, hy) = (head(x), head(y));
            let (tx, ty) = (tail(x), tail(y));
            let heads = hx.starts_with(&hy) || hy.starts_with(&hx);
            let tails = tx.ends_with(&ty) || ty.ends_with(&tx);
            heads && tails
        }
    }
}

/// Whether deny `d` holds for every name of an entry with `names` and type `ty`.
fn everywhere(d: &Rule, d_names: &[String], ty: &Option<String>, names: &[String]) -> bool {
    let type_ok = d.resource_type.is_none() || d.resource_type == *ty;
    let names_ok = d.name.as_ref().is_none_or(|n| n.as_str() == "**")
        || names.iter().all(|n| d_names.contains(n));
    type_ok && names_ok && d.ip.is_none()
}

/// The actions of `allowed` that deny rule `d` takes away. An allowed `*`
/// covers every action, so a deny of `delete` takes `delete` from it, and the
/// `*` itself (a requested `*` is refused once anything is denied).
fn cancelled(d: &Rule, allowed: &BTreeSet<String>) -> BTreeSet<String> {
    let wild = allowed.contains("*");
    if d.deny.contains("*") {
        let mut all = allowed.clone();
        if wild {
            all.extend(known_actions());
        }
        return all;
    }
    let mut out: BTreeSet<String> = d
        .deny
        .iter()
        .filter(|a| wild || allowed.contains(*a))
        .cloned()
        .collect();
    if wild && !d.deny.is_empty() {
        out.insert("*".to_owned());
    }
    out
}

/// The actions registries ask for, `*` aside.
fn known_actions() -> impl Iterator<Item = String> {
    super::load::KNOWN_ACTIONS
        .iter()
        .filter(|a| **a != "*")
        .map(|a| (*a).to_owned())
}

/// `actions` without those `cancelled` takes away; an allowed `*` that loses
/// some actions is written out as the known actions that remain.
fn remaining(actions: &BTreeSet<String>, cancelled: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = actions.clone();
    if out.contains("*") && cancelled.contains("*") {
        out.remove("*");
        out.extend(known_actions());
    }
    out.retain(|a| !cancelled.contains(a));
    out
}

/// What `id` may do for `service` under `policy`, one entry per resource type
/// and name pattern, in a fixed order.
pub fn access_for(policy: &Policy, id: &Identity, service: &str) -> Vec<AccessEntry> {
    type Key = (Option<String>, String, Vec<String>);
    let mut entries: BTreeMap<Key, AccessEntry> = BTreeMap::new();
    for rule in policy.rules() {
        if rule.allow.is_empty() || !holds_for_identity(rule, id, service) {
            continue;
        }
        let names = resolve_names(rule, id);
        if names.is_empty() {
            continue;
        }
        let pattern = rule.name.as_ref().map_or("**", Pattern::as_str).to_owned();
        let only_from: Vec<String> = rule
            .ip
            .as_ref()
            .map(|nets| nets.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let key = (
            rule.resource_type.clone(),
            pattern.clone(),
            only_from.clone(),
        );
        let entry = entries.entry(key).or_insert_with(|| AccessEntry {
            resource_type: rule.resource_type.clone(),
            pattern,
            names: Vec::new(),
            actions: BTreeSet::new(),
            effective: BTreeSet::new(),
            granted_by: Vec::new(),
            only_from,
            denies: Vec::new(),
        });
        entry.actions.extend(rule.allow.iter().cloned());
        entry.granted_by.push(rule.id.clone());
        for n in names {
            if !entry.names.contains(&n) {
                entry.names.push(n);
            }
        }
        entry.names.sort();
    }
    let mut out: Vec<AccessEntry> = entries.into_values().collect();
    for entry in &mut out {
        for d in policy.rules() {
            if d.deny.is_empty() || !holds_for_identity(d, id, service) {
                continue;
            }
            let types_meet = d.resource_type.is_none()
                || entry.resource_type.is_none()
                || d.resource_type == entry.resource_type;
            if !types_meet {
                continue;
            }
            let d_names = resolve_names(d, id);
            let meets = d_names
                .iter()
                .any(|dn| entry.names.iter().any(|en| may_overlap(dn, en)));
            if !meets {
                continue;
            }
            let actions = cancelled(d, &entry.actions);
            if actions.is_empty() {
                continue;
            }
            entry.denies.push(AccessDeny {
                rule: d.id.clone(),
                pattern: d.name.as_ref().map_or("**", Pattern::as_str).to_owned(),
                everywhere: everywhere(d, &d_names, &entry.resource_type, &entry.names),
                actions,
            });
        }
        let mut effective = entry.actions.clone();
        for d in entry.denies.iter().filter(|d| d.everywhere) {
            effective = remaining(&effective, &d.actions);
        }
        entry.effective = effective;
    }
    out
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
