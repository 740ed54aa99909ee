//! How a rule's identity fields read as principals (who a grant is for), and
//! whether a deny rule cancels a grant for all, some or none of a principal.

use super::{from_condition, kind_rank, Principal, Who};
use crate::policy::access::may_overlap;
use crate::policy::{Kind, Rule};

/// The kinds a rule names, in a fixed order; `None` when it names none.
fn rule_kinds(rule: &Rule) -> Option<Vec<Kind>> {
    rule.kinds.as_ref().map(|k| {
        let mut k = k.clone();
        k.sort_by_key(kind_rank);
        k.dedup();
        k
    })
}

/// The principals a granting rule describes, with `account` and `group` the
/// values its name's placeholders took (if any).
pub(super) fn principals(
    rule: &Rule,
    account: Option<String>,
    group: Option<String>,
    role_prefixes: &[String],
) -> Vec<Principal> {
    let kinds = rule_kinds(rule);
    let mut conditions: Vec<String> = from_condition(rule).into_iter().collect();
    // A placeholder's value is literal; a field's pattern is literal when it has no wildcard.
    let account_lit = account.is_some() || rule.account.as_ref().is_some_and(|p| p.is_literal());
    let account_name = account.or_else(|| rule.account.as_ref().map(|p| p.as_str().to_owned()));
    let group_lit = group.is_some() || rule.group.as_ref().is_some_and(|p| p.is_literal());
    let group_name = group.or_else(|| rule.group.as_ref().map(|p| p.as_str().to_owned()));
    let named = account_name.is_some() || group_name.is_some();
    // Anonymous requests have neither account nor groups.
    let kinds = match kinds {
        Some(k) if named => {
            let k: Vec<Kind> = k.into_iter().filter(|k| *k != Kind::Anonymous).collect();
            if k.is_empty() {
                return Vec::new();
            }
            Some(k)
        }
        other => other,
    };
    let base = |who: Who, name: String, kinds: Vec<Kind>, conditions: Vec<String>| Principal {
        who,
        name,
        kinds,
        conditions,
        account: account_name.clone(),
        account_literal: account_lit,
        group: group_name.clone(),
        group_literal: group_lit,
    };
    if let Some(name) = account_name.clone() {
        if let Some(g) = &group_name {
            conditions.push(format!("in group {g}"));
        }
        return vec![base(
            Who::Account,
            name,
            kinds.unwrap_or_default(),
            conditions,
        )];
    }
    if let Some(g) = group_name.clone() {
        let all = [Kind::User, Kind::Robot, Kind::Federated, Kind::Directory];
        let allowed: Vec<Kind> = all
            .into_iter()
            .filter(|k| kinds.as_ref().is_none_or(|ks| ks.contains(k)))
            .collect();
        let pick = |set: &[Kind]| -> Vec<Kind> {
            allowed
                .iter()
                .copied()
                .filter(|k| set.contains(k))
                .collect()
        };
        let mut out = Vec::new();
        let local = pick(&[Kind::User, Kind::Robot]);
        if !local.is_empty() {
            out.push(base(Who::Group, g.clone(), local, conditions.clone()));
        }
        let federated = pick(&[Kind::Federated]);
        if !federated.is_empty() {
            let role = role_prefixes
                .iter()
                .any(|p| !p.is_empty() && g.starts_with(p.as_str()));
            let who = if role {
                Who::FederatedRole
            } else {
                Who::FederatedGroup
            };
            out.push(base(who, g.clone(), federated, conditions.clone()));
        }
        let directory = pick(&[Kind::Directory]);
        if !directory.is_empty() {
            out.push(base(Who::DirectoryGroup, g, directory, conditions));
        }
        return out;
    }
    match kinds {
        Some(ks) => ks
            .into_iter()
            .map(|k| {
                if k == Kind::Anonymous {
                    base(
                        Who::Anonymous,
                        "anonymous".into(),
                        vec![k],
                        conditions.clone(),
                    )
                } else {
                    base(Who::Kind, k.to_string(), vec![k], conditions.clone())
                }
            })
            .collect(),
        None => vec![base(
            Who::Everyone,
            "everyone".into(),
            Vec::new(),
            conditions,
        )],
    }
}

/// How a deny rule bears on a principal's grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relation {
    /// It cancels the grant for every member.
    Always,
    /// It cancels it for some members, names or addresses.
    Some,
    /// It cannot apply to any member.
    Never,
}

/// Combines two findings: `Never` beats `Some`, which beats `Always`.
fn and(a: Relation, b: Relation) -> Relation {
    use Relation::*;
    match (a, b) {
        (Never, _) | (_, Never) => Never,
        (Some, _) | (_, Some) => Some,
        _ => Always,
    }
}

/// Whether deny `d` (whose name matched the repository under `binds`, the
/// values of its placeholders) cancels the grant of `p`.
pub(super) fn deny_relation(d: &Rule, binds: &[super::Binding], p: &Principal) -> Relation {
    let anonymous = p.who == Who::Anonymous;
    let mut r = Relation::Always;
    // Kinds: every kind of the principal must be denied for `Always`.
    if let Some(dk) = &d.kinds {
        r = and(
            r,
            if p.kinds.is_empty() {
                Relation::Some
            } else if p.kinds.iter().all(|k| dk.contains(k)) {
                Relation::Always
            } else if p.kinds.iter().any(|k| dk.contains(k)) {
                Relation::Some
            } else {
                Relation::Never
            },
        );
    }
    if let Some(ap) = &d.account {
        r = and(
            r,
            match (&p.account, anonymous) {
                (_, true) => Relation::Never,
                (Some(a), _) if ap.as_str() == a => Relation::Always,
                (Some(a), _) if p.account_literal => {
                    if ap.matches(a) {
                        Relation::Always
                    } else {
                        Relation::Never
                    }
                }
                (Some(a), _) if !may_overlap(ap.as_str(), a) => Relation::Never,
                _ => Relation::Some,
            },
        );
    }
    if let Some(gp) = &d.group {
        r = and(
            r,
            match (&p.group, anonymous) {
                (_, true) => Relation::Never,
                (Some(g), _) if gp.as_str() == g || (p.group_literal && gp.matches(g)) => {
                    Relation::Always
                }
                // A member may hold other groups too.
                _ => Relation::Some,
            },
        );
    }
    if d.ip.is_some() {
        r = and(r, Relation::Some);
    }
    let has_placeholders = d.name.as_ref().is_some_and(|n| n.has_placeholders());
    if has_placeholders {
        if anonymous {
            return Relation::Never;
        }
        let same = |bound: &Option<String>, mine: &Option<String>, literal: bool| {
            bound
                .as_ref()
                .is_none_or(|b| literal && mine.as_ref() == Some(b))
        };
        let always = binds.iter().any(|(a, g)| {
            same(a, &p.account, p.account_literal) && same(g, &p.group, p.group_literal)
        });
        let possible = binds.iter().any(|(a, _)| match (a, &p.account) {
            (Some(a), Some(mine)) if p.account_literal => a == mine,
            _ => true,
        });
        r = and(
            r,
            if always {
                Relation::Always
            } else if possible {
                Relation::Some
            } else {
                Relation::Never
            },
        );
    }
    r
}
