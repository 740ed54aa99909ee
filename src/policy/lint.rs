//! Static checks of a policy: rules that can never match, allows that a deny always
//! cancels, and group rules that do not say which kinds of identity they are for.
//! Findings are advice; loading does not depend on them.

use super::pattern::Pattern;
use super::{Kind, Policy, Rule};

fn never_matches(rule: &Rule) -> Option<String> {
    let kinds = rule.kinds.as_deref();
    if kinds == Some(&[]) {
        return Some("`kind` is an empty list".into());
    }
    let only_anonymous = kinds.is_some_and(|k| k.iter().all(|k| *k == Kind::Anonymous));
    if only_anonymous {
        if rule.account.is_some() {
            return Some(
                "kind = \"anonymous\" with an `account`: anonymous requests have no account".into(),
            );
        }
        if rule.group.is_some() {
            return Some(
                "kind = \"anonymous\" with a `group`: anonymous requests have no groups".into(),
            );
        }
        if rule.name.as_ref().is_some_and(Pattern::has_placeholders) {
            return Some(
                "kind = \"anonymous\" with a placeholder in `name`: nothing to bind it to".into(),
            );
        }
    }
    if rule.resource_type.as_deref() == Some("registry") {
        if let Some(name) = &rule.name {
            if name.has_placeholders() {
                return Some("type = \"registry\" with a placeholder in `name`: registry scopes are named `catalog`".into());
            }
        }
    }
    None
}

fn same_or_wider(wide: &Option<Pattern>, narrow: &Option<Pattern>) -> bool {
    match (wide, narrow) {
        (None, _) => true,
        (Some(w), _) if w.as_str() == "**" => true,
        (Some(w), Some(n)) => w.as_str() == n.as_str(),
        (Some(_), None) => false,
    }
}

/// Whether `d` matches every request that `r` matches (conservatively).
fn always_with(d: &Rule, r: &Rule) -> bool {
    same_or_wider(&d.account, &r.account)
        && same_or_wider(&d.group, &r.group)
        && same_or_wider(&d.service, &r.service)
        && same_or_wider(&d.name, &r.name)
        && (d.resource_type.is_none() || d.resource_type == r.resource_type)
        && (d.kinds.is_none() || d.kinds == r.kinds)
        && (d.ip.is_none() || d.ip == r.ip)
}

/// Why a rule that grants by group lends that grant to every kind of identity.
///
/// Group names come from two places: berth's own users and robots, and the
/// claims of an identity provider. A rule keyed on a group but on no `kind`
/// grants to a federated user whose provider sends a group of that name (with
/// `groups_prefix = ""` any provider can), so a realm group `/admins` would
/// borrow what the local group `admins` was given. The rule must say whose
/// groups it means.
fn group_without_kind(rule: &Rule) -> Option<&'static str> {
    if rule.kinds.is_some() || rule.allow.is_empty() {
        return None;
    }
    if rule.group.is_some() {
        return Some("`group`");
    }
    if rule
        .name
        .as_ref()
        .is_some_and(|n| n.as_str().contains("${group}"))
    {
        return Some("`${group}` in `name`");
    }
    None
}

/// Findings, one line each, naming the rule id.
pub fn lint(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for rule in policy.rules() {
        if let Some(why) = never_matches(rule) {
            out.push(format!("rule {}: can never match: {why}", rule.id));
            continue;
        }
        if rule.allow.is_empty() {
            continue;
        }
        if let Some(by) = group_without_kind(rule) {
            out.push(format!(
                "rule {}: grants by {by} without `kind`, so federated users whose identity provider sends a group of that name get it too; say whose groups it means: kind = [\"user\", \"robot\"] for local groups, kind = \"federated\" for a provider's",
                rule.id
            ));
        }
        for d in policy.rules() {
            if d.deny.is_empty() || !always_with(d, rule) {
                continue;
            }
            let cancelled =
                d.deny.contains("*") || rule.allow.iter().all(|a| a != "*" && d.deny.contains(a));
            if cancelled {
                out.push(format!(
                    "rule {}: every action it allows is always denied by rule {}",
                    rule.id, d.id
                ));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::policy::load::parse_file;

    #[test]
    fn finds_dead_rules() {
        let p = parse_file(
            "l.toml",
            r#"
[[rule]]
id = "anon-account"
kind = "anonymous"
account = "bob"
allow = ["pull"]
[[rule]]
id = "releases"
name = "releases/**"
allow = ["delete"]
[[rule]]
id = "no-delete"
deny = ["delete"]
[[rule]]
id = "fine"
name = "x/**"
allow = ["pull", "delete"]
"#,
        )
        .unwrap()
        .policy;
        let findings = lint(&p);
        assert!(
            findings
                .iter()
                .any(|f| f.contains("anon-account") && f.contains("never match")),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.contains("rule releases") && f.contains("no-delete")),
            "{findings:?}"
        );
        assert!(
            !findings.iter().any(|f| f.contains("rule fine")),
            "{findings:?}"
        );
    }

    #[test]
    fn group_rules_must_say_which_kinds_they_are_for() {
        let p = parse_file(
            "g.toml",
            r#"
[[rule]]
id = "admins-any-kind"
group = "admins"
allow = ["*"]
[[rule]]
id = "teams-any-kind"
name = "${group}/**"
allow = ["pull"]
[[rule]]
id = "admins-local"
kind = ["user", "robot"]
group = "admins"
allow = ["*"]
[[rule]]
id = "teams-shared-on-purpose"
kind = ["user", "federated"]
group = "team-*"
name = "${group}/**"
allow = ["push"]
[[rule]]
id = "deny-only"
group = "interns"
deny = ["delete"]
"#,
        )
        .unwrap()
        .policy;
        let findings = lint(&p);
        for id in ["admins-any-kind", "teams-any-kind"] {
            assert!(
                findings
                    .iter()
                    .any(|f| f.contains(&format!("rule {id}:")) && f.contains("without `kind`")),
                "{id}: {findings:?}"
            );
        }
        for id in ["admins-local", "teams-shared-on-purpose", "deny-only"] {
            assert!(
                !findings.iter().any(|f| f.contains(&format!("rule {id}:"))),
                "{id}: {findings:?}"
            );
        }
    }
}
