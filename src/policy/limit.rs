//! Scope limits carried by personal access tokens: `type:name-glob:actions`, e.g.
//! `repository:team-a/**:pull`. A token grants the intersection of its owner's
//! policy and the union of its limits.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::pattern::Pattern;
use crate::scope::Scope;

/// One limit.
#[derive(Debug, Clone)]
pub struct Limit {
    resource_type: String,
    name: Pattern,
    actions: BTreeSet<String>,
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || format!("limit {s:?} must look like repository:team-a/**:pull,push");
        let (ty, rest) = s.split_once(':').ok_or_else(shape)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(shape)?;
        if ty.is_empty()
            || !ty
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(shape());
        }
        let name = Pattern::compile(name, false).map_err(|e| format!("limit {s:?}: {e}"))?;
        let mut set = BTreeSet::new();
        for a in actions.split(',') {
            if a.is_empty()
                || a.len() > 32
                || !(a == "*" || a.bytes().all(|b| b.is_ascii_lowercase()))
            {
                return Err(format!("limit {s:?}: invalid action {a:?}"));
            }
            set.insert(a.to_owned());
        }
        Ok(Limit {
            resource_type: ty.to_owned(),
            name,
            actions: set,
        })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: Vec<&str> = self.actions.iter().map(String::as_str).collect();
        write!(
            f,
            "{}:{}:{}",
            self.resource_type,
            self.name.as_str(),
            actions.join(",")
        )
    }
}

impl Limit {
    /// The resource type, e.g. `repository`.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The name glob as written.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// Keeps only the actions of `granted` that some limit covers for `scope`.
pub fn restrict(limits: &[Limit], scope: &Scope, granted: &mut BTreeSet<String>) {
    let mut allowed = BTreeSet::new();
    let mut all = false;
    for l in limits {
        if l.resource_type == scope.resource_type && l.name.matches(scope.name.as_str()) {
            all |= l.actions.contains("*");
            allowed.extend(l.actions.iter().cloned());
        }
    }
    if !all {
        granted.retain(|a| allowed.contains(a));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn limits_intersect() {
        let limits: Vec<Limit> = vec!["repository:team-a/**:pull".parse().unwrap()];
        let scope: Scope = "repository:team-a/app:pull,push".parse().unwrap();
        let mut granted: BTreeSet<String> = ["pull".into(), "push".into()].into();
        restrict(&limits, &scope, &mut granted);
        assert_eq!(granted.into_iter().collect::<Vec<_>>(), ["pull"]);
        let other: Scope = "repository:team-b/app:pull".parse().unwrap();
        let mut granted: BTreeSet<String> = ["pull".into()].into();
        restrict(&limits, &other, &mut granted);
        assert!(granted.is_empty());
    }

    #[test]
    fn bad_limits() {
        for bad in [
            "",
            "repository",
            "repository:a",
            "repository:a:",
            "Repo:a:pull",
            "repository:${account}:pull",
            "repository:a:PULL",
        ] {
            assert!(bad.parse::<Limit>().is_err(), "{bad}");
        }
        assert_eq!(
            "repository:a/**:push,pull"
                .parse::<Limit>()
                .unwrap()
                .to_string(),
            "repository:a/**:pull,push"
        );
    }
}
