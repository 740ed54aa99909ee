//! `[[oidc]]` provider settings: the raw TOML shape and the validated form, plus the
//! top-level `auth_order` and `name_conflict` settings that place OIDC providers in
//! the authentication chain.
//!
//! This module validates; it reads no secret. The client secret is named here (file
//! or environment variable) and read when the provider is built, so a config dump or
//! a parse error can never show it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, ConfigError};

/// One `[[oidc]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    name: Option<String>,
    display_name: Option<String>,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<toml::Value>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    ca_file: Option<PathBuf>,
    username_claim: Option<String>,
    groups_claim: Option<String>,
    groups_prefix: Option<String>,
    strip_group_slash: Option<bool>,
    realm_roles: Option<bool>,
    realm_roles_prefix: Option<String>,
    client_roles: Option<Vec<String>>,
    client_roles_prefix: Option<String>,
    password_grant: Option<bool>,
    offline_sessions: Option<bool>,
    token_as_password: Option<bool>,
    audiences: Option<Vec<String>>,
    token_username: Option<String>,
    browser_login: Option<bool>,
    revalidate: Option<String>,
    timeout: Option<String>,
    grant_cache_ttl: Option<String>,
    jwks_min_refetch: Option<String>,
}

/// Where the client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// First line of a file (trailing newline ignored).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// What the username of a token-as-password login must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUsername {
    /// Must equal the token's username claim.
    Match,
    /// Any username; the token alone says who it is.
    Ignore,
}

/// Which backend a password is tried against, in `auth_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// berth's own user database.
    Local,
    /// The `[[oidc]]` providers, in the order configured.
    Oidc,
    /// The `[[ldap]]` directories, in the order configured.
    Ldap,
}

/// What happens when a federated login carries the name of a local account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameConflict {
    /// Refuse the federated login (default): a provider account can never take
    /// over a local name, and a local user's password is never sent to a provider.
    Refuse,
    /// Allow it; the first backend in `auth_order` that accepts the password wins.
    Allow,
}

/// One validated provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Short name (`[a-z0-9-]`), used in logs and on the sign-in page.
    pub name: String,
    /// Name shown on the sign-in button.
    pub display_name: String,
    /// Issuer URL, without a trailing slash; discovery is under it.
    pub issuer: String,
    /// OAuth client id of berth at the provider.
    pub client_id: String,
    /// Where the client secret is read from.
    pub client_secret: SecretSource,
    /// Extra CA certificates (PEM) trusted for the provider's https.
    pub ca_file: Option<PathBuf>,
    /// Claim that holds the username.
    pub username_claim: String,
    /// Claim with group names (`None`: groups are not read).
    pub groups_claim: Option<String>,
    /// Prefix put before every group name: `<name>:` unless configured, so a
    /// provider's groups never share a name with local groups by accident.
    pub groups_prefix: String,
    /// Drop the leading `/` of Keycloak group paths (`/team-a` → `team-a`).
    pub strip_group_slash: bool,
    /// Read `realm_access.roles`.
    pub realm_roles: bool,
    /// Prefix put before realm role names.
    pub realm_roles_prefix: String,
    /// Clients whose `resource_access.<client>.roles` become groups.
    pub client_roles: Vec<String>,
    /// Prefix put before client role names.
    pub client_roles_prefix: String,
    /// Passwords are checked with the provider's direct grant.
    pub password_grant: bool,
    /// Direct grants ask for `offline_access`, so docker sessions outlive the
    /// provider's SSO session (they still end when the user is disabled).
    pub offline_sessions: bool,
    /// A provider-issued access token is accepted as the password.
    pub token_as_password: bool,
    /// Audiences a token-as-password must carry (one of them).
    pub audiences: Vec<String>,
    /// Username rule for token-as-password logins.
    pub token_username: TokenUsername,
    /// `/login` offers this provider.
    pub browser_login: bool,
    /// Federated sessions and browser tokens are re-checked with the provider at
    /// most this often.
    pub revalidate: Duration,
    /// Timeout of every call to the provider.
    pub timeout: Duration,
    /// How long a successful direct grant is remembered (zero: never).
    pub grant_cache_ttl: Duration,
    /// Least time between two JWKS fetches caused by unknown key ids.
    pub jwks_min_refetch: Duration,
}

