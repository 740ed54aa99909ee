//! Reading policy files: `*.toml` in the policy directory, each holding `[[rule]]`
//! tables. Every problem is reported as `file:line:column: reason`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::pattern::Pattern;
use super::{Kind, Policy, Rule};

/// Largest policy file accepted.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Actions registries are known to ask for; others load with a warning.
pub const KNOWN_ACTIONS: &[&str] = &["pull", "push", "delete", "*"];

/// A policy loading problem, with its location when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct PolicyError {
    /// `file`, `file:line:column`, or the directory.
    pub location: String,
    /// One-line reason.
    pub reason: String,
}

/// A loaded policy and the warnings found while loading it.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The policy.
    pub policy: Policy,
    /// Non-fatal findings (e.g. unknown actions), one line each.
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<Spanned<String>>,
    description: Option<String>,
    account: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    kind: Option<Spanned<OneOrMany>>,
    service: Option<Spanned<String>>,
    ip: Option<Spanned<OneOrMany>>,
    #[serde(rename = "type")]
    resource_type: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

/// Converts a byte offset to a 1-based line and column.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

struct FileCtx<'a> {
    name: String,
    stem: String,
    text: &'a str,
}

impl FileCtx<'_> {
    fn at(&self, offset: usize, reason: impl Into<String>) -> PolicyError {
        let (line, col) = line_col(self.text, offset);
        PolicyError {
            location: format!("{}:{line}:{col}", self.name),
            reason: reason.into(),
        }
    }

    fn pattern(
        &self,
        field: Option<Spanned<String>>,
        placeholders: bool,
    ) -> Result<Option<Pattern>, PolicyError> {
        field
            .map(|s| {
                Pattern::compile(s.get_ref(), placeholders).map_err(|e| self.at(s.span().start, e))
            })
            .transpose()
    }

    fn actions(
        &self,
        list: Vec<Spanned<String>>,
        warnings: &mut Vec<String>,
    ) -> Result<BTreeSet<String>, PolicyError> {
        let mut out = BTreeSet::new();
        for a in list {
            let valid = !a.get_ref().is_empty()
                && a.get_ref().len() <= 32
                && (a.get_ref() == "*" || a.get_ref().bytes().all(|b| b.is_ascii_lowercase()));
            if !valid {
                return Err(self.at(a.span().start, format!("invalid action {:?}", a.get_ref())));
            }
            if !KNOWN_ACTIONS.contains(&a.get_ref().as_str()) {
                let (line, col) = line_col(self.text, a.span().start);
                warnings.push(format!(
                    "{}:{line}:{col}: unknown action {:?} (registries ask for pull, push, delete, *)",
                    self.name,
                    a.get_ref()
                ));
            }
            out.insert(a.into_inner());
        }
        Ok(out)
    }

    fn rule(
        &self,
        index: usize,
        raw: Spanned<RawRule>,
        warnings: &mut Vec<String>,
    ) -> Result<Rule, PolicyError> {
        let start = raw.span().start;
        let raw = raw.into_inner();
        let id = match raw.id {
            Some(id) => {
                let s = id.get_ref();
                if s.is_empty()
                    || s.len() > 128
                    || s.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(self.at(
                        id.span().start,
                        "rule id must be 1-128 printable characters without spaces",
                    ));
                }
                id.into_inner()
            }
            None => format!("{}#{}", self.stem, index + 1),
        };
        let kinds = match raw.kind {
            None => None,
            Some(k) => {
                let at = k.span().start;
                let list = match k.into_inner() {
                    OneOrMany::One(s) => vec![s],
                    OneOrMany::Many(v) => v,
                };
                let mut kinds = Vec::new();
                for s in list {
                    let kind = match s.as_str() {
                        "user" => Kind::User,
                        "robot" => Kind::Robot,
                        "anonymous" => Kind::Anonymous,
                        "federated" => Kind::Federated,
                        "directory" => Kind::Directory,
                        other => {
                            return Err(self.at(
                                at,
                                format!(
                                    "unknown kind {other:?} (user, robot, anonymous, federated, directory)"
                                ),
                            ))
                        }
                    };
                    kinds.push(kind);
                }
                Some(kinds)
            }
        };
        let resource_type = match raw.resource_type {
            Some(t) => {
                let ok = !t.get_ref().is_empty()
                    && t.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !ok {
                    return Err(
                        self.at(t.span().start, "type must be lowercase letters and digits")
                    );
                }
                Some(t.into_inner())
            }
            None => None,
        };
        let ip = match raw.ip {
            None => None,
            Some(list) => {
                let at = list.span().start;
                let list = match list.into_inner() {
                    OneOrMany::One(s) => vec![s],
                    OneOrMany::Many(v) => v,
                };
                if list.is_empty() {
                    return Err(self.at(at, "ip must list at least one address range"));
                }
                let mut nets = Vec::new();
                for s in list {
                    let net = s
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            self.at(at, format!("{s:?} is not an IP address or CIDR range"))
                        })?;
                    nets.push(net.trunc());
                }
                Some(nets)
            }
        };
        let allow = self.actions(raw.allow, warnings)?;
        let deny = self.actions(raw.deny, warnings)?;
        if allow.is_empty() && deny.is_empty() {
            return Err(self.at(start, format!("rule {id} has neither allow nor deny")));
        }
        Ok(Rule {
            account: self.pattern(raw.account, false)?,
            group: self.pattern(raw.group, false)?,
            service: self.pattern(raw.service, false)?,
            name: self.pattern(raw.name, true)?,
            id,
            description: raw.description,
            kinds,
            ip,
            resource_type,
            allow,
            deny,
        })
    }
}

