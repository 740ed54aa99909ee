//! Live policy: the current policy behind an `Arc`, swapped atomically when the
//! directory changes (polled every second) or on SIGHUP. A broken set of files
//! keeps the last good policy serving and is reported as stale.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use super::load::{load_dir, PolicyError};
use super::Policy;

/// What `/healthz` and logs say about the policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    /// Incremented at every successful (re)load.
    pub generation: u64,
    /// Rules in force.
    pub rules: usize,
    /// The last reload failed; the previous policy still serves.
    pub stale: bool,
    /// The error of the last failed reload.
    pub error: Option<String>,
    /// Warnings of the policy in force.
    pub warnings: Vec<String>,
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out: Fingerprint = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("toml"))
                .map(|e| {
                    let meta = std::fs::metadata(e.path()).ok();
                    (
                        e.path(),
                        meta.as_ref().map_or(0, |m| m.len()),
                        meta.and_then(|m| m.modified().ok()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The policy in force and how it got there.
#[derive(Debug)]
pub struct PolicyHandle {
    dir: PathBuf,
    current: RwLock<Arc<Policy>>,
    status: RwLock<PolicyStatus>,
    seen: Mutex<Fingerprint>,
}

impl PolicyHandle {
    /// Loads the directory; fails if the first load fails.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let seen = fingerprint(dir);
        let loaded = load_dir(dir)?;
        Ok(PolicyHandle {
            dir: dir.to_owned(),
            status: RwLock::new(PolicyStatus {
                generation: 1,
                rules: loaded.policy.rules().len(),
                stale: false,
                error: None,
                warnings: loaded.warnings,
            }),
            current: RwLock::new(Arc::new(loaded.policy)),
            seen: Mutex::new(seen),
        })
    }

    /// The policy in force. A request holds on to the `Arc` it got, so it finishes
    /// under the policy it started with even if a reload happens meanwhile.
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A copy of the status.
    pub fn status(&self) -> PolicyStatus {
        match self.status.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the whole directory; swaps only if every file is valid.
    pub fn reload(&self) -> Result<(), PolicyError> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = fingerprint(&self.dir);
        }
        let result = load_dir(&self.dir);
        let mut status = match self.status.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match result {
            Ok(loaded) => {
                status.generation += 1;
                status.rules = loaded.policy.rules().len();
                status.stale = false;
                status.error = None;
                status.warnings = loaded.warnings.clone();
                let mut current = match self.current.write() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(loaded.policy);
                tracing::info!(
                    generation = status.generation,
                    rules = status.rules,
                    "policy reloaded"
                );
                for w in &loaded.warnings {
                    tracing::warn!("policy: {w}");
                }
                Ok(())
            }
            Err(e) => {
                status.stale = true;
                status.error = Some(e.to_string());
                tracing::error!(error = %e, generation = status.generation, "policy reload failed; the previous policy stays in force");
                Err(e)
            }
        }
    }

    /// Reloads if any policy file was added, removed or changed since last time.
    pub fn reload_if_changed(&self) -> bool {
        let now = fingerprint(&self.dir);
        let changed = match self.seen.lock() {
            Ok(seen) => *seen != now,
            Err(_) => true,
        };
        if changed {
            // The error is logged and kept in the status.
            let _ = self.reload();
        }
        changed
    }
}

impl crate::watch::Reload for PolicyHandle {
    fn what(&self) -> &'static str {
        "policy"
    }
    fn reload_now(&self) {
        // The error is logged and kept in the status.
        let _ = self.reload();
    }
    fn reload_if_changed(&self) {
        PolicyHandle::reload_if_changed(self);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn write(dir: &Path, text: &str) {
        // A different length guarantees a different fingerprint even within one
        // mtime tick.
        std::fs::write(dir.join("p.toml"), text).unwrap();
    }

    #[test]
    fn reload_swaps_good_and_keeps_last_good_on_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "[[rule]]\nallow=['pull']\n");
        let h = PolicyHandle::load(dir.path()).unwrap();
        let before = h.current();
        assert!(!h.reload_if_changed(), "nothing changed yet");
        write(
            dir.path(),
            "[[rule]]\nallow=['pull']\n[[rule]]\nallow=['push']\n",
        );
        assert!(h.reload_if_changed());
        assert_eq!(h.current().rules().len(), 2);
        assert_eq!(h.status().generation, 2);
        // The request that started before still holds its policy.
        assert_eq!(before.rules().len(), 1);

        write(dir.path(), "[[rule]]\nallow=['pull']\nbogus=1\n");
        assert!(h.reload_if_changed());
        let st = h.status();
        assert!(st.stale);
        assert!(st.error.unwrap().contains("p.toml:3:1"));
        assert_eq!(
            h.current().rules().len(),
            2,
            "last good policy keeps serving"
        );

        write(dir.path(), "[[rule]]\nallow=['delete']\n");
        assert!(h.reload_if_changed());
        assert!(!h.status().stale);
        assert_eq!(h.status().generation, 3);
    }

    #[test]
    fn same_files_same_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.toml"),
            dir.path().join("default.toml"),
        )
        .unwrap();
        let h = PolicyHandle::load(dir.path()).unwrap();
        let a = h.current();
        h.reload().unwrap();
        let b = h.current();
        let id = crate::policy::Identity {
            subject: "alice".into(),
            kind: crate::policy::Kind::User,
            groups: vec!["admins".into()],
            via: "t",
        };
        let req = crate::policy::Request {
            identity: &id,
            service: "registry",
            ip: None,
        };
        for s in [
            "repository:alice/x:pull,push",
            "registry:catalog:*",
            "repository:bob/y:delete",
        ] {
            let scope = s.parse().unwrap();
            assert_eq!(
                crate::policy::evaluate(&a, &req, &scope),
                crate::policy::evaluate(&b, &req, &scope)
            );
        }
    }
}
