//! Glob patterns for policy rules, compiled once at load time.
//!
//! `*` matches within one path component, `**` across components, `?` one character
//! other than `/`. In resource names, `${account}` and `${group}` stand for the
//! identity's account and any of its groups. Patterns compile to a linear-time
//! regular expression, so matching cost is bounded by the name length whatever
//! the pattern (no exponential backtracking).

use regex::{Regex, RegexBuilder};

/// Longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 512;

/// A placeholder a name pattern may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `${account}`.
    Account,
    /// `${group}`.
    Group,
}

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
    /// Placeholders in order of their capture groups.
    placeholders: Vec<Placeholder>,
    /// The pattern is a plain literal (fast path).
    literal: bool,
}

/// What the glob's placeholders stand for when matching.
#[derive(Debug, Clone, Copy)]
pub struct Bindings<'a> {
    /// The account, if the identity has one.
    pub account: Option<&'a str>,
    /// The identity's groups.
    pub groups: &'a [String],
    /// When set, `${group}` binds only to groups this pattern matches (the rule's
    /// `group` field), so `group = "team-*"` with `name = "${group}/**"` means the
    /// team namespaces and nothing else.
    pub group_filter: Option<&'a Pattern>,
}

impl Pattern {
    /// Compiles `source`; `placeholders_allowed` is false for fields other than `name`.
    pub fn compile(source: &str, placeholders_allowed: bool) -> Result<Self, String> {
        if source.is_empty() {
            return Err("empty pattern".into());
        }
        if source.len() > MAX_PATTERN_LEN {
            return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
        }
        let mut re = String::with_capacity(source.len() * 2 + 2);
        re.push('^');
        let mut placeholders = Vec::new();
        let mut literal = true;
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("${") {
                let end = after
                    .find('}')
                    .ok_or_else(|| "unterminated ${ placeholder".to_owned())?;
                let ph = match &after[..end] {
                    "account" => Placeholder::Account,
                    "group" => Placeholder::Group,
                    other => {
                        return Err(format!(
                            "unknown placeholder ${{{other}}} (use ${{account}} or ${{group}})"
                        ))
                    }
                };
                if !placeholders_allowed {
                    return Err("placeholders are only allowed in `name`".into());
                }
                placeholders.push(ph);
                literal = false;
                re.push_str("([^/]+)");
                rest = &after[end + 1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix("/**/") {
                re.push_str("/(?:.*/)?");
                literal = false;
                rest = after;
                continue;
            }
            if let Some(after) = rest.strip_prefix("**") {
                if after.starts_with('*') {
                    return Err("`***` is not a valid glob (use `*` or `**`)".into());
                }
                re.push_str(".*");
                literal = false;
                rest = after;
                continue;
            }
            match c {
                '*' => {
                    re.push_str("[^/]*");
                    literal = false;
                }
                '?' => {
                    re.push_str("[^/]");
                    literal = false;
                }
                '[' | ']' | '{' | '}' | '\\' => {
                    return Err(format!("`{c}` is not supported in patterns"));
                }
                c if c.is_control() => return Err("control character in pattern".into()),
                c => {
                    let mut buf = [0u8; 4];
                    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
                }
            }
            rest = &rest[c.len_utf8()..];
        }
        re.push('$');
        let regex = RegexBuilder::new(&re)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("pattern too complex: {e}"))?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
            placeholders,
            literal,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The regular expression the glob compiled to (placeholders as groups).
    pub fn regex_source(&self) -> &str {
        self.regex.as_str()
    }

    /// Whether the pattern holds any placeholder.
    pub fn has_placeholders(&self) -> bool {
        !self.placeholders.is_empty()
    }

    /// Whether the pattern is a plain string with no wildcard.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Matches `text` without placeholders (fields other than `name`).
    pub fn matches(&self, text: &str) -> bool {
        if self.literal {
            return self.source == text;
        }
        self.regex.is_match(text)
    }

    /// Matches `text`, binding placeholders: `${account}` must equal the account,
    /// and every `${group}` must equal one and the same group of the identity.
    pub fn matches_with(&self, text: &str, b: Bindings<'_>) -> bool {
        if self.placeholders.is_empty() {
            return self.matches(text);
        }
        let Some(caps) = self.regex.captures(text) else {
            return false;
        };
        let mut group: Option<&str> = None;
        for (i, ph) in self.placeholders.iter().enumerate() {
            let Some(value) = caps.get(i + 1).map(|m| m.as_str()) else {
                return false;
            };
            match ph {
                Placeholder::Account => {
                    if b.account != Some(value) {
                        return false;
                    }
                }
                Placeholder::Group => match group {
                    Some(g) if g != value => return false,
                    Some(_) => {}
                    None => {
                        let allowed = b.group_filter.is_none_or(|p| p.matches(value));
                        if !allowed || !b.groups.iter().any(|g| g == value) {
                            return false;
                        }
                        group = Some(value);
                    }
                },
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::compile(s, true).unwrap()
    }
    const NONE: Bindings<'static> = Bindings {
        account: None,
        groups: &[],
        group_filter: None,
    };

    #[test]
    fn star_stays_in_component() {
        assert!(p("team/*").matches("team/app"));
        assert!(!p("team/*").matches("team/a/b"));
        assert!(p("team/**").matches("team/a/b"));
        assert!(!p("team/**").matches("teamx/a"));
        assert!(p("a/**/b").matches("a/b"));
        assert!(p("a/**/b").matches("a/x/y/b"));
        assert!(p("*").matches("anything"));
        assert!(p("lit.x").matches("lit.x"));
        assert!(!p("lit.x").matches("litax"));
        assert!(p("v?").matches("v1"));
    }

    #[test]
    fn placeholders_bind() {
        let groups = vec!["team-a".to_owned(), "team-b".to_owned()];
        let b = Bindings {
            account: Some("alice"),
            groups: &groups,
            group_filter: None,
        };
        assert!(p("${account}/**").matches_with("alice/app", b));
        assert!(!p("${account}/**").matches_with("bob/app", b));
        assert!(!p("${account}/**").matches_with("alice/app", NONE));
        assert!(p("${group}/**").matches_with("team-b/x", b));
        assert!(!p("${group}/**").matches_with("team-c/x", b));
        assert!(!p("${group}/${group}").matches_with("team-a/team-b", b));
        assert!(p("${group}/${group}").matches_with("team-a/team-a", b));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in ["", "${user}/x", "${account", "a[b]", "a***", "x\\y"] {
            assert!(Pattern::compile(bad, true).is_err(), "{bad}");
        }
        assert!(Pattern::compile("${account}", false).is_err());
        assert!(Pattern::compile(&"*".repeat(10_000), true).is_err());
    }

    proptest! {
        #[test]
        fn compile_never_panics(s in "\\PC{0,60}") {
            if let Ok(pat) = Pattern::compile(&s, true) {
                let _ = pat.matches_with("a/b/c", NONE);
            }
        }

        #[test]
        fn literal_patterns_match_themselves(s in "[a-z0-9/._-]{1,40}") {
            prop_assert!(p(&s).matches(&s));
        }
    }
}
