//! `[[ldap]]` directory settings: the raw TOML shape and the validated form.
//!
//! This module validates; it reads no secret. The service account's password is
//! named here (file or environment variable) and read when the directory is built,
//! so a config dump or a parse error can never show it. The place of directories
//! in the chain (`auth_order`, `name_conflict`) is validated with the `[[oidc]]`
//! settings; here we only check that a configured directory is in that order.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::oidc::Backend;
pub use super::oidc::SecretSource;
use super::{parse_duration, ConfigError};

/// Most groups one user may bring; larger answers are cut to this.
pub const MAX_GROUPS_LIMIT: usize = 10_000;

/// `url = "…"` or `url = ["…", "…"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One URL.
    One(String),
    /// Several, tried in order (failover).
    Many(Vec<String>),
}

/// One `[[ldap]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    name: Option<String>,
    url: Option<OneOrMany>,
    starttls: Option<bool>,
    insecure_no_tls: Option<bool>,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    bind_password: Option<toml::Value>,
    bind_password_file: Option<PathBuf>,
    bind_password_env: Option<String>,
    active_directory: Option<bool>,
    user_base: Option<String>,
    user_scope: Option<String>,
    user_filter: Option<String>,
    user_dn: Option<String>,
    username_attribute: Option<String>,
    group_attribute: Option<String>,
    group_base: Option<String>,
    group_filter: Option<String>,
    group_name_attribute: Option<String>,
    groups_prefix: Option<String>,
    max_groups: Option<usize>,
    revalidate: Option<String>,
    cache_ttl: Option<String>,
    connect_timeout: Option<String>,
    search_timeout: Option<String>,
    pool_size: Option<usize>,
}

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldap://` upgraded with StartTLS before anything is sent.
    StartTls,
    /// `ldap://` in clear (only with `insecure_no_tls = true`).
    Plain,
}

/// One directory server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `ldap://host:port` or `ldaps://host:port`, as given (without a trailing `/`).
    pub url: String,
    /// How the connection is protected.
    pub transport: Transport,
}

/// Search scope of the user search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserScope {
    /// The whole subtree under `user_base`.
    Subtree,
    /// Only the entries directly under `user_base`.
    OneLevel,
}

/// Where the user's entry is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserLookup {
    /// A search under `base` with `filter` (`{username}` escaped per RFC 4515).
    Search {
        /// Search base.
        base: String,
        /// Scope.
        scope: UserScope,
        /// Filter template.
        filter: String,
    },
    /// The DN built from a template (`{username}` escaped per RFC 4514).
    Dn(String),
}

/// A group search: groups whose `filter` matches the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSearch {
    /// Search base.
    pub base: String,
    /// Filter template with `{dn}` (the user's DN) and/or `{username}`.
    pub filter: String,
}

/// One validated directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// Short name (`[a-z0-9-]`), used in logs, sessions and `berth ldap check`.
    pub name: String,
    /// Servers, tried in order.
    pub urls: Vec<ServerUrl>,
    /// Extra CA certificates (PEM) for the servers' TLS; none: the system's.
    pub ca_file: Option<PathBuf>,
    /// The service account (DN and where its password is read); `None`: searches
    /// run anonymously.
    pub bind: Option<(String, SecretSource)>,
    /// Where the user's entry is found.
    pub user: UserLookup,
    /// Attribute whose value is the account name policy sees (lower-cased).
    pub username_attribute: String,
    /// Attribute on the user with the DNs of their groups (`memberOf`); `None`: not read.
    pub group_attribute: Option<String>,
    /// A group search, when configured.
    pub group_search: Option<GroupSearch>,
    /// Attribute that names a group (the RDN of a `memberOf` DN, or read from a
    /// found group entry).
    pub group_name_attribute: String,
    /// Put before every directory group name.
    pub groups_prefix: String,
    /// Most groups kept per user.
    pub max_groups: usize,
    /// Re-check refresh tokens of directory users at most this often.
    pub revalidate: Duration,
    /// How long a successful password check is remembered (zero: never).
    pub cache_ttl: Duration,
    /// Timeout to connect (TCP and TLS) to one server.
    pub connect_timeout: Duration,
    /// Timeout of one bind or search.
    pub search_timeout: Duration,
    /// Most open connections to this directory.
    pub pool_size: usize,
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An attribute description: a name (`memberOf`) or an OID (`1.2.840.113556.1.4.221`).
fn attribute_ok(s: &str) -> bool {
    let name = s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    !s.is_empty() && s.len() <= 64 && (name || oid)
}

/// A DN as written in the configuration: printable, non-empty.
fn dn_ok(s: &str) -> bool {
    !s.trim().is_empty() && s.len() <= 1024 && !s.chars().any(char::is_control)
}

