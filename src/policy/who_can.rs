//! Who may do one action on one repository: the pure core of
//! `berth policy who-can`.
//!
//! Two kinds of answer come out. Accounts berth knows (local users and robots,
//! read from the database by the caller and passed in as a [`Directory`]) are
//! decided one by one, with their own groups, exactly as a token request would
//! be (address conditions aside, which are shown instead). Everyone else is
//! described by the rules themselves: a group, a federated group or role, an
//! account pattern, an identity kind, anonymous, or everyone, as written in the
//! rule (`team-*` stays a pattern). A placeholder in a rule's name is resolved
//! against the repository: `${account}/**` on `alice/app` is the account
//! `alice`, `${group}/**` on `team-a/api` the group `team-a`.
//!
//! Each answer lists the rules that grant it, the denies that always cancel it
//! (`denied_by`) and those that cancel it for some members only
//! (`may_be_denied_by`, e.g. a deny on one group, or from some addresses).
//!
//! Pure: no I/O. The repository must be one name, not a pattern: see
//! [`parse_target`].

use std::collections::BTreeSet;

use serde::Serialize;

use super::access::{allows, denies, holds_for_identity};
use super::pattern::Bindings;
use super::{Identity, Kind, Policy, Rule};
use crate::scope::Scope;

/// An account berth stores: a local user or a robot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name the account signs in with (a robot's with its prefix).
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// Disabled accounts cannot sign in; they are listed, marked.
    pub disabled: bool,
}

/// The accounts berth stores, for [`who_can`].
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Local users.
    pub users: Vec<Account>,
    /// Robots.
    pub robots: Vec<Account>,
    /// Group prefixes that mark an identity provider's roles (`role:`).
    pub role_prefixes: Vec<String>,
}

/// What an answer stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Who {
    /// A local user, by name.
    User,
    /// A robot, by login name.
    Robot,
    /// Members of a local group (users and robots), or a group pattern.
    Group,
    /// Federated (OIDC) identities holding a provider group matching the name.
    FederatedGroup,
    /// Federated identities holding a provider role matching the name.
    FederatedRole,
    /// Directory (LDAP) identities in a group matching the name.
    DirectoryGroup,
    /// Whoever signs in with an account name matching the name.
    Account,
    /// Every identity of one kind.
    Kind,
    /// Requests without credentials.
    Anonymous,
    /// Every request, anonymous included.
    Everyone,
}

/// One identity (or set of identities) that may do the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WhoEntry {
    /// What it stands for.
    pub who: Who,
    /// User or robot name, group, account or pattern as written, or kind.
    pub name: String,
    /// Identity kinds it covers (empty: any kind).
    pub kinds: Vec<Kind>,
    /// Further conditions (`in group team-*`, `from 10.0.0.0/8`, `disabled`).
    pub conditions: Vec<String>,
    /// Whether the action is granted (some rule allows it, no deny always cancels it).
    pub granted: bool,
    /// Ids of the rules that allow it.
    pub allowed_by: Vec<String>,
    /// Ids of deny rules that always cancel it.
    pub denied_by: Vec<String>,
    /// Ids of deny rules that cancel it for some members or addresses only.
    pub may_be_denied_by: Vec<String>,
}

/// Characters that make a repository argument a pattern.
const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}', '$'];

/// Builds the scope asked about: `repository:NAME:ACTION`. A name holding a glob
/// character is refused: who-can answers for one repository, and a pattern
/// would need every name it matches (use a name under it, e.g. `team-a/app`).
pub fn parse_target(repository: &str, action: &str) -> Result<Scope, String> {
    if let Some(c) = repository.chars().find(|c| GLOB_CHARS.contains(c)) {
        return Err(format!(
            "{repository:?} is a pattern (it holds {c:?}); who-can answers for one repository name, such as team-a/app"
        ));
    }
    let valid_action =
        action == "*" || (!action.is_empty() && action.bytes().all(|b| b.is_ascii_lowercase()));
    if !valid_action || action.len() > 32 {
        return Err(format!(
            "invalid action {action:?} (pull, push, delete or *)"
        ));
    }
    format!("repository:{repository}:{action}")
        .parse()
        .map_err(|e| format!("invalid repository name {repository:?}: {e}"))
}

