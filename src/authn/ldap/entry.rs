//! Reading a user's directory entry: attribute values, whether the account is
//! switched off, and the group list policy sees.
//!
//! Pure functions over [`SearchEntry`] values; no I/O. The account-status rules
//! follow what each directory family writes:
//! - Active Directory: `userAccountControl` bit 2 (ACCOUNTDISABLE) and
//!   `accountExpires` (100 ns ticks since 1601; 0 and 2^63-1 mean never);
//! - OpenLDAP ppolicy: `pwdAccountLockedTime` = `000001010000Z` (locked by an
//!   administrator until unlocked);
//! - POSIX accounts: `shadowExpire` (days since 1970; -1 means never);
//! - 389 Directory Server / Red Hat IdM: `nsAccountLock: TRUE`.

use ldap3::SearchEntry;

use crate::authn::parse_group;

/// The account-status attributes read with every user entry.
pub const STATUS_ATTRIBUTES: [&str; 5] = [
    "userAccountControl",
    "accountExpires",
    "pwdAccountLockedTime",
    "shadowExpire",
    "nsAccountLock",
];

/// AD's ACCOUNTDISABLE flag in `userAccountControl`.
const ACCOUNTDISABLE: i64 = 0x2;
/// Seconds from 1601-01-01 (Windows FILETIME epoch) to 1970-01-01.
const FILETIME_TO_UNIX: i64 = 11_644_473_600;

/// The values of `attr` (attribute names compare without case).
pub fn values<'a>(entry: &'a SearchEntry, attr: &str) -> Vec<&'a str> {
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter().map(String::as_str))
        .collect()
}

/// The first value of `attr`.
pub fn first<'a>(entry: &'a SearchEntry, attr: &str) -> Option<&'a str> {
    values(entry, attr).into_iter().next()
}

/// Why the account may not sign in, if the entry says so at `now` (unix seconds).
pub fn disabled(entry: &SearchEntry, now: i64) -> Option<&'static str> {
    let int = |attr: &str| first(entry, attr).and_then(|v| v.trim().parse::<i64>().ok());
    if int("userAccountControl").is_some_and(|uac| uac & ACCOUNTDISABLE != 0) {
        return Some("account disabled (userAccountControl)");
    }
    if let Some(ticks) = int("accountExpires") {
        if ticks != 0 && ticks != i64::MAX && now >= ticks / 10_000_000 - FILETIME_TO_UNIX {
            return Some("account expired (accountExpires)");
        }
    }
    if first(entry, "pwdAccountLockedTime").is_some_and(|v| v.trim() == "000001010000Z") {
        return Some("account locked by an administrator (pwdAccountLockedTime)");
    }
    if let Some(days) = int("shadowExpire") {
        if days >= 0 && now / 86_400 >= days {
            return Some("account expired (shadowExpire)");
        }
    }
    if first(entry, "nsAccountLock").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Some("account locked (nsAccountLock)");
    }
    None
}

/// The groups policy sees: directory names deduplicated and sorted, cut to
/// `max`, each with `prefix`; names berth cannot use as a group (spaces,
/// commas, too long) are left out. Returns the list and whether it was cut.
pub fn policy_groups(mut names: Vec<String>, prefix: &str, max: usize) -> (Vec<String>, bool) {
    names.sort();
    names.dedup();
    let cut = names.len() > max;
    names.truncate(max);
    let groups = names
        .into_iter()
        .filter_map(|n| parse_group(&format!("{prefix}{n}")).ok())
        .collect();
    (groups, cut)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: "uid=x,dc=example".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect::<HashMap<_, _>>(),
            bin_attrs: HashMap::new(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn active_accounts_pass() {
        for e in [
            entry(&[]),
            entry(&[("userAccountControl", &["512"])]),
            entry(&[("accountExpires", &["0"])]),
            entry(&[("accountExpires", &["9223372036854775807"])]),
            entry(&[("shadowExpire", &["-1"])]),
            entry(&[("pwdAccountLockedTime", &["20260101000000Z"])]),
            entry(&[("nsAccountLock", &["false"])]),
            entry(&[("userAccountControl", &["not a number"])]),
        ] {
            assert_eq!(disabled(&e, NOW), None, "{:?}", e.attrs);
        }
    }

    #[test]
    fn switched_off_accounts_are_refused() {
        let future_ft = (NOW + 3600 + FILETIME_TO_UNIX) * 10_000_000;
        let past_ft = (NOW - 3600 + FILETIME_TO_UNIX) * 10_000_000;
        assert!(disabled(&entry(&[("userAccountControl", &["514"])]), NOW).is_some());
        assert!(disabled(&entry(&[("useraccountcontrol", &["66050"])]), NOW).is_some());
        assert!(disabled(&entry(&[("accountExpires", &[&past_ft.to_string()])]), NOW).is_some());
        assert!(disabled(
            &entry(&[("accountExpires", &[&future_ft.to_string()])]),
            NOW
        )
        .is_none());
        assert!(disabled(&entry(&[("pwdAccountLockedTime", &["000001010000Z"])]), NOW).is_some());
        let today = (NOW / 86_400).to_string();
        assert!(disabled(&entry(&[("shadowExpire", &[&today])]), NOW).is_some());
        assert!(disabled(&entry(&[("nsAccountLock", &["TRUE"])]), NOW).is_some());
    }

    #[test]
    fn groups_are_prefixed_sorted_and_bounded() {
        let names = vec!["b".into(), "a".into(), "b".into(), "Domain Users".into()];
        let (g, cut) = policy_groups(names, "ldap:", 10);
        assert_eq!(g, vec!["ldap:a".to_owned(), "ldap:b".to_owned()]);
        assert!(!cut);
        let many: Vec<String> = (0..10_000).map(|i| format!("g{i:05}")).collect();
        let (g, cut) = policy_groups(many, "ldap:", 1000);
        assert_eq!(g.len(), 1000);
        assert!(cut);
        assert_eq!(g[0], "ldap:g00000");
        // The shipped policy's `admins` is never reached through the default prefix.
        let (g, _) = policy_groups(vec!["admins".into()], "ldap:", 10);
        assert_eq!(g, vec!["ldap:admins".to_owned()]);
    }

    #[test]
    fn attribute_names_compare_without_case() {
        let e = entry(&[("memberOf", &["cn=a,dc=x", "cn=b,dc=x"])]);
        assert_eq!(values(&e, "memberof").len(), 2);
        assert_eq!(first(&e, "MEMBEROF"), Some("cn=a,dc=x"));
        assert_eq!(first(&e, "uid"), None);
    }
}
