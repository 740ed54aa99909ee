//! Access policy: rules loaded from `policies/*.toml`, evaluated per requested scope.
//!
//! Evaluation is pure (no I/O, no clock) and order-independent: the granted actions
//! are the union of `allow` over every matching rule, minus the union of `deny` over
//! every matching rule, intersected with what was requested. Loading lives in `load`.

pub mod access;
pub mod default;
pub mod diff;
pub mod explain;
pub mod limit;
pub mod lint;
pub mod load;
pub mod pattern;
pub mod reload;
pub mod testfile;
pub mod who_can;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use pattern::{Bindings, Pattern};

use crate::scope::Scope;

pub use crate::types::{Identity, Kind};
pub use load::{load_dir, PolicyError};

/// The context of one token request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who is asking.
    pub identity: &'a Identity,
    /// The service (audience) the token is for.
    pub service: &'a str,
    /// The client address, when known.
    pub ip: Option<IpAddr>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Rule id, given or derived from file and position.
    pub id: String,
    /// Free text for operators.
    pub description: Option<String>,
    /// Account glob.
    pub account: Option<Pattern>,
    /// Group glob: holds when any group matches.
    pub group: Option<Pattern>,
    /// Principal kinds; any when `None`.
    pub kinds: Option<Vec<Kind>>,
    /// Service (audience) glob.
    pub service: Option<Pattern>,
    /// Client address ranges; the rule holds when the address is in any of them.
    /// A request without a known address never matches a rule with `ip`.
    pub ip: Option<Vec<ipnet::IpNet>>,
    /// Resource type, exact.
    pub resource_type: Option<String>,
    /// Resource name glob, may hold placeholders.
    pub name: Option<Pattern>,
    /// Actions allowed (`*` allows every action).
    pub allow: BTreeSet<String>,
    /// Actions denied (`*` denies every action); deny wins over allow.
    pub deny: BTreeSet<String>,
}

impl Rule {
    /// Whether the rule holds for this request and scope.
    pub fn matches(&self, req: &Request<'_>, scope: &Scope) -> bool {
        let id = req.identity;
        if let Some(t) = &self.resource_type {
            if *t != scope.resource_type {
                return false;
            }
        }
        if let Some(kinds) = &self.kinds {
            if !kinds.contains(&id.kind) {
                return false;
            }
        }
        if let Some(p) = &self.account {
            match id.account() {
                Some(a) if p.matches(a) => {}
                _ => return false,
            }
        }
        if let Some(p) = &self.group {
            if !id.groups.iter().any(|g| p.matches(g)) {
                return false;
            }
        }
        if let Some(p) = &self.service {
            if !p.matches(req.service) {
                return false;
            }
        }
        if let Some(nets) = &self.ip {
            match req.ip {
                Some(ip) if nets.iter().any(|n| n.contains(&ip)) => {}
                _ => return false,
            }
        }
        if let Some(p) = &self.name {
            let b = Bindings {
                account: id.account(),
                groups: &id.groups,
                group_filter: self.group.as_ref(),
            };
            if !p.matches_with(scope.name.as_str(), b) {
                return false;
            }
        }
        true
    }
}

/// How many leading path components the rule index looks at.
const INDEX_DEPTH: usize = 4;

/// A loaded, validated set of rules, indexed for evaluation.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// `by_component[p][c]`: rules whose name pattern can only match names whose
    /// component `p` is exactly `c`. A scope needs only the rules of its own
    /// components…
    by_component: Vec<HashMap<String, Vec<usize>>>,
    /// …plus the rules without a name pattern…
    unnamed: Vec<usize>,
    /// …plus those whose name pattern the component index cannot pin down, found
    /// with one pass of a regex set over the name instead of one match per rule.
    unindexed: Vec<usize>,
    unindexed_set: Option<regex::RegexSet>,
}