/// The OIDC part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// Providers, in the order they are tried.
    pub providers: Vec<ProviderConfig>,
    /// Order in which passwords are checked.
    pub order: Vec<Backend>,
    /// Local/federated name clashes.
    pub name_conflict: NameConflict,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            providers: Vec::new(),
            order: vec![Backend::Local, Backend::Oidc, Backend::Ldap],
            name_conflict: NameConflict::Refuse,
        }
    }
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

fn printable(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

fn duration(key: &str, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        Some(v) => parse_duration(&v).map_err(|p| invalid(key, p)),
        None => Ok(default),
    }
}

/// Validates the `[[oidc]]` entries with the top-level `auth_order` and
/// `name_conflict` settings.
pub fn validate(
    raw: Vec<RawProvider>,
    auth_order: Option<Vec<String>>,
    name_conflict: Option<String>,
) -> Result<OidcSettings, ConfigError> {
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("oidc[{i}].{k}");
        let name = p.name.unwrap_or_else(|| "oidc".to_owned());
        if !name_ok(&name) {
            return Err(invalid(
                &key("name"),
                "use 1-32 lowercase letters, digits or '-'",
            ));
        }
        if providers.iter().any(|x| x.name == name) {
            return Err(invalid(
                &key("name"),
                format!("provider {name:?} is listed twice; give each [[oidc]] a distinct name"),
            ));
        }
        let issuer = p
            .issuer
            .ok_or_else(|| invalid(&key("issuer"), "is required"))?
            .trim_end_matches('/')
            .to_owned();
        if !(issuer.starts_with("https://") || issuer.starts_with("http://"))
            || !printable(&issuer, 1024)
            || issuer.contains(char::is_whitespace)
        {
            return Err(invalid(
                &key("issuer"),
                "must be an http(s) URL such as https://sso.example.com/realms/acme",
            ));
        }
        let client_id = p
            .client_id
            .ok_or_else(|| invalid(&key("client_id"), "is required"))?;
        if !printable(&client_id, 256) {
            return Err(invalid(&key("client_id"), "must be a printable name"));
        }
        if p.client_secret.is_some() {
            // Deliberately no echo of the value.
            return Err(invalid(
                &key("client_secret"),
                "secrets are not accepted inline; use client_secret_file or client_secret_env",
            ));
        }
        let client_secret = match (p.client_secret_file, p.client_secret_env) {
            (Some(f), None) => SecretSource::File(f),
            (None, Some(v)) if !v.trim().is_empty() => SecretSource::Env(v),
            (None, None) | (None, Some(_)) => {
                return Err(invalid(
                    &key("client_secret_file"),
                    "set client_secret_file or client_secret_env",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &key("client_secret_env"),
                    "set only one of client_secret_file and client_secret_env",
                ))
            }
        };
        let claim = |k: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| default.to_owned());
            if v.len() > 128 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(invalid(&key(k), "must be a claim name"));
            }
            Ok(v)
        };
        let prefix = |k: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
            let v = v.unwrap_or_else(|| default.to_owned());
            if v.len() > 64
                || v.chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == ',')
            {
                return Err(invalid(
                    &key(k),
                    "must be at most 64 characters, no spaces or commas",
                ));
            }
            Ok(v)
        };
        let username_claim = claim("username_claim", p.username_claim, "preferred_username")?;
        if username_claim.is_empty() {
            return Err(invalid(&key("username_claim"), "must not be empty"));
        }
        let groups_claim = claim("groups_claim", p.groups_claim, "groups")?;
        let token_username = match p.token_username.as_deref().unwrap_or("match") {
            "match" => TokenUsername::Match,
            "ignore" => TokenUsername::Ignore,
            other => {
                return Err(invalid(
                    &key("token_username"),
                    format!("{other:?}: use \"match\" or \"ignore\""),
                ))
            }
        };
        let audiences = p.audiences.unwrap_or_else(|| vec![client_id.clone()]);
        if audiences.is_empty() || audiences.iter().any(|a| !printable(a, 256)) {
            return Err(invalid(
                &key("audiences"),
                "must list at least one audience",
            ));
        }
        let revalidate = duration(&key("revalidate"), p.revalidate, Duration::from_secs(300))?;
        if revalidate > Duration::from_secs(86_400) {
            return Err(invalid(&key("revalidate"), "must be at most 1d"));
        }
        let timeout = duration(&key("timeout"), p.timeout, Duration::from_secs(5))?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(invalid(&key("timeout"), "must be between 1s and 60s"));
        }
        let grant_cache_ttl = duration(
            &key("grant_cache_ttl"),
            p.grant_cache_ttl,
            Duration::from_secs(30),
        )?;
        if grant_cache_ttl > Duration::from_secs(300) {
            return Err(invalid(
                &key("grant_cache_ttl"),
                "must be at most 5m: a disabled user keeps access this long",
            ));
        }
        let jwks_min_refetch = duration(
            &key("jwks_min_refetch"),
            p.jwks_min_refetch,
            Duration::from_secs(10),
        )?;
        if let Some(d) = &p.display_name {
            if !printable(d, 64) {
                return Err(invalid(
                    &key("display_name"),
                    "must be 1-64 printable characters",
                ));
            }
        }
        let client_roles = p.client_roles.unwrap_or_else(|| vec![client_id.clone()]);
        // Namespaced by default: a provider group `/admins` arrives as
        // `keycloak:admins`, never as the local group `admins`.
        let groups_prefix = prefix("groups_prefix", p.groups_prefix, &format!("{name}:"))?;
        providers.push(ProviderConfig {
            display_name: p.display_name.unwrap_or_else(|| name.clone()),
            name,
            issuer,
            client_id,
            client_secret,
            ca_file: p.ca_file,
            username_claim,
            groups_claim: (!groups_claim.is_empty()).then_some(groups_claim),
            groups_prefix,
            strip_group_slash: p.strip_group_slash.unwrap_or(true),
            realm_roles: p.realm_roles.unwrap_or(true),
            realm_roles_prefix: prefix("realm_roles_prefix", p.realm_roles_prefix, "role:")?,
            client_roles,
            client_roles_prefix: prefix("client_roles_prefix", p.client_roles_prefix, "role:")?,
            password_grant: p.password_grant.unwrap_or(true),
            offline_sessions: p.offline_sessions.unwrap_or(false),
            token_as_password: p.token_as_password.unwrap_or(true),
            audiences,
            token_username,
            browser_login: p.browser_login.unwrap_or(true),
            revalidate,
            timeout,
            grant_cache_ttl,
            jwks_min_refetch,
        });
    }

    let order = match auth_order {
        None => vec![Backend::Local, Backend::Oidc, Backend::Ldap],
        Some(list) => {
            let mut order = Vec::new();
            for s in &list {
                let b = match s.as_str() {
                    "local" => Backend::Local,
                    "oidc" => Backend::Oidc,
                    "ldap" => Backend::Ldap,
                    other => {
                        return Err(invalid(
                            "auth_order",
                            format!(
                                "unknown backend {other:?} (use \"local\", \"oidc\" and \"ldap\")"
                            ),
                        ))
                    }
                };
                if order.contains(&b) {
                    return Err(invalid("auth_order", format!("{s:?} is listed twice")));
                }
                order.push(b);
            }
            if !order.contains(&Backend::Local) {
                return Err(invalid(
                    "auth_order",
                    "must include \"local\" (the first admin and robots are local)",
                ));
            }
            order
        }
    };
    let name_conflict = match name_conflict.as_deref().unwrap_or("refuse") {
        "refuse" => NameConflict::Refuse,
        "allow" => NameConflict::Allow,
        other => {
            return Err(invalid(
                "name_conflict",
                format!("{other:?}: use \"refuse\" or \"allow\""),
            ))
        }
    };
    Ok(OidcSettings {
        providers,
        order,
        name_conflict,
    })
}

#[cfg(test)]
#[path = "oidc_tests.rs"]
mod tests;