/// Values a placeholder may take in `name`: every substring of one path
/// component (a placeholder never spans a `/`). Long components, and every
/// component when `runs_only` (a rule with both placeholders, whose pairs
/// would multiply), only offer their runs between separators (`.`, `_`, `-`),
/// to bound the work.
fn candidates(name: &str, runs_only: bool) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for comp in name.split('/') {
        if comp.len() <= 64 && !runs_only {
            for i in 0..comp.len() {
                for j in i + 1..=comp.len() {
                    if let Some(s) = comp.get(i..j) {
                        out.insert(s);
                    }
                }
            }
            continue;
        }
        let cuts: Vec<usize> = std::iter::once(0)
            .chain(
                comp.match_indices(['.', '_', '-'])
                    .flat_map(|(i, _)| [i, i + 1]),
            )
            .chain(std::iter::once(comp.len()))
            .collect();
        for &i in &cuts {
            for &j in &cuts {
                if let Some(s) = comp.get(i..j).filter(|s| !s.is_empty()) {
                    out.insert(s);
                }
            }
        }
    }
    out
}

/// The values a rule's `${account}` and `${group}` took.
type Binding = (Option<String>, Option<String>);

/// `(account, group)` values under which the rule's name matches `scope`
/// (each `None` when the pattern has no such placeholder). Empty when it
/// cannot match; one `(None, None)` for a rule without placeholders.
fn bindings(rule: &Rule, scope: &Scope) -> Vec<Binding> {
    let name = scope.name.as_str();
    let Some(p) = &rule.name else {
        return vec![(None, None)];
    };
    if !p.has_placeholders() {
        return if p.matches(name) {
            vec![(None, None)]
        } else {
            Vec::new()
        };
    }
    let src = p.as_str();
    let both = src.contains("${account}") && src.contains("${group}");
    let cands = candidates(name, both);
    let accounts: Vec<Option<&str>> = if src.contains("${account}") {
        cands
            .iter()
            .copied()
            .filter(|a| rule.account.as_ref().is_none_or(|ap| ap.matches(a)))
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let groups: Vec<Option<&str>> = if src.contains("${group}") {
        cands
            .iter()
            .copied()
            .filter(|g| rule.group.as_ref().is_none_or(|gp| gp.matches(g)))
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let mut out = Vec::new();
    for a in &accounts {
        for g in &groups {
            let one: Vec<String> = g.iter().map(|g| (*g).to_owned()).collect();
            let b = Bindings {
                account: *a,
                groups: &one,
                group_filter: rule.group.as_ref(),
            };
            if p.matches_with(name, b) {
                out.push((a.map(str::to_owned), g.map(str::to_owned)));
            }
        }
    }
    out
}

/// Whether the rule's type and service fields hold for `scope` and `service`.
fn holds_for_target(rule: &Rule, scope: &Scope, service: &str) -> bool {
    rule.resource_type
        .as_ref()
        .is_none_or(|t| *t == scope.resource_type)
        && rule.service.as_ref().is_none_or(|p| p.matches(service))
}

/// Whether `rule` matches `id` asking for `scope`, its `ip` field aside.
fn matches_but_ip(rule: &Rule, id: &Identity, scope: &Scope, service: &str) -> bool {
    holds_for_target(rule, scope, service)
        && holds_for_identity(rule, id, service)
        && rule.name.as_ref().is_none_or(|p| {
            p.matches_with(
                scope.name.as_str(),
                Bindings {
                    account: id.account(),
                    groups: &id.groups,
                    group_filter: rule.group.as_ref(),
                },
            )
        })
}

/// `from A, B` for a rule with address ranges.
fn from_condition(rule: &Rule) -> Option<String> {
    rule.ip.as_ref().map(|nets| {
        let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
        format!("from {}", list.join(", "))
    })
}

/// The exact answer for one stored account.
fn decide_account(
    policy: &Policy,
    who: Who,
    account: &Account,
    kind: Kind,
    scope: &Scope,
    service: &str,
) -> Option<WhoEntry> {
    let id = Identity {
        subject: account.name.clone(),
        kind,
        groups: account.groups.clone(),
        via: "who-can",
    };
    let action = scope.actions.first()?;
    let matching: Vec<&Rule> = policy
        .candidates(scope)
        .filter(|r| matches_but_ip(r, &id, scope, service))
        .collect();
    let allowing: Vec<&&Rule> = matching.iter().filter(|r| allows(r, action)).collect();
    if allowing.is_empty() {
        return None;
    }
    let mut conditions = Vec::new();
    if allowing.iter().all(|r| r.ip.is_some()) {
        let ranges: BTreeSet<String> = allowing.iter().filter_map(|r| from_condition(r)).collect();
        conditions.extend(ranges);
    }
    if account.disabled {
        conditions.push("disabled".to_owned());
    }
    let denying = matching.iter().filter(|r| denies(r, action));
    let (always, some): (Vec<&&Rule>, Vec<&&Rule>) = denying.partition(|r| r.ip.is_none());
    Some(WhoEntry {
        who,
        name: account.name.clone(),
        kinds: vec![kind],
        conditions,
        granted: always.is_empty(),
        allowed_by: sorted_ids(allowing.iter().map(|r| r.id.as_str())),
        denied_by: sorted_ids(always.iter().map(|r| r.id.as_str())),
        may_be_denied_by: sorted_ids(some.iter().map(|r| r.id.as_str())),
    })
}

fn sorted_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = ids.collect();
    set.into_iter().map(str::to_owned).collect()
}

/// The principal a rule describes, once its placeholders are bound.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Principal {
    who: Who,
    name: String,
    kinds: Vec<Kind>,
    conditions: Vec<String>,
    /// The account name or pattern it stands for (for matching denies).
    account: Option<String>,
    /// Whether `account` is one name rather than a pattern.
    account_literal: bool,
    /// The group name or pattern it stands for.
    group: Option<String>,
    /// Whether `group` is one name rather than a pattern.
    group_literal: bool,
}

