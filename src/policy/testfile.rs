//! Policy tests: TOML files of `[[case]]` entries (an identity, a scope, the
//! expected actions), run against a policy like unit tests.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::explain::{explain, Explanation};
use super::{Identity, Kind, Policy, Request};
use crate::scope::Scope;

/// One test case as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks.
    pub name: Option<String>,
    /// Account (omit for anonymous).
    pub account: Option<String>,
    /// Groups.
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
    /// The actions expected to be granted.
    pub expect: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<Case>,
}

/// A case that did not pass.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `file: case name`.
    pub case: String,
    /// Expected actions.
    pub expected: Vec<String>,
    /// Granted actions (empty when the case itself is invalid).
    pub got: Vec<String>,
    /// Why, rule by rule; `None` when the case could not run.
    pub explanation: Option<Explanation>,
    /// Problem with the case itself, if any.
    pub problem: Option<String>,
}

/// The outcome of a test run.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failures: Vec<Failure>,
}

impl Case {
    fn identity(&self) -> Identity {
        let kind = self.kind.unwrap_or(if self.account.is_some() {
            Kind::User
        } else {
            Kind::Anonymous
        });
        Identity {
            subject: self.account.clone().unwrap_or_default(),
            kind,
            groups: self.groups.clone(),
            via: "test",
        }
    }
}

/// Runs one case.
pub fn run_case(policy: &Policy, label: String, case: &Case) -> Result<(), Box<Failure>> {
    let expected: BTreeSet<String> = case.expect.iter().cloned().collect();
    let scope: Scope = case.scope.parse().map_err(|e| {
        Box::new(Failure {
            case: label.clone(),
            expected: expected.iter().cloned().collect(),
            got: Vec::new(),
            explanation: None,
            problem: Some(format!("invalid scope {:?}: {e}", case.scope)),
        })
    })?;
    let identity = case.identity();
    let req = Request {
        identity: &identity,
        service: case.service.as_deref().unwrap_or("registry"),
        ip: case.ip,
    };
    let explanation = explain(policy, &req, &scope);
    let got: BTreeSet<String> = explanation.granted.iter().cloned().collect();
    if got == expected {
        return Ok(());
    }
    Err(Box::new(Failure {
        case: label,
        expected: expected.into_iter().collect(),
        got: got.into_iter().collect(),
        explanation: Some(explanation),
        problem: None,
    }))
}

/// Test files in `dir` (`*.toml`, sorted).
pub fn test_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs every case of every file.
pub fn run_files(policy: &Policy, files: &[PathBuf]) -> Result<Report, String> {
    let mut report = Report::default();
    for path in files {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if size > super::load::MAX_FILE_BYTES {
            return Err(format!(
                "{}: test file larger than {} bytes",
                path.display(),
                super::load::MAX_FILE_BYTES
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let one = run_text(policy, &path.display().to_string(), &text)?;
        report.passed += one.passed;
        report.failures.extend(one.failures);
    }
    Ok(report)
}

/// Runs every case of one test file's text; `name` labels the cases.
pub fn run_text(policy: &Policy, name: &str, text: &str) -> Result<Report, String> {
    let mut report = Report::default();
    let parsed: CaseFile =
        toml::from_str(text).map_err(|e| format!("{name}: {}", e.to_string().trim()))?;
    for (i, case) in parsed.case.iter().enumerate() {
        let label = format!(
            "{name}: {}",
            case.name
                .clone()
                .unwrap_or_else(|| format!("case {}", i + 1))
        );
        match run_case(policy, label, case) {
            Ok(()) => report.passed += 1,
            Err(f) => report.failures.push(*f),
        }
    }
    Ok(report)
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "FAIL {}", self.case)?;
        if let Some(p) = &self.problem {
            return writeln!(f, "  {p}");
        }
        writeln!(f, "  expected: [{}]", self.expected.join(", "))?;
        writeln!(f, "  got:      [{}]", self.got.join(", "))?;
        if let Some(e) = &self.explanation {
            for line in e.to_string().lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}