fn parse_url(s: &str, starttls: bool, plain_ok: bool) -> Result<ServerUrl, String> {
    let s = s.trim().trim_end_matches('/');
    let (transport, rest) = if let Some(rest) = s.strip_prefix("ldaps://") {
        (Transport::Ldaps, rest)
    } else if let Some(rest) = s.strip_prefix("ldap://") {
        let t = if starttls {
            Transport::StartTls
        } else if plain_ok {
            Transport::Plain
        } else {
            return Err(format!(
                "{s:?} without StartTLS would send passwords in clear: keep starttls = true, use ldaps://, or set insecure_no_tls = true"
            ));
        };
        (t, rest)
    } else {
        return Err(format!(
            "{s:?} is not an ldap:// or ldaps:// URL such as ldaps://ldap.example.com"
        ));
    };
    if rest.is_empty()
        || rest.len() > 255
        || rest
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@'))
    {
        return Err(format!(
            "{s:?}: give only the scheme, host and port, such as ldaps://ldap.example.com:636"
        ));
    }
    Ok(ServerUrl {
        url: s.to_owned(),
        transport,
    })
}

fn duration(key: &str, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        Some(v) => parse_duration(&v).map_err(|p| invalid(key, p)),
        None => Ok(default),
    }
}

/// Checks a filter template: it must hold at least one of `placeholders`, and
/// with sample values put in, parse as an LDAP filter.
fn filter_ok(template: &str, placeholders: &[&str]) -> Result<(), String> {
    if !placeholders.iter().any(|p| template.contains(p)) {
        return Err(format!("must contain {}", placeholders.join(" or ")));
    }
    // Plain sample values need no escaping, so putting them in by hand gives
    // what the directory code's escaping fill would.
    let sample = template
        .replace("{username}", "sample")
        .replace("{dn}", "cn=sample,dc=example");
    if template.len() > 1024 || ldap3::parse_filter(&sample).is_err() {
        return Err(format!("{template:?} is not a valid LDAP filter"));
    }
    Ok(())
}