/// A position and literal path component every name the pattern matches has, if
/// the pattern pins one down within the first [`INDEX_DEPTH`] components.
fn index_key(p: &Pattern) -> Option<(usize, &str)> {
    for (pos, component) in p.as_str().split('/').take(INDEX_DEPTH).enumerate() {
        if component.contains("**") {
            // Positions after a `**` are not fixed.
            return None;
        }
        let literal = !component.is_empty() && !component.contains(['*', '?', '$']);
        if literal {
            return Some((pos, component));
        }
    }
    None
}

impl Policy {
    /// Builds a policy from rules (any order).
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut by_component: Vec<HashMap<String, Vec<usize>>> = vec![HashMap::new(); INDEX_DEPTH];
        let mut unnamed = Vec::new();
        let mut unindexed = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.name {
                None => unnamed.push(i),
                Some(name) => match index_key(name) {
                    Some((pos, c)) => by_component[pos].entry(c.to_owned()).or_default().push(i),
                    None => unindexed.push(i),
                },
            }
        }
        let sources = unindexed
            .iter()
            .filter_map(|&i| rules[i].name.as_ref().map(Pattern::regex_source));
        // Too large a set (it has a size limit) falls back to matching one by one.
        let unindexed_set = regex::RegexSetBuilder::new(sources)
            .size_limit(32 << 20)
            .build()
            .ok();
        if unindexed_set.is_none() && !unindexed.is_empty() {
            tracing::warn!(
                rules = unindexed.len(),
                "policy: name patterns too many to combine; matching them one by one"
            );
        }
        Policy {
            rules,
            by_component,
            unnamed,
            unindexed,
            unindexed_set,
        }
    }

    /// All rules, in file order (order does not affect decisions).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules that may match `scope`: a superset of those that do, each once.
    pub fn candidates<'a>(&'a self, scope: &'a Scope) -> impl Iterator<Item = &'a Rule> + 'a {
        let indexed = scope
            .name
            .as_str()
            .split('/')
            .zip(self.by_component.iter())
            .filter_map(|(c, map)| map.get(c))
            .flatten();
        let unindexed: Box<dyn Iterator<Item = &usize>> = match &self.unindexed_set {
            Some(set) => Box::new(
                set.matches(scope.name.as_str())
                    .into_iter()
                    .filter_map(|k| self.unindexed.get(k)),
            ),
            None => Box::new(self.unindexed.iter()),
        };
        self.unnamed
            .iter()
            .chain(unindexed)
            .chain(indexed)
            .map(move |&i| &self.rules[i])
    }
}

/// The outcome for one scope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Actions granted, a subset of those requested.
    pub granted: BTreeSet<String>,
    /// Requested actions that were not granted.
    pub refused: BTreeSet<String>,
    /// Ids of the rules that matched.
    pub matched: Vec<String>,
}

/// Whether an action set covers `action` (`*` covers all).
fn covers(set: &BTreeSet<String>, action: &str) -> bool {
    set.contains("*") || set.contains(action)
}

/// Evaluates `policy` for one requested scope.
pub fn evaluate(policy: &Policy, req: &Request<'_>, scope: &Scope) -> Decision {
    let mut allow = BTreeSet::new();
    let mut deny = BTreeSet::new();
    let mut matched = Vec::new();
    for rule in policy.candidates(scope) {
        if rule.matches(req, scope) {
            allow.extend(rule.allow.iter().cloned());
            deny.extend(rule.deny.iter().cloned());
            matched.push(rule.id.clone());
        }
    }
    let mut decision = Decision {
        matched,
        ..Decision::default()
    };
    for action in &scope.actions {
        // A requested `*` needs a wildcard allow and no deny at all: it stands for
        // every action, so any denied action takes it away.
        let granted = if action == "*" {
            allow.contains("*") && deny.is_empty()
        } else {
            covers(&allow, action) && !covers(&deny, action)
        };
        if granted {
            decision.granted.insert(action.clone());
        } else {
            decision.refused.insert(action.clone());
        }
    }
    decision
}

#[cfg(test)]
mod tests;
