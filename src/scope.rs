//! Resource scopes as registries request them: `type[(class)]:name:action[,action]*`.
//!
//! This module owns parsing, validating and formatting scopes and repository names.
//! It does not decide what is granted (see `policy`). Parsing is total: any input
//! yields either a `Scope` or a `ScopeError`, never a panic, so hostile query strings
//! can be fed straight in.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Longest scope string accepted (type, name and actions together).
pub const MAX_SCOPE_LEN: usize = 512;
/// Longest repository name accepted, as in the distribution reference grammar.
pub const MAX_NAME_LEN: usize = 255;
/// Most actions accepted in one scope.
pub const MAX_ACTIONS: usize = 8;
/// Longest single action accepted.
pub const MAX_ACTION_LEN: usize = 32;

/// Why a scope string was rejected. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The scope string is empty.
    #[error("empty scope")]
    Empty,
    /// The scope string is longer than [`MAX_SCOPE_LEN`].
    #[error("scope longer than {MAX_SCOPE_LEN} bytes")]
    TooLong,
    /// The scope does not have the `type:name:actions` shape.
    #[error("scope must look like type:name:actions")]
    Shape,
    /// The resource type or class is not made of the allowed characters.
    #[error("invalid resource type {0:?}")]
    Type(String),
    /// The resource name does not follow the grammar.
    #[error("invalid resource name: {0}")]
    Name(&'static str),
    /// An action is empty or holds characters outside `[a-z*]`.
    #[error("invalid action list")]
    Actions,
}

/// A validated repository (or other resource) name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName(String);

impl ResourceName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One requested (or granted) resource scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// Resource type, e.g. `repository` or `registry`.
    pub resource_type: String,
    /// Optional resource class, e.g. `plugin` in `repository(plugin)`.
    pub class: Option<String>,
    /// Resource name.
    pub name: ResourceName,
    /// Requested actions, sorted and deduplicated.
    pub actions: BTreeSet<String>,
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ScopeError::Empty);
        }
        if s.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLong);
        }
        // The name may contain one `host:port` colon, so split on the first and the
        // last colon only.
        let (type_part, rest) = s.split_once(':').ok_or(ScopeError::Shape)?;
        let (name, actions) = rest.rsplit_once(':').ok_or(ScopeError::Shape)?;
        let (resource_type, class) = parse_type(type_part)?;
        let name = if resource_type == "repository" {
            parse_repository_name(name)?
        } else {
            parse_other_name(name)?
        };
        let actions = parse_actions(actions)?;
        Ok(Scope {
            resource_type,
            class,
            name,
            actions,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.resource_type)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:", self.name)?;
        let mut first = true;
        for action in &self.actions {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(action)?;
        }
        Ok(())
    }
}

fn is_type_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn parse_type(s: &str) -> Result<(String, Option<String>), ScopeError> {
    let bad = || ScopeError::Type(s.chars().take(64).collect());
    match s.split_once('(') {
        None if is_type_word(s) => Ok((s.to_owned(), None)),
        None => Err(bad()),
        Some((ty, class)) => {
            let class = class.strip_suffix(')').ok_or_else(bad)?;
            if is_type_word(ty) && is_type_word(class) {
                Ok((ty.to_owned(), Some(class.to_owned())))
            } else {
                Err(bad())
            }
        }
    }
}

/// Parses a repository name: an optional `host[:port]` first component, then
/// lowercase path components `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*` joined by `/`.
pub fn parse_repository_name(s: &str) -> Result<ResourceName, ScopeError> {
    if s.is_empty() {
        return Err(ScopeError::Name("empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(ScopeError::Name("longer than 255 bytes"));
    }
    let mut components = s.split('/').peekable();
    let mut first = true;
    while let Some(component) = components.next() {
        let is_last = components.peek().is_none();
        // Only a first component followed by more may be a registry host.
        let host_allowed = first && !is_last;
        first = false;
        if is_path_component(component) {
            continue;
        }
        if host_allowed && is_host_component(component) {
            continue;
        }
        return Err(ScopeError::Name(
            "components must be lowercase letters and digits separated by '.', '_', '__' or '-'",
        ));
    }
    Ok(ResourceName(s.to_owned()))
}

fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    // Alternates runs of alphanumerics with single separators.
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
}

fn is_host_component(c: &str) -> bool {
    let (host, port) = match c.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b.first() != Some(&b'-')
                && b.last() != Some(&b'-')
        })
}

