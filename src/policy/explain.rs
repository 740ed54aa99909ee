//! Why a decision came out as it did: per requested action, the rules that allowed
//! and denied it. Slower than `evaluate` (it collects rule ids); used by
//! `berth policy check --explain` and `berth policy test`, not on the token path.

use serde::Serialize;

use super::{evaluate, Policy, Request};
use crate::scope::Scope;

/// The explanation for one requested action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionExplanation {
    /// The action.
    pub action: String,
    /// Whether it was granted.
    pub granted: bool,
    /// Ids of matching rules whose `allow` covers it.
    pub allowed_by: Vec<String>,
    /// Ids of matching rules whose `deny` takes it away.
    pub denied_by: Vec<String>,
}

/// The explanation for one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The scope as requested.
    pub scope: String,
    /// Granted actions.
    pub granted: Vec<String>,
    /// Per requested action.
    pub actions: Vec<ActionExplanation>,
}

/// Explains the decision for `scope`.
pub fn explain(policy: &Policy, req: &Request<'_>, scope: &Scope) -> Explanation {
    let decision = evaluate(policy, req, scope);
    let matching: Vec<_> = policy
        .candidates(scope)
        .filter(|r| r.matches(req, scope))
        .collect();
    let actions = scope
        .actions
        .iter()
        .map(|action| {
            let star = action == "*";
            let allowed_by = matching
                .iter()
                .filter(|r| r.allow.contains("*") || (!star && r.allow.contains(action)))
                .map(|r| r.id.clone())
                .collect();
            let denied_by = matching
                .iter()
                .filter(|r| {
                    if star {
                        !r.deny.is_empty()
                    } else {
                        r.deny.contains("*") || r.deny.contains(action)
                    }
                })
                .map(|r| r.id.clone())
                .collect();
            ActionExplanation {
                action: action.clone(),
                granted: decision.granted.contains(action),
                allowed_by,
                denied_by,
            }
        })
        .collect();
    Explanation {
        scope: scope.to_string(),
        granted: decision.granted.into_iter().collect(),
        actions,
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let granted = if self.granted.is_empty() {
            "(nothing)".to_owned()
        } else {
            self.granted.join(", ")
        };
        writeln!(f, "{} -> {granted}", self.scope)?;
        for a in &self.actions {
            let verdict = if a.granted { "granted" } else { "refused" };
            let mut why = Vec::new();
            if !a.allowed_by.is_empty() {
                why.push(format!("allowed by {}", a.allowed_by.join(", ")));
            }
            if !a.denied_by.is_empty() {
                why.push(format!("denied by {}", a.denied_by.join(", ")));
            }
            if why.is_empty() {
                why.push("no rule allows it".into());
            }
            writeln!(f, "  {}: {verdict} ({})", a.action, why.join("; "))?;
        }
        Ok(())
    }
}
