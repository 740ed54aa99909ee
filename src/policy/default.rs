//! The shipped default policy, built into the binary so that berth runs from any
//! directory. `berth serve` writes it into a policy directory that does not exist
//! yet (as it generates keys on first start); the read-only policy commands use
//! the built-in copy instead of writing anything. An existing directory, even an
//! empty one, is never touched: it is the operator's.

use std::io::{self, Write};
use std::path::Path;

use super::load::{parse_file, Loaded, PolicyError};

/// `policies/default.toml` as shipped.
pub const POLICY: &str = include_str!("../../policies/default.toml");
/// `policies/tests/default.toml`: the cases `berth policy test` runs against it.
pub const TESTS: &str = include_str!("../../policies/tests/default.toml");
/// `policies/README.md`: the policy language in brief, for whoever opens the directory.
pub const README: &str = include_str!("../../policies/README.md");

/// The name errors and explanations give the built-in policy.
pub const BUILTIN_NAME: &str = "(built-in default policy)";

/// The files written into a new policy directory, relative to it.
const FILES: [(&str, &str); 3] = [
    ("default.toml", POLICY),
    ("tests/default.toml", TESTS),
    ("README.md", README),
];

/// Whether `dir` is absent: not a directory, a file, or a link (a dangling link
/// is the operator's, e.g. a Kubernetes ConfigMap mount in progress).
pub fn is_missing(dir: &Path) -> bool {
    matches!(std::fs::symlink_metadata(dir), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Creates `dir` with the shipped policy, its tests and README, if `dir` does not
/// exist. Returns whether it wrote them. Files are created exclusively, so a
/// concurrent writer (another replica starting on the same volume) never has its
/// file replaced: whoever comes second finds the files there and leaves them.
pub fn write_if_missing(dir: &Path) -> io::Result<bool> {
    if !is_missing(dir) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir.join("tests"))?;
    for (name, text) in FILES {
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => f.write_all(text.as_bytes())?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The built-in policy, parsed.
pub fn builtin() -> Result<Loaded, PolicyError> {
    parse_file(BUILTIN_NAME, POLICY)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::policy::load::load_dir;

    #[test]
    fn writes_into_a_missing_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etc/berth/policies");
        assert!(write_if_missing(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("default.toml")).unwrap(),
            POLICY
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("tests/default.toml")).unwrap(),
            TESTS
        );
        let loaded = load_dir(&dir).unwrap();
        assert_eq!(
            loaded.policy.rules().len(),
            builtin().unwrap().policy.rules().len()
        );
        // A second start leaves the operator's edits alone.
        std::fs::write(dir.join("default.toml"), "# emptied by the operator\n").unwrap();
        assert!(!write_if_missing(&dir).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("default.toml")).unwrap(),
            "# emptied by the operator\n"
        );
    }

    #[test]
    fn an_existing_empty_directory_or_a_file_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!write_if_missing(tmp.path()).unwrap());
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
        let file = tmp.path().join("policies");
        std::fs::write(&file, "not a directory").unwrap();
        assert!(!write_if_missing(&file).unwrap());
        #[cfg(unix)]
        {
            let link = tmp.path().join("dangling");
            std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
            assert!(!is_missing(&link));
            assert!(!write_if_missing(&link).unwrap());
        }
    }

    #[test]
    fn the_builtin_policy_parses_and_passes_its_tests() {
        let loaded = builtin().unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let report =
            crate::policy::testfile::run_text(&loaded.policy, "tests/default.toml", TESTS).unwrap();
        assert!(report.passed > 0);
        assert!(report.failures.is_empty());
    }
}
