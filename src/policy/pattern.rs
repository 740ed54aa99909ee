//! Glob patterns for policy rules, compiled once at load time.
//!
//! `*` matches within one path component, `**` across components, `?` one character
//! other than `/`. In resource names, `${account}` and `${group}` stand for the
//! identity's account and any of its groups. Patterns compile to a linear-time
//! regular expression, so matching cost is bounded by the name length whatever
//! the pattern (no exponential backtracking).
//!
//! A pattern with placeholders is matched with its placeholders replaced by the
//! values they stand for, by a small memoised glob matcher (at most one visit
//! per pattern token and name position). A regular expression cannot do this:
//! it captures one split of the name, so `${account}-*` would miss `alice-x-y`
//! for alice, and `*.${account}` would miss `a.b.c` for the account `b.c`.

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

/// One piece of a pattern with placeholders, for [`Pattern::matches_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Literal text.
    Lit(String),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `?`: one character other than `/`.
    One,
    /// `**`: anything.
    Any,
    /// `/**/`: `/`, or `/…/`.
    Dirs,
    /// A placeholder, replaced by its value when matching.
    Slot(Placeholder),
}

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
    /// The pattern as tokens (only kept when it has placeholders).
    tokens: Vec<Tok>,
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
        let mut tokens: Vec<Tok> = Vec::new();
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
                tokens.push(Tok::Slot(ph));
                literal = false;
                re.push_str("([^/]+)");
                rest = &after[end + 1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix("/**/") {
                tokens.push(Tok::Dirs);
                re.push_str("/(?:.*/)?");
                literal = false;
                rest = after;
                continue;
            }
            if let Some(after) = rest.strip_prefix("**") {
                if after.starts_with('*') {
                    return Err("`***` is not a valid glob (use `*` or `**`)".into());
                }
                tokens.push(Tok::Any);
                re.push_str(".*");
                literal = false;
                rest = after;
                continue;
            }
            match c {
                '*' => {
                    tokens.push(Tok::Star);
                    re.push_str("[^/]*");
                    literal = false;
                }
                '?' => {
                    tokens.push(Tok::One);
                    re.push_str("[^/]");
                    literal = false;
                }
                '[' | ']' | '{' | '}' | '\\' => {
                    return Err(format!("`{c}` is not supported in patterns"));
                }
                c if c.is_control() => return Err("control character in pattern".into()),
                c => {
                    let mut buf = [0u8; 4];
                    let text = c.encode_utf8(&mut buf);
                    re.push_str(&regex::escape(text));
                    match tokens.last_mut() {
                        Some(Tok::Lit(lit)) => lit.push(c),
                        _ => tokens.push(Tok::Lit(text.to_owned())),
                    }
                }
            }
            rest = &rest[c.len_utf8()..];
        }
        re.push('$');
        let regex = RegexBuilder::new(&re)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("pattern too complex: {e}"))?;
        if placeholders.is_empty() {
            tokens = Vec::new();
        }
        Ok(Pattern {
            source: source.to_owned(),
            regex,
            tokens,
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

    /// Matches `text`, binding placeholders: `${account}` stands for the account,
    /// and every `${group}` for one and the same group of the identity (one the
    /// rule's `group` field allows).
    pub fn matches_with(&self, text: &str, b: Bindings<'_>) -> bool {
        if self.placeholders.is_empty() {
            return self.matches(text);
        }
        let needs_account = self.placeholders.contains(&Placeholder::Account);
        let account = match b.account {
            Some(a) if !a.is_empty() => a,
            _ if needs_account => return false,
            _ => "",
        };
        if !self.placeholders.contains(&Placeholder::Group) {
            return glob_match(&self.tokens, text.as_bytes(), account.as_bytes(), b"");
        }
        b.groups.iter().any(|g| {
            !g.is_empty()
                // A group can only stand in the name if the name holds it.
                && text.contains(g.as_str())
                && b.group_filter.is_none_or(|p| p.matches(g))
                && glob_match(&self.tokens, text.as_bytes(), account.as_bytes(), g.as_bytes())
        })
    }
}

/// Whether `text` matches `tokens` with `${account}` = `account` and
/// `${group}` = `group`. Memoised on (token, position): each pair is decided
/// once, so the work is bounded by tokens × positions × one component.
fn glob_match(tokens: &[Tok], text: &[u8], account: &[u8], group: &[u8]) -> bool {
    let width = text.len() + 1;
    let mut memo = vec![0u8; (tokens.len() + 1) * width];
    go(tokens, text, account, group, 0, 0, &mut memo, width)
}

#[allow(clippy::too_many_arguments)]
fn go(
    tokens: &[Tok],
    text: &[u8],
    account: &[u8],
    group: &[u8],
    ti: usize,
    si: usize,
    memo: &mut [u8],
    width: usize,
) -> bool {
    let Some(tok) = tokens.get(ti) else {
        return si == text.len();
    };
    let cell = ti * width + si;
    match memo.get(cell) {
        Some(1) => return false,
        Some(2) => return true,
        _ => {}
    }
    let rest = &text[si..];
    let next =
        |to: usize, memo: &mut [u8]| go(tokens, text, account, group, ti + 1, to, memo, width);
    let result = match tok {
        Tok::Lit(lit) => rest.starts_with(lit.as_bytes()) && next(si + lit.len(), memo),
        Tok::Slot(Placeholder::Account) => {
            rest.starts_with(account) && next(si + account.len(), memo)
        }
        Tok::Slot(Placeholder::Group) => rest.starts_with(group) && next(si + group.len(), memo),
        Tok::One => {
            let len = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.chars().next())
                .or_else(|| rest.first().map(|b| char::from(*b)))
                .map_or(0, char::len_utf8);
            len > 0 && rest[0] != b'/' && next(si + len, memo)
        }
        Tok::Star => {
            let component = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            (0..=component).any(|k| next(si + k, memo))
        }
        Tok::Any => (0..=rest.len()).any(|k| next(si + k, memo)),
        Tok::Dirs => {
            rest.first() == Some(&b'/')
                && (next(si + 1, memo)
                    || (1..rest.len())
                        .filter(|k| rest[*k] == b'/')
                        .any(|k| next(si + k + 1, memo)))
        }
    };
    if let Some(m) = memo.get_mut(cell) {
        *m = if result { 2 } else { 1 };
    }
    result
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
    fn placeholders_match_names_holding_dashes_and_dots() {
        let groups = vec!["team.a".to_owned(), "org/x".to_owned()];
        let b = |account| Bindings {
            account: Some(account),
            groups: &groups,
            group_filter: None,
        };
        assert!(p("${account}-*").matches_with("alice-x-y", b("alice")));
        assert!(p("${account}-*").matches_with("my-team-app", b("my-team")));
        assert!(p("${account}-*").matches_with("my-team-app", b("my")));
        assert!(!p("${account}-*").matches_with("alice2-x", b("alice")));
        assert!(p("*.${account}").matches_with("a.b.c", b("b.c")));
        assert!(p("*.${account}").matches_with("a.b.c", b("c")));
        assert!(!p("*.${account}").matches_with("a.b.c", b("a.b")));
        assert!(p("${account}/**").matches_with("a.b/x/y", b("a.b")));
        assert!(!p("${account}/**").matches_with("axb/x", b("a.b")));
        assert!(p("${group}-*/**").matches_with("team.a-dev/x", b("z")));
        assert!(p("${group}/**").matches_with("org/x/app", b("z")));
        assert!(p("x/**/${account}").matches_with("x/a/b/alice", b("alice")));
        assert!(p("x/**/${account}").matches_with("x/alice", b("alice")));
        assert!(!p("${account}?").matches_with("alice/", b("alice")));
        assert!(p("${account}?").matches_with("aliceé", b("alice")));
        // An empty account binds nothing.
        assert!(!p("${account}*").matches_with("anything", b("")));
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

        /// With the placeholder written out as the account, the plain glob and
        /// the bound pattern agree on every name.
        #[test]
        fn bound_placeholders_agree_with_the_written_out_glob(
            account in "[a-z][a-z.-]{0,6}",
            before in "(\\*|\\?|[a-z.-]{0,3}|/)?",
            after in "(\\*|\\*\\*|-\\*|/\\*\\*|\\.\\*)?",
            name in "[a-z./-]{0,16}",
        ) {
            let with = p(&format!("{before}${{account}}{after}"));
            let written = p(&format!("{before}{account}{after}"));
            let b = Bindings { account: Some(&account), groups: &[], group_filter: None };
            prop_assert_eq!(with.matches_with(&name, b), written.matches(&name), "{} vs {}", with.as_str(), name);
        }
    }
}
