//! The effective configuration as TOML, each value followed by its source,
//! for `berth config show`. Secrets never appear: the database URL is shown
//! with its password replaced, and `[[oidc]]`/`[[ldap]]` secrets only by the
//! file or variable that holds them.

use std::fmt::Write as _;

use super::types::format_duration;
use super::{Config, Loaded, Source};

/// Renders `loaded` as TOML with a `# source` comment on every setting.
pub fn render(loaded: &Loaded) -> String {
    let c = &loaded.config;
    let mut out = String::from(
        "# Effective configuration: environment over file over default.\n\
         # Secrets are redacted.\n",
    );
    for (key, value) in settings(c) {
        let source = loaded.sources.of(key);
        let setting = match value {
            Some(value) => format!("{key} = {value}"),
            None => format!("# {key} is not set"),
        };
        let _ = writeln!(out, "{setting:<52} # {source}");
    }
    let from_env = loaded.sources.of("BERTH_SERVICE");
    for (i, s) in c.services.iter().enumerate() {
        let source = match from_env {
            Source::Env(_) if i == 0 => from_env,
            _ => loaded.sources.of("service"),
        };
        let _ = write!(
            out,
            "\n[[service]]                                          # {source}\nname = {}\nkey_id = {}\nexpand_wildcard = {}\naudience_list = {}\n",
            quote(&s.name),
            quote(s.key_id.as_str()),
            s.expand_wildcard,
            s.audience_list,
        );
        if let Some(url) = &s.registry_url {
            let _ = writeln!(out, "registry_url = {}", quote(url));
        }
    }
    for p in &c.oidc.providers {
        let _ = write!(
            out,
            "\n[[oidc]]                                             # {}\nname = {}\nissuer = {}\nclient_id = {}\n{}\n",
            loaded.sources.of("oidc"),
            quote(&p.name),
            quote(&p.issuer),
            quote(&p.client_id),
            secret_line("client_secret", &p.client_secret),
        );
    }
    for d in &c.ldap {
        let urls: Vec<String> = d.urls.iter().map(|u| quote(&u.url)).collect();
        let _ = write!(
            out,
            "\n[[ldap]]                                             # {}\nname = {}\nurl = [{}]\n",
            loaded.sources.of("ldap"),
            quote(&d.name),
            urls.join(", "),
        );
        if let Some((dn, secret)) = &d.bind {
            let _ = writeln!(
                out,
                "bind_dn = {}\n{}",
                quote(dn),
                secret_line("bind_password", secret)
            );
        }
    }
    out
}

fn secret_line(key: &str, source: &crate::config::oidc::SecretSource) -> String {
    use crate::config::oidc::SecretSource;
    match source {
        SecretSource::File(p) => format!("{key}_file = {}", quote(&p.display().to_string())),
        SecretSource::Env(v) => format!("{key}_env = {}", quote(v)),
    }
}

fn quote(s: &str) -> String {
    // TOML basic strings share JSON's escapes for what a setting may hold.
    serde_json::to_string(s).unwrap_or_default()
}

fn dur(d: std::time::Duration) -> String {
    quote(&format_duration(d))
}

/// Every top-level scalar setting and its effective value, as TOML (`None`:
/// not set).
fn settings(c: &Config) -> Vec<(&'static str, Option<String>)> {
    let path = |p: &std::path::Path| quote(&p.display().to_string());
    let order: Vec<&str> = c
        .oidc
        .order
        .iter()
        .map(|b| match b {
            crate::config::oidc::Backend::Local => "local",
            crate::config::oidc::Backend::Oidc => "oidc",
            crate::config::oidc::Backend::Ldap => "ldap",
        })
        .collect();
    let proxies: Vec<String> = c
        .trusted_proxies
        .iter()
        .map(|n| quote(&n.to_string()))
        .collect();
    vec![
        ("listen", Some(quote(&c.listen.to_string()))),
        ("public_url", Some(quote(&c.public_url))),
        // Display redacts the password of a PostgreSQL URL.
        ("database", Some(quote(&c.database.to_string()))),
        ("keys_dir", Some(path(&c.keys_dir))),
        ("policies_dir", Some(path(&c.policies_dir))),
        ("issuer", Some(quote(&c.issuer))),
        ("token_ttl", Some(dur(c.token_ttl))),
        ("token_reuse", Some(dur(c.token_reuse))),
        ("refresh_idle", Some(dur(c.refresh_idle))),
        ("refresh_absolute", Some(dur(c.refresh_absolute))),
        ("key_publish_delay", Some(dur(c.key_publish_delay))),
        ("credential_cache_ttl", Some(dur(c.credential_cache_ttl))),
        (
            "credential_cache_size",
            Some(c.credential_cache_size.to_string()),
        ),
        ("max_scopes", Some(c.max_scopes.to_string())),
        ("hash_concurrency", Some(c.hash_concurrency.to_string())),
        ("hash_queue_timeout", Some(dur(c.hash_queue_timeout))),
        ("refusal_floor", Some(dur(c.refusal_floor))),
        ("robot_prefix", Some(quote(&c.robot_prefix))),
        (
            "login_failure_limit",
            Some(c.login_failure_limit.to_string()),
        ),
        ("login_failure_window", Some(dur(c.login_failure_window))),
        (
            "login_failure_account_limit",
            Some(c.login_failure_account_limit.to_string()),
        ),
        (
            "login_failure_address_limit",
            Some(c.login_failure_address_limit.to_string()),
        ),
        ("audit_retention", Some(dur(c.audit_retention))),
        ("audit_queue", Some(c.audit_queue.to_string())),
        ("audit_required", Some(c.audit_required.to_string())),
        ("audit_fold_window", Some(dur(c.audit_fold_window))),
        (
            "generation_listener",
            Some(c.generation_listener.to_string()),
        ),
        (
            "metrics_listen",
            c.metrics_listen.map(|a| quote(&a.to_string())),
        ),
        ("trusted_proxies", Some(format!("[{}]", proxies.join(", ")))),
        ("tls_cert", c.tls.as_ref().map(|t| path(&t.cert))),
        ("tls_key", c.tls.as_ref().map(|t| path(&t.key))),
        ("shutdown_timeout", Some(dur(c.shutdown_timeout))),
        ("header_read_timeout", Some(dur(c.edge.header_read_timeout))),
        ("body_read_timeout", Some(dur(c.edge.body_read_timeout))),
        ("request_timeout", Some(dur(c.edge.request_timeout))),
        ("idle_timeout", Some(dur(c.edge.idle_timeout))),
        ("max_connections", Some(c.edge.max_connections.to_string())),
        (
            "max_connections_per_address",
            Some(c.edge.max_connections_per_address.to_string()),
        ),
        (
            "auth_order",
            Some(format!(
                "[{}]",
                order
                    .iter()
                    .map(|s| quote(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        (
            "name_conflict",
            Some(quote(match c.oidc.name_conflict {
                crate::config::oidc::NameConflict::Refuse => "refuse",
                crate::config::oidc::NameConflict::Allow => "allow",
            })),
        ),
    ]
}