fn kind_rank(k: &Kind) -> u8 {
    match k {
        Kind::User => 0,
        Kind::Robot => 1,
        Kind::Federated => 2,
        Kind::Directory => 3,
        Kind::Anonymous => 4,
    }
}

mod describe;
use describe::{deny_relation, principals, Relation};

/// Everyone `policy` lets do `scope`'s action for `service`: stored accounts by
/// name, then the rules' groups, federated groups and roles, account patterns,
/// kinds, anonymous and everyone. Sorted by what they stand for, then name.
pub fn who_can(policy: &Policy, scope: &Scope, service: &str, dir: &Directory) -> Vec<WhoEntry> {
    let mut out = Vec::new();
    for (who, list, kind) in [
        (Who::User, &dir.users, Kind::User),
        (Who::Robot, &dir.robots, Kind::Robot),
    ] {
        let mut found: Vec<WhoEntry> = list
            .iter()
            .filter_map(|a| decide_account(policy, who, a, kind, scope, service))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(found);
    }
    let Some(action) = scope.actions.first() else {
        return out;
    };
    let mut described: Vec<(Principal, BTreeSet<String>)> = Vec::new();
    for rule in policy.candidates(scope) {
        if !allows(rule, action) || !holds_for_target(rule, scope, service) {
            continue;
        }
        for (account, group) in bindings(rule, scope) {
            for p in principals(rule, account, group, &dir.role_prefixes) {
                match described.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, ids)) => {
                        ids.insert(rule.id.clone());
                    }
                    None => described.push((p, BTreeSet::from([rule.id.clone()]))),
                }
            }
        }
    }
    described.sort_by_cached_key(|(p, _)| {
        let kinds: Vec<u8> = p.kinds.iter().map(kind_rank).collect();
        (p.who, p.name.clone(), kinds, p.conditions.clone())
    });
    let deny_rules: Vec<(&Rule, Vec<Binding>)> = policy
        .candidates(scope)
        .filter(|d| denies(d, action) && holds_for_target(d, scope, service))
        .map(|d| (d, bindings(d, scope)))
        .filter(|(_, b)| !b.is_empty())
        .collect();
    for (p, allowed) in described {
        let mut always = BTreeSet::new();
        let mut some = BTreeSet::new();
        for (d, binds) in &deny_rules {
            match deny_relation(d, binds, &p) {
                Relation::Always => always.insert(d.id.clone()),
                Relation::Some => some.insert(d.id.clone()),
                Relation::Never => false,
            };
        }
        out.push(WhoEntry {
            who: p.who,
            name: p.name,
            kinds: p.kinds,
            conditions: p.conditions,
            granted: always.is_empty(),
            allowed_by: allowed.into_iter().collect(),
            denied_by: always.into_iter().collect(),
            may_be_denied_by: some.into_iter().collect(),
        });
    }
    out
}

#[cfg(test)]
#[path = "who_can_tests.rs"]
mod tests;
