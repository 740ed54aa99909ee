//! The "Your access" section of the signed-in page: what the signed-in
//! identity may do on each registry, as `policy::access` summarises the live
//! policy for it (name patterns, actions, the rules granting them, and the
//! denies that may cancel some). A summary for people; single requests are
//! still decided by `policy::evaluate`, at the token endpoint.
//!
//! It also decides which repository limits a new token may carry: each name or
//! pattern must lie inside a granting entry of some registry (an entry for
//! repositories or any type, with actions left after denies), as
//! [`access::covers`] decides it conservatively.

use super::pages::esc;
use crate::policy::access::{self, AccessEntry};
use crate::policy::limit::Limit;

/// One registry's access.
pub struct ServiceAccess {
    /// The `[[service]]` name.
    pub service: String,
    /// What the identity may do there.
    pub entries: Vec<AccessEntry>,
}

fn codes<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(|s| format!("<code>{}</code>", esc(s)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn entry(e: &AccessEntry) -> String {
    let what = match e.resource_type.as_deref() {
        Some("repository") => "Repositories",
        Some(t) => return entry_of(e, &format!("Resources of type <code>{}</code>", esc(t))),
        None => "Any resource",
    };
    entry_of(e, what)
}

fn entry_of(e: &AccessEntry, what: &str) -> String {
    let actions = if e.effective.is_empty() {
        "nothing (denied everywhere)".to_owned()
    } else {
        codes(&e.effective)
    };
    let mut out = format!(
        r#"<li class="access-entry">{what} {names}: {actions}<br><span class="rule">granted by {rules}"#,
        names = codes(&e.names),
        rules = codes(&e.granted_by),
    );
    if !e.only_from.is_empty() {
        out.push_str(&format!("; only from {}", codes(&e.only_from)));
    }
    for d in &e.denies {
        out.push_str(&format!(
            "; {scope}rule <code>{rule}</code> denies {actions} on <code>{pattern}</code>",
            scope = if d.everywhere {
                ""
            } else {
                "where it applies, "
            },
            rule = esc(&d.rule),
            actions = codes(&d.actions),
            pattern = esc(&d.pattern),
        ));
    }
    out.push_str("</span></li>\n");
    out
}

/// The first limit outside every granting entry of `access`, if any.
pub fn outside<'a>(limits: &'a [Limit], access: &[ServiceAccess]) -> Option<&'a Limit> {
    limits.iter().find(|l| {
        !access.iter().flat_map(|a| &a.entries).any(|e| {
            let type_ok = e
                .resource_type
                .as_deref()
                .is_none_or(|t| t == l.resource_type());
            type_ok
                && !e.effective.is_empty()
                && e.names.iter().any(|n| access::covers(n, l.name()))
        })
    })
}

/// The section's HTML.
pub fn render(access: &[ServiceAccess]) -> String {
    let mut out = String::from("<h2>Your access</h2>\n<div id=\"access\">\n");
    let several = access.len() > 1;
    for a in access {
        if several {
            out.push_str(&format!(
                "<h3>Registry <code>{}</code></h3>\n",
                esc(&a.service)
            ));
        }
        if a.entries.is_empty() {
            out.push_str(
                "<p class=\"no-access\">No access: the policy grants you nothing here.</p>\n",
            );
            continue;
        }
        out.push_str("<ul class=\"access\">\n");
        for e in &a.entries {
            out.push_str(&entry(e));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<p class=\"rule\">Tokens you create below never allow more than this, and follow your groups as the identity provider reports them.</p>\n</div>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::access::AccessDeny;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn entries_name_patterns_actions_rules_and_denies_escaped() {
        let e = AccessEntry {
            resource_type: Some("repository".into()),
            pattern: "${group}/**".into(),
            names: vec!["team-a/**".into(), "<b>/**".into()],
            actions: set(&["pull", "push"]),
            effective: set(&["pull", "push"]),
            granted_by: vec!["team-namespace".into()],
            only_from: vec!["10.0.0.0/8".into()],
            denies: vec![AccessDeny {
                rule: "frozen".into(),
                pattern: "team-a/release/**".into(),
                actions: set(&["push"]),
                everywhere: false,
            }],
        };
        let html = render(&[ServiceAccess {
            service: "reg".into(),
            entries: vec![e],
        }]);
        for part in [
            "<code>team-a/**</code>",
            "<code>&lt;b&gt;/**</code>",
            "<code>pull</code>, <code>push</code>",
            "granted by <code>team-namespace</code>",
            "only from <code>10.0.0.0/8</code>",
            "where it applies, rule <code>frozen</code> denies <code>push</code>",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
        assert!(!html.contains("<b>"));
        let none = render(&[ServiceAccess {
            service: "reg".into(),
            entries: Vec::new(),
        }]);
        assert!(none.contains("No access"), "{none}");
    }

    #[test]
    fn limits_must_lie_inside_a_granting_entry() {
        let entry = |ty: Option<&str>, names: &[&str], effective: &[&str]| AccessEntry {
            resource_type: ty.map(Into::into),
            pattern: String::new(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            actions: set(&["pull", "push"]),
            effective: set(effective),
            granted_by: vec!["r".into()],
            only_from: Vec::new(),
            denies: Vec::new(),
        };
        let access = [
            ServiceAccess {
                service: "one".into(),
                entries: vec![
                    entry(Some("repository"), &["team-a/**"], &["pull", "push"]),
                    entry(Some("repository"), &["frozen/**"], &[]),
                    entry(Some("registry"), &["**"], &["pull"]),
                ],
            },
            ServiceAccess {
                service: "two".into(),
                entries: vec![entry(None, &["grace/**"], &["pull"])],
            },
        ];
        let limit = |name: &str| -> Limit { format!("repository:{name}:pull").parse().unwrap() };
        let ok: Vec<Limit> = ["team-a/app", "team-a/**", "grace/x"]
            .into_iter()
            .map(limit)
            .collect();
        assert!(outside(&ok, &access).is_none());
        for bad in ["team-b/app", "frozen/app", "team-*/app", "**", "grace"] {
            let limits = [limit("team-a/app"), limit(bad)];
            let found = outside(&limits, &access).map(Limit::name);
            assert_eq!(found, Some(bad), "{bad}");
        }
        assert!(outside(&[limit("team-a/app")], &[]).is_some());
    }
}
