//! Layering: where each setting comes from. Three layers, later ones winning:
//! the built-in default, the TOML file, then the environment.
//!
//! The uniform rule: every top-level key `some_key` of the file may also be set
//! by the variable `BERTH_SOME_KEY`. Lists (`trusted_proxies`, `auth_order`)
//! take a comma-separated value there. The arrays of tables (`[[service]]`,
//! `[[oidc]]`, `[[ldap]]`) come from the file only, except the historic
//! `BERTH_SERVICE`/`BERTH_SERVICE_KEY_ID` pair. A secret `key` may instead be
//! read from the file named by `key_file` (`BERTH_KEY_FILE`): today the
//! `database` URL; `[[oidc]]` and `[[ldap]]` secrets have their own `*_file`
//! keys, and `BERTH_ADMIN_PASSWORD` its `BERTH_ADMIN_PASSWORD_FILE`.
//!
//! The file is checked strictly first (unknown keys and wrong types stop berth
//! with the parser's line, column and caret diagram); the layers are then
//! merged with figment, which also remembers the source of every value for
//! `berth config show` and for error messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::raw::{self, env_var, RawConfig, TABLE_KEYS};
use super::{invalid, ConfigError, Env};

const FILE_LAYER: &str = "file";
const ENV_LAYER: &str = "environment";

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not configured: the built-in default (or one derived from other settings).
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A secret read from a file, named by the key or variable given.
    SecretFile {
        /// `database_file` or `BERTH_DATABASE_FILE`.
        named_by: String,
        /// The file read.
        path: PathBuf,
    },
}

impl Source {
    /// Layer order: environment over file over default.
    fn rank(&self) -> u8 {
        match self {
            Source::Default => 0,
            Source::File(_) => 1,
            Source::Env(_) => 2,
            Source::SecretFile { named_by, .. } => {
                if named_by.starts_with("BERTH_") {
                    2
                } else {
                    1
                }
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::SecretFile { named_by, path } => {
                write!(f, "file {} named by {named_by}", path.display())
            }
        }
    }
}

/// The source of every top-level setting.
#[derive(Debug, Clone, Default)]
pub struct Sources(BTreeMap<String, Source>);

impl Sources {
    /// Where `key` came from ([`Source::Default`] when nothing set it).
    pub fn of(&self, key: &str) -> &Source {
        self.0.get(key).unwrap_or(&Source::Default)
    }

    fn set(&mut self, key: &str, source: Source) {
        self.0.insert(key.to_owned(), source);
    }
}

/// The merged settings before validation, and where each came from.
pub(super) struct Layered {
    pub raw: RawConfig,
    pub sources: Sources,
    /// Warnings about secret files others can read.
    pub warnings: Vec<String>,
}

/// The file as parsed, for figment.
struct FileLayer {
    path: PathBuf,
    data: Dict,
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(FILE_LAYER).source(self.path.as_path())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.data.clone())]))
    }
}

/// The `BERTH_*` variables that name a setting.
struct EnvLayer {
    data: Dict,
}

impl EnvLayer {
    fn read(env: &dyn Env) -> Self {
        let data = raw::keys()
            .iter()
            .filter(|k| !TABLE_KEYS.contains(k))
            .filter_map(|k| Some((k.to_string(), Value::from(env.var(&env_var(k))?))))
            .collect();
        EnvLayer { data }
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_LAYER).interpolater(|_: &Profile, keys: &[&str]| {
            keys.first().map(|k| env_var(k)).unwrap_or_default()
        })
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.data.clone())]))
    }
}

