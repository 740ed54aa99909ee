//! Putting untrusted values into LDAP filters and DNs, and reading group names
//! back out of DNs.
//!
//! Security invariant: a username or DN only ever reaches the directory through
//! [`fill_filter`] (RFC 4515 escaping: `*`, `(`, `)`, `\` and NUL become `\XX`)
//! or [`fill_dn`] (RFC 4514 escaping of an attribute value), in one pass over the
//! template, so a value can neither widen a filter nor smuggle in another
//! placeholder. Values are never interpreted as filter syntax.

use ldap3::{dn_escape, ldap_escape};

/// Longest username sent to a directory.
pub const MAX_USERNAME: usize = 256;
/// Longest password sent to a directory. A longer one is refused without a bind:
/// no directory account has one, and it would only load the directory.
pub const MAX_PASSWORD: usize = 1024;

/// Whether `name` may be looked up at all: 1-256 bytes, no control characters
/// (NUL included), no leading or trailing space. Anything else is matched
/// literally after escaping.
pub fn acceptable_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME
        && !name.chars().any(char::is_control)
        && name.trim() == name
}

/// Replaces the placeholders of `template` in one pass: `{username}` and `{dn}`
/// by the escaped values, everything else verbatim.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'outer: while !rest.is_empty() {
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// A filter from `template` with `{username}` and `{dn}` escaped per RFC 4515.
pub fn fill_filter(template: &str, username: &str, dn: &str) -> String {
    fill(
        template,
        &[
            ("{username}", &ldap_escape(username)),
            ("{dn}", &ldap_escape(dn)),
        ],
    )
}

/// A DN from `template` with `{username}` escaped as an RDN value (RFC 4514).
pub fn fill_dn(template: &str, username: &str) -> String {
    fill(template, &[("{username}", &dn_escape(username))])
}

/// Splits off the first RDN of `dn` (up to the first unescaped `,`, `;` or `+`).
fn first_ava(dn: &str) -> &str {
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' | b';' | b'+' => return &dn[..i],
            _ => i += 1,
        }
    }
    dn
}

/// Undoes RFC 4514 escaping of an attribute value; `None` for a value in the
/// `#hex` BER form or a broken escape.
fn unescape_value(v: &str) -> Option<String> {
    if v.starts_with('#') {
        return None;
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                    let v = hex(h)? * 16 + hex(l)?;
                    out.push(u8::try_from(v).ok()?);
                    i += 3;
                }
                (Some(&c), _) => {
                    out.push(c);
                    i += 2;
                }
                (None, _) => return None,
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The group name in a group's DN: the value of its first RDN when that RDN's
/// type is `attribute` (compared without case), e.g. `admins` from
/// `cn=admins,ou=groups,dc=example,dc=com`.
pub fn group_name_from_dn(dn: &str, attribute: &str) -> Option<String> {
    let ava = first_ava(dn.trim());
    let (kind, value) = ava.split_once('=')?;
    if !kind.trim().eq_ignore_ascii_case(attribute) {
        return None;
    }
    let name = unescape_value(value.trim())?;
    (!name.is_empty() && !name.chars().any(char::is_control)).then_some(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const USER: &str = "(&(objectClass=person)(uid={username}))";

    #[test]
    fn filter_values_are_literal() {
        for (name, want) in [
            ("alice", "(&(objectClass=person)(uid=alice))"),
            ("*", "(&(objectClass=person)(uid=\\2a))"),
            (
                "admin)(|(uid=*",
                "(&(objectClass=person)(uid=admin\\29\\28|\\28uid=\\2a))",
            ),
            ("\\00", "(&(objectClass=person)(uid=\\5c00))"),
            ("a\0b", "(&(objectClass=person)(uid=a\\00b))"),
            ("smith, john", "(&(objectClass=person)(uid=smith, john))"),
            ("a+b", "(&(objectClass=person)(uid=a+b))"),
        ] {
            let f = fill_filter(USER, name, "");
            assert_eq!(f, want, "{name:?}");
            // Still one well-formed filter: nothing widened it.
            assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
        }
    }

    #[test]
    fn a_value_cannot_inject_a_placeholder() {
        let t = "(|(member={dn})(memberUid={username}))";
        let f = fill_filter(t, "{dn}", "cn={username},dc=x");
        assert_eq!(f, "(|(member=cn={username},dc=x)(memberUid={dn}))");
        assert_eq!(
            fill_dn("uid={username},dc=x", "{username}"),
            "uid={username},dc=x"
        );
    }

    #[test]
    fn dn_values_are_escaped() {
        let t = "uid={username},ou=people,dc=example,dc=com";
        assert_eq!(
            fill_dn(t, "smith, john+x=y"),
            "uid=smith\\2c john\\2bx\\3dy,ou=people,dc=example,dc=com"
        );
        assert_eq!(
            fill_dn(t, " #a "),
            "uid=\\20#a\\20,ou=people,dc=example,dc=com"
        );
        assert_eq!(fill_dn(t, "#a"), "uid=\\23a,ou=people,dc=example,dc=com");
        assert_eq!(fill_dn(t, "a\\b"), "uid=a\\5cb,ou=people,dc=example,dc=com");
    }

    #[test]
    fn group_names_from_dns() {
        for (dn, want) in [
            ("cn=admins,ou=groups,dc=example,dc=com", Some("admins")),
            ("CN=Team A,OU=Groups,DC=corp", Some("Team A")),
            ("cn=a\\2cb,ou=g", Some("a,b")),
            ("cn=a\\,b,ou=g", Some("a,b")),
            ("cn=x+ou=y,dc=z", Some("x")),
            ("ou=admins,dc=example", None),
            ("cn=#04024869", None),
            ("cn=,dc=x", None),
            ("garbage", None),
            ("", None),
            ("cn=bad\\", None),
        ] {
            assert_eq!(group_name_from_dn(dn, "cn").as_deref(), want, "{dn:?}");
        }
    }

    #[test]
    fn usernames_worth_looking_up() {
        assert!(acceptable_username("alice"));
        assert!(acceptable_username("smith, john"));
        assert!(acceptable_username("*"));
        assert!(!acceptable_username(""));
        assert!(!acceptable_username("a\0"));
        assert!(!acceptable_username(" alice"));
        assert!(!acceptable_username(&"a".repeat(MAX_USERNAME + 1)));
    }

    proptest::proptest! {
        #[test]
        fn escaped_filters_always_parse(name in ".{0,64}") {
            let f = fill_filter(USER, &name, "");
            proptest::prop_assert!(ldap3::parse_filter(&f).is_ok());
        }

        #[test]
        fn dn_escape_round_trips(value in "[a-zA-Z0-9é ,+=#;<>\\\\\"]{1,32}") {
            let dn = fill_dn("cn={username},dc=x", &value);
            proptest::prop_assert_eq!(group_name_from_dn(&dn, "cn"), Some(value));
        }
    }
}
