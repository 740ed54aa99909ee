//! The configuration as written: every key the file (and the environment) may
//! set, before defaults and checks. Adding a field here adds a file key and its
//! `BERTH_*` variable at once (see `load`).

use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::types::KeyIdMode;

/// Top-level keys whose values are arrays of tables; they come from the file
/// only (`BERTH_SERVICE` is the one historic exception, see `validate`).
pub(super) const TABLE_KEYS: &[&str] = &["service", "oidc", "ldap"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub database: Option<String>,
    /// A file holding the database URL (it may hold a password).
    pub database_file: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    pub policies_dir: Option<PathBuf>,
    pub issuer: Option<String>,
    pub token_ttl: Option<String>,
    pub token_reuse: Option<String>,
    pub refresh_idle: Option<String>,
    pub refresh_absolute: Option<String>,
    pub credential_cache_ttl: Option<String>,
    pub credential_cache_size: Option<u64>,
    pub max_scopes: Option<usize>,
    pub hash_concurrency: Option<usize>,
    pub robot_prefix: Option<String>,
    pub login_failure_limit: Option<i64>,
    pub login_failure_window: Option<String>,
    pub login_failure_account_limit: Option<i64>,
    pub login_failure_address_limit: Option<i64>,
    pub hash_queue_timeout: Option<String>,
    pub refusal_floor: Option<String>,
    pub audit_retention: Option<String>,
    pub audit_queue: Option<usize>,
    pub audit_required: Option<bool>,
    pub audit_fold_window: Option<String>,
    pub generation_listener: Option<bool>,
    pub key_publish_delay: Option<String>,
    pub metrics_listen: Option<String>,
    #[serde(default, deserialize_with = "list_or_commas")]
    pub trusted_proxies: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub shutdown_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    #[serde(default, rename = "service")]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub oidc: Vec<crate::config::oidc::RawProvider>,
    #[serde(default)]
    pub ldap: Vec<crate::config::ldap::RawDirectory>,
    #[serde(default, deserialize_with = "list_or_commas")]
    pub auth_order: Option<Vec<String>>,
    pub name_conflict: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub name: String,
    #[serde(default)]
    pub key_id: KeyIdMode,
    #[serde(default)]
    pub expand_wildcard: bool,
    #[serde(default)]
    pub audience_list: bool,
    #[serde(default)]
    pub registry_url: Option<String>,
}

/// A list written as a TOML array, or as one comma-separated string (the form
/// an environment variable gives).
fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(Some(out))
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_option(ListVisitor)
}

/// The top-level keys of [`RawConfig`], read from its `Deserialize` impl so the
/// list can never fall behind the struct.
pub(super) fn keys() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names read")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = RawConfig::deserialize(&mut fields);
    fields.0.unwrap_or(&[])
}

/// The `BERTH_*` variable of a top-level key: `BERTH_` and the key in capitals.
pub fn env_var(key: &str) -> String {
    format!("BERTH_{}", key.to_ascii_uppercase())
}