fn parse_other_name(s: &str) -> Result<ResourceName, ScopeError> {
    if s.is_empty() {
        return Err(ScopeError::Name("empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(ScopeError::Name("longer than 255 bytes"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(ScopeError::Name("unexpected character"));
    }
    Ok(ResourceName(s.to_owned()))
}

fn parse_actions(s: &str) -> Result<BTreeSet<String>, ScopeError> {
    let mut out = BTreeSet::new();
    for action in s.split(',') {
        let valid = !action.is_empty()
            && action.len() <= MAX_ACTION_LEN
            && (action == "*" || action.bytes().all(|b| b.is_ascii_lowercase()));
        if !valid {
            return Err(ScopeError::Actions);
        }
        out.insert(action.to_owned());
        if out.len() > MAX_ACTIONS {
            return Err(ScopeError::Actions);
        }
    }
    Ok(out)
}

/// Merges scopes naming the same resource into one, with the union of their actions.
/// Clients may ask for the same repository twice (e.g. a cross-repository mount).
pub fn merge(scopes: Vec<Scope>) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::with_capacity(scopes.len());
    for scope in scopes {
        match out.iter_mut().find(|s| {
            s.resource_type == scope.resource_type && s.class == scope.class && s.name == scope.name
        }) {
            Some(existing) => existing.actions.extend(scope.actions),
            None => out.push(scope),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Scope, ScopeError> {
        s.parse()
    }

    #[test]
    fn parses_common_scopes() {
        let s = parse("repository:alice/app:pull,push").unwrap();
        assert_eq!(s.resource_type, "repository");
        assert_eq!(s.name.as_str(), "alice/app");
        assert_eq!(s.actions.iter().collect::<Vec<_>>(), ["pull", "push"]);
        let c = parse("registry:catalog:*").unwrap();
        assert_eq!(c.resource_type, "registry");
        assert_eq!(c.actions.iter().collect::<Vec<_>>(), ["*"]);
    }

    #[test]
    fn host_and_port_in_name() {
        let s = parse("repository:localhost:5000/team/app:pull").unwrap();
        assert_eq!(s.name.as_str(), "localhost:5000/team/app");
        assert_eq!(s.to_string(), "repository:localhost:5000/team/app:pull");
        // A host alone is not a repository name.
        assert!(parse("repository:localhost:5000:pull").is_err());
    }

    #[test]
    fn class_is_kept() {
        let s = parse("repository(plugin):vendor/p:pull").unwrap();
        assert_eq!(s.class.as_deref(), Some("plugin"));
        assert_eq!(s.to_string(), "repository(plugin):vendor/p:pull");
    }

    #[test]
    fn unknown_actions_parse() {
        let s = parse("repository:a/b:pull,frobnicate").unwrap();
        assert!(s.actions.contains("frobnicate"));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "repository",
            "repository:alice",
            "a:b:c:d:e:f",
            "repository:Alice/App:pull",
            "repository:alice//app:pull",
            "repository:alice/app:",
            "repository:alice/app:pull,,push",
            "repository:alice/app:PULL",
            "repo sitory:a:pull",
            "repository(:a:pull",
            "repository:-a:pull",
            "repository:a-:pull",
            "repository:a..b:pull",
            "repository:a/b:pull\0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("repository:{}:pull", "a".repeat(600));
        assert_eq!(parse(&long), Err(ScopeError::TooLong));
    }

    #[test]
    fn separators_follow_the_grammar() {
        for good in ["a.b", "a_b", "a__b", "a---b", "a1/b2/c3", "x.y_z-w"] {
            assert!(parse_repository_name(good).is_ok(), "{good}");
        }
        for bad in ["a___b", "a._b", "_a", "a.", "A"] {
            assert!(parse_repository_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn merge_unions_actions() {
        let merged = merge(vec![
            parse("repository:a/b:pull").unwrap(),
            parse("repository:c/d:pull").unwrap(),
            parse("repository:a/b:push").unwrap(),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].to_string(), "repository:a/b:pull,push");
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,4}(([._]|__|-{1,2})[a-z0-9]{1,4}){0,2}"
    }

    prop_compose! {
        fn valid_scope()(
            host in proptest::option::of("[a-z]{1,6}(\\.[a-z]{1,4})?(:[0-9]{1,5})?"),
            comps in proptest::collection::vec(component(), 1..4),
            actions in proptest::collection::btree_set(prop_oneof![
                Just("pull".to_owned()), Just("push".to_owned()),
                Just("delete".to_owned()), Just("*".to_owned()), "[a-z]{1,8}"
            ], 1..4),
        ) -> String {
            let mut name = comps.join("/");
            if let Some(h) = host { name = format!("{h}/{name}"); }
            let actions: Vec<_> = actions.into_iter().collect();
            format!("repository:{name}:{}", actions.join(","))
        }
    }

    proptest! {
        #[test]
        fn format_parse_round_trips(s in valid_scope()) {
            let parsed = parse(&s).unwrap();
            prop_assert_eq!(parsed.to_string(), s.clone());
            prop_assert_eq!(parse(&parsed.to_string()).unwrap(), parsed);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }

        #[test]
        fn parser_never_panics_on_colon_soup(s in "[a-z:/,*().-]{0,60}") {
            if let Ok(scope) = parse(&s) {
                // Whatever parses must format to something that parses the same.
                prop_assert_eq!(parse(&scope.to_string()).unwrap(), scope);
            }
        }
    }
}