/// Validates the `[[ldap]]` entries; `order` is the validated `auth_order`.
pub fn validate(
    raw: Vec<RawDirectory>,
    order: &[Backend],
) -> Result<Vec<DirectoryConfig>, ConfigError> {
    let mut out: Vec<DirectoryConfig> = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("ldap[{i}].{k}");
        let name = d.name.unwrap_or_else(|| "ldap".to_owned());
        if !name_ok(&name) {
            return Err(invalid(
                &key("name"),
                "use 1-32 lowercase letters, digits or '-'",
            ));
        }
        if out.iter().any(|x| x.name == name) {
            return Err(invalid(
                &key("name"),
                format!("directory {name:?} is listed twice; give each [[ldap]] a distinct name"),
            ));
        }
        let ad = d.active_directory.unwrap_or(false);
        let starttls = d.starttls.unwrap_or(true);
        let plain_ok = d.insecure_no_tls.unwrap_or(false);
        let urls = match d.url {
            None => return Err(invalid(&key("url"), "is required")),
            Some(OneOrMany::One(u)) => vec![u],
            Some(OneOrMany::Many(v)) => v,
        };
        if urls.is_empty() || urls.len() > 16 {
            return Err(invalid(&key("url"), "give 1 to 16 URLs"));
        }
        let urls = urls
            .iter()
            .map(|u| parse_url(u, starttls, plain_ok))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|p| invalid(&key("url"), p))?;
        if d.bind_password.is_some() {
            // Deliberately no echo of the value.
            return Err(invalid(
                &key("bind_password"),
                "secrets are not accepted inline; use bind_password_file or bind_password_env",
            ));
        }
        let source = match (d.bind_password_file, d.bind_password_env) {
            (Some(f), None) => Some(SecretSource::File(f)),
            (None, Some(v)) if !v.trim().is_empty() => Some(SecretSource::Env(v)),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(&key("bind_password_env"), "must name a variable"))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key("bind_password_env"),
                    "set only one of bind_password_file and bind_password_env",
                ))
            }
        };
        let bind = match (d.bind_dn, source) {
            (Some(dn), Some(src)) if dn_ok(&dn) => Some((dn, src)),
            (Some(_), Some(_)) => return Err(invalid(&key("bind_dn"), "must be a DN")),
            (Some(_), None) => {
                return Err(invalid(
                    &key("bind_password_file"),
                    "bind_dn is set: set bind_password_file or bind_password_env",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &key("bind_dn"),
                    "a bind password is set but no bind_dn",
                ))
            }
            (None, None) => None,
        };
        let attribute =
            |k: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
                let v = v.unwrap_or_else(|| default.to_owned());
                if !attribute_ok(&v) {
                    return Err(invalid(&key(k), format!("{v:?} is not an attribute name")));
                }
                Ok(v)
            };
        let username_attribute = attribute(
            "username_attribute",
            d.username_attribute,
            if ad { "sAMAccountName" } else { "uid" },
        )?;
        let user = match (d.user_dn, d.user_base) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key("user_dn"),
                    "set either user_dn (a DN template) or user_base (a search), not both",
                ))
            }
            (Some(t), None) => {
                if !t.contains("{username}") || !dn_ok(&t) {
                    return Err(invalid(
                        &key("user_dn"),
                        "must be a DN containing {username}, such as uid={username},ou=people,dc=example,dc=com",
                    ));
                }
                UserLookup::Dn(t)
            }
            (None, Some(base)) => {
                if !dn_ok(&base) {
                    return Err(invalid(&key("user_base"), "must be a DN"));
                }
                let scope = match d.user_scope.as_deref().unwrap_or("sub") {
                    "sub" => UserScope::Subtree,
                    "one" => UserScope::OneLevel,
                    other => {
                        return Err(invalid(
                            &key("user_scope"),
                            format!("{other:?}: use \"sub\" or \"one\""),
                        ))
                    }
                };
                let filter = d.user_filter.unwrap_or_else(|| {
                    if ad {
                        "(&(objectClass=user)(sAMAccountName={username}))".to_owned()
                    } else {
                        "(&(objectClass=person)(uid={username}))".to_owned()
                    }
                });
                filter_ok(&filter, &["{username}"]).map_err(|p| invalid(&key("user_filter"), p))?;
                UserLookup::Search {
                    base,
                    scope,
                    filter,
                }
            }
            (None, None) => {
                return Err(invalid(
                    &key("user_base"),
                    "is required (or user_dn, a DN template)",
                ))
            }
        };
        let group_attribute = d.group_attribute.unwrap_or_else(|| "memberOf".to_owned());
        let group_attribute = if group_attribute.is_empty() {
            None
        } else if attribute_ok(&group_attribute) {
            Some(group_attribute)
        } else {
            return Err(invalid(
                &key("group_attribute"),
                "must be an attribute name, or \"\" to read no group attribute",
            ));
        };
        let group_search = match (d.group_base, d.group_filter) {
            (None, None) => None,
            (Some(base), filter) => {
                if !dn_ok(&base) {
                    return Err(invalid(&key("group_base"), "must be a DN"));
                }
                let filter = filter.unwrap_or_else(|| {
                    "(|(&(objectClass=groupOfNames)(member={dn}))(&(objectClass=groupOfUniqueNames)(uniqueMember={dn}))(&(objectClass=posixGroup)(memberUid={username})))".to_owned()
                });
                filter_ok(&filter, &["{dn}", "{username}"])
                    .map_err(|p| invalid(&key("group_filter"), p))?;
                Some(GroupSearch { base, filter })
            }
            (None, Some(_)) => {
                return Err(invalid(
                    &key("group_base"),
                    "group_filter is set: set group_base too",
                ))
            }
        };
        let group_name_attribute = attribute("group_name_attribute", d.group_name_attribute, "cn")?;
        let groups_prefix = d.groups_prefix.unwrap_or_else(|| format!("{name}:"));
        if groups_prefix.len() > 64
            || groups_prefix
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ',')
        {
            return Err(invalid(
                &key("groups_prefix"),
                "must be at most 64 characters, no spaces or commas",
            ));
        }
        let max_groups = d.max_groups.unwrap_or(1000);
        if max_groups == 0 || max_groups > MAX_GROUPS_LIMIT {
            return Err(invalid(
                &key("max_groups"),
                format!("must be between 1 and {MAX_GROUPS_LIMIT}"),
            ));
        }
        let revalidate = duration(&key("revalidate"), d.revalidate, Duration::from_secs(300))?;
        if revalidate > Duration::from_secs(86_400) {
            return Err(invalid(&key("revalidate"), "must be at most 1d"));
        }
        let cache_ttl = duration(&key("cache_ttl"), d.cache_ttl, Duration::from_secs(30))?;
        if cache_ttl > Duration::from_secs(300) {
            return Err(invalid(
                &key("cache_ttl"),
                "must be at most 5m: a disabled user keeps access this long",
            ));
        }
        let timeout = |k: &str, v: Option<String>| -> Result<Duration, ConfigError> {
            let t = duration(&key(k), v, Duration::from_secs(5))?;
            if t.is_zero() || t > Duration::from_secs(60) {
                return Err(invalid(&key(k), "must be between 1s and 60s"));
            }
            Ok(t)
        };
        let connect_timeout = timeout("connect_timeout", d.connect_timeout)?;
        let search_timeout = timeout("search_timeout", d.search_timeout)?;
        let pool_size = d.pool_size.unwrap_or(8);
        if pool_size == 0 || pool_size > 64 {
            return Err(invalid(&key("pool_size"), "must be between 1 and 64"));
        }
        out.push(DirectoryConfig {
            name,
            urls,
            ca_file: d.ca_file,
            bind,
            user,
            username_attribute,
            group_attribute,
            group_search,
            group_name_attribute,
            groups_prefix,
            max_groups,
            revalidate,
            cache_ttl,
            connect_timeout,
            search_timeout,
            pool_size,
        });
    }
    if !out.is_empty() && !order.contains(&Backend::Ldap) {
        return Err(invalid(
            "auth_order",
            "[[ldap]] is configured but auth_order does not list \"ldap\"",
        ));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "ldap_tests.rs"]
mod tests;