/// Parses the file strictly, then merges it with the environment.
pub(super) fn layer(file: Option<(&Path, &str)>, env: &dyn Env) -> Result<Layered, ConfigError> {
    let mut figment = Figment::new();
    if let Some((path, text)) = file {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        };
        // Strict first: the parser's errors carry line, column and a caret.
        toml::from_str::<RawConfig>(text).map_err(parse_error)?;
        let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        let data = match Value::serialize(&table) {
            Ok(Value::Dict(_, dict)) => dict,
            _ => Dict::new(),
        };
        figment = figment.merge(FileLayer {
            path: path.to_owned(),
            data,
        });
    }
    figment = figment.merge(EnvLayer::read(env));
    // Lossy: an environment variable is a string; `"32"` serves a number.
    let mut raw: RawConfig = figment.extract_lossy().map_err(|e| from_figment(&e))?;

    let mut sources = Sources::default();
    for key in raw::keys() {
        if let Some(meta) = figment.find_metadata(key) {
            let source = if meta.name == ENV_LAYER {
                Source::Env(env_var(key))
            } else {
                match file {
                    Some((path, _)) => Source::File(path.to_owned()),
                    None => Source::Default,
                }
            };
            sources.set(key, source);
        }
    }
    if env.var("BERTH_SERVICE").is_some() {
        // The service it names comes first; the others keep their source.
        sources.set("BERTH_SERVICE", Source::Env("BERTH_SERVICE".into()));
    }
    let mut warnings = Vec::new();
    if let Some(value) = secret_setting(
        "database",
        raw.database.take(),
        raw.database_file.take(),
        &mut sources,
        &mut warnings,
    )? {
        raw.database = Some(value);
    }
    Ok(Layered {
        raw,
        sources,
        warnings,
    })
}

/// Resolves a secret given inline (`key`) or by file (`key_file`): the higher
/// layer wins, and both in the same layer is an error. A file's trailing line
/// break is dropped.
fn secret_setting(
    key: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    sources: &mut Sources,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let file_key = format!("{key}_file");
    let Some(path) = file else {
        return Ok(inline);
    };
    let named_by = match sources.of(&file_key) {
        Source::Env(var) => var.clone(),
        _ => file_key.clone(),
    };
    let by_file = Source::SecretFile {
        named_by: named_by.clone(),
        path: path.clone(),
    };
    if inline.is_some() {
        let inline_rank = sources.of(key).rank();
        if inline_rank == by_file.rank() {
            return Err(invalid(
                &file_key,
                format!("set only one of {key} and {file_key} ({})", sources.of(key)),
            ));
        }
        if inline_rank > by_file.rank() {
            return Ok(inline);
        }
    }
    let value = read_secret_file(&named_by, &path, warnings)?;
    sources.set(key, by_file);
    Ok(Some(value))
}

/// Reads a secret file: its first line, without the line break. A file the
/// group or others may read is used, with a warning, as berth does for its
/// private keys.
fn read_secret_file(
    named_by: &str,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(named_by, format!("cannot read {}: {e}", path.display())))?;
    warnings.extend(crate::custody::exposed(&[path.to_owned()]));
    let value = text.lines().next().unwrap_or("").to_owned();
    if value.is_empty() {
        return Err(invalid(named_by, format!("{} is empty", path.display())));
    }
    Ok(value)
}

/// A secret that only the environment gives (`BERTH_ADMIN_PASSWORD`): the
/// variable itself, or the file named by `VAR_FILE`; setting both is an error.
/// Returns the value and warnings about the file's mode.
pub fn env_secret(env: &dyn Env, var: &str) -> Result<(Option<String>, Vec<String>), ConfigError> {
    let file_var = format!("{var}_FILE");
    let mut warnings = Vec::new();
    let value = match (env.var(var).filter(|v| !v.is_empty()), env.var(&file_var)) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &file_var,
                format!("set only one of {var} and {file_var}"),
            ))
        }
        (Some(v), None) => Some(v),
        (None, Some(path)) => Some(read_secret_file(
            &file_var,
            Path::new(&path),
            &mut warnings,
        )?),
        (None, None) => None,
    };
    Ok((value, warnings))
}

/// A figment error as a configuration error naming the key and its source.
fn from_figment(e: &figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let from = match &e.metadata {
        Some(m) if m.name == ENV_LAYER => e.path.first().map(|k| env_var(k)),
        Some(m) => m.source.as_ref().map(|s| s.to_string()),
        None => None,
    };
    let problem = match from {
        Some(from) => format!("{} (from {from})", e.kind),
        None => e.kind.to_string(),
    };
    invalid(if key.is_empty() { "?" } else { &key }, problem)
}
