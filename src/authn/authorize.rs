//! What an authenticated identity may have in its token: the policy's decision
//! for each requested scope, narrowed by the limits of a personal access token
//! and by the actions a sign-in page token may carry. One function owns all
//! three, so no caller can apply the policy and forget a limit.

use crate::policy::{self, Policy, Request};
use crate::scope::Scope;
use crate::token::Access;

use super::Authenticated;

/// The outcome for every requested scope.
#[derive(Debug, Default)]
pub struct Authorization {
    /// What the token carries, one entry per requested scope (possibly with no
    /// actions).
    pub access: Vec<Access>,
    /// Refused actions, as `type:name:action,action`.
    pub denied: Vec<String>,
    /// Ids of the rules that decided, each once, in order of first use.
    pub rules: Vec<String>,
}

impl Authorization {
    /// The granted access, as `type:name:action,action` (scopes granted nothing
    /// left out).
    pub fn granted(&self) -> Vec<String> {
        self.access
            .iter()
            .filter(|a| !a.actions.is_empty())
            .map(|a| format!("{}:{}:{}", a.resource_type, a.name, a.actions.join(",")))
            .collect()
    }
}

impl Authenticated {
    /// Decides `scopes` for this identity under `policy`: policy, then the
    /// token's limits, then the action cap.
    pub fn authorize(
        &self,
        policy: &Policy,
        request: &Request<'_>,
        scopes: &[Scope],
    ) -> Authorization {
        let mut out = Authorization {
            access: Vec::with_capacity(scopes.len()),
            ..Authorization::default()
        };
        for scope in scopes {
            let mut decision = policy::evaluate(policy, request, scope);
            if let Some(limits) = &self.limits {
                policy::limit::restrict(limits, scope, &mut decision.granted);
            }
            decision.granted.retain(|a| self.may_carry(a));
            let refused: Vec<&str> = scope
                .actions
                .iter()
                .filter(|a| !decision.granted.contains(*a))
                .map(String::as_str)
                .collect();
            if !refused.is_empty() {
                out.denied.push(format!(
                    "{}:{}:{}",
                    scope.resource_type,
                    scope.name,
                    refused.join(",")
                ));
            }
            for id in decision.matched {
                if !out.rules.contains(&id) {
                    out.rules.push(id);
                }
            }
            out.access.push(Access {
                resource_type: scope.resource_type.clone(),
                name: scope.name.to_string(),
                actions: decision.granted.into_iter().collect(),
            });
        }
        out
    }
}
