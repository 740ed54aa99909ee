//! Cases for `berth policy diff --cases`: identities and scopes written by hand,
//! replayed instead of the audit log (a new deployment has no history).
//!
//! The format is the policy test file's (`[[case]]` with `account`, `groups`,
//! `kind`, `service`, `ip`, `scope`), so a directory of policy tests can be
//! replayed as it is: `expect` is allowed and ignored. `count` (default 1) weighs
//! a case like the repeat count of a folded audit row.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Differ, Replay};
use crate::policy::load::MAX_FILE_BYTES;
use crate::policy::{Identity, Kind};
use crate::scope::Scope;

/// One case as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayCase {
    /// What the case stands for.
    pub name: Option<String>,
    /// Account (omit for anonymous).
    pub account: Option<String>,
    /// Groups, as policy sees them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Kind; `user` when an account is given, else `anonymous`.
    pub kind: Option<Kind>,
    /// Service; `registry` by default.
    pub service: Option<String>,
    /// Client address.
    pub ip: Option<IpAddr>,
    /// The requested scope.
    pub scope: String,
    /// A test file's expectation: ignored here.
    pub expect: Option<Vec<String>>,
    /// How many requests the case stands for (default 1).
    pub count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<ReplayCase>,
}

/// A case, ready to replay.
#[derive(Debug, Clone)]
pub struct Prepared {
    identity: Identity,
    service: String,
    ip: Option<IpAddr>,
    scopes: Vec<Scope>,
    weight: u64,
}

impl Prepared {
    /// Replays it.
    pub fn replay(&self, differ: &mut Differ<'_>) {
        differ.add(&Replay {
            identity: &self.identity,
            service: &self.service,
            ip: self.ip,
            scopes: &self.scopes,
            weight: self.weight,
        });
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses one cases file's text; `name` is used in errors
/// (`name:line:column: reason`).
pub fn parse(name: &str, text: &str) -> Result<Vec<Prepared>, String> {
    let file: CaseFile = toml::from_str(text).map_err(|e| {
        let reason = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("{name}:{line}:{col}: {reason}")
            }
            None => format!("{name}: {reason}"),
        }
    })?;
    file.case
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let label = c.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
            let scopes: Vec<Scope> = c
                .scope
                .split_whitespace()
                .map(|s| {
                    s.parse()
                        .map_err(|e| format!("{name}: {label}: invalid scope {s:?}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            if scopes.is_empty() {
                return Err(format!("{name}: {label}: empty scope"));
            }
            let kind = c.kind.unwrap_or(if c.account.is_some() {
                Kind::User
            } else {
                Kind::Anonymous
            });
            Ok(Prepared {
                identity: Identity {
                    subject: c.account.unwrap_or_default(),
                    kind,
                    groups: c.groups,
                    via: "case",
                },
                service: c.service.unwrap_or_else(|| "registry".to_owned()),
                ip: c.ip,
                scopes,
                weight: c.count.unwrap_or(1).max(1),
            })
        })
        .collect()
}

/// The case files `path` names: itself, or the `*.toml` files directly in it
/// (sorted).
pub fn files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().and_then(|x| x.to_str()) == Some("toml"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!("no case files (*.toml) in {}", path.display()));
    }
    Ok(out)
}

/// Reads and parses one cases file.
pub fn read(path: &Path) -> Result<Vec<Prepared>, String> {
    let name = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!("{name}: larger than {MAX_FILE_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    parse(&name, &text)
}