/// Parses one policy file's text; `name` is used in error locations.
pub fn parse_file(name: &str, text: &str) -> Result<Loaded, PolicyError> {
    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name)
        .to_owned();
    let ctx = FileCtx {
        name: name.to_owned(),
        stem,
        text,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        // One line: the parser's message may span several.
        let reason = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(span) => ctx.at(span.start, reason),
            None => PolicyError {
                location: name.to_owned(),
                reason,
            },
        }
    })?;
    let mut warnings = Vec::new();
    let mut rules = Vec::new();
    for (i, r) in raw.rule.into_iter().enumerate() {
        rules.push(ctx.rule(i, r, &mut warnings)?);
    }
    let mut ids = HashSet::new();
    for rule in &rules {
        if !ids.insert(rule.id.as_str()) {
            return Err(PolicyError {
                location: name.to_owned(),
                reason: format!("duplicate rule id {:?}", rule.id),
            });
        }
    }
    Ok(Loaded {
        policy: Policy::new(rules),
        warnings,
    })
}

/// Loads every `*.toml` file directly in `dir` (sorted by name) into one policy.
pub fn load_dir(dir: &Path) -> Result<Loaded, PolicyError> {
    let dir_err = |reason: String| PolicyError {
        location: dir.display().to_string(),
        reason,
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| dir_err(format!("cannot read policy directory: {e}")))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| dir_err(e.to_string()))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut rules: Vec<Rule> = Vec::new();
    let mut warnings = Vec::new();
    let mut ids = HashSet::new();
    for path in files {
        let name = path.display().to_string();
        let file_err = |reason: String| PolicyError {
            location: name.clone(),
            reason,
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| file_err(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(file_err(format!("file larger than {MAX_FILE_BYTES} bytes")));
        }
        let bytes = std::fs::read(&path).map_err(|e| file_err(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| file_err("not UTF-8 text".into()))?;
        let loaded = parse_file(&name, &text)?;
        if loaded.policy.rules().is_empty() {
            warnings.push(format!("{name}: no rules"));
        }
        for rule in loaded.policy.rules() {
            if !ids.insert(rule.id.clone()) {
                return Err(file_err(format!("duplicate rule id {:?}", rule.id)));
            }
        }
        rules.extend(loaded.policy.rules().iter().cloned());
        warnings.extend(loaded.warnings);
    }
    Ok(Loaded {
        policy: Policy::new(rules),
        warnings,
    })
}
