//! Pseudonyms for erasure requests (`berth audit erase`): a name or client
//! address becomes `erased:` and the first 16 hex digits of its HMAC-SHA256
//! under this installation's erasure key. The same person always gets the same
//! pseudonym, so counts and decisions stay queryable, while the name cannot be
//! read back without the key (nor guessed from a list of names without it).
//!
//! The key is 32 random bytes, hex, in `audit-erasure.secret` beside the
//! signing keys, created 0600 on first use (written whole, then linked into
//! place, so two erasures at once agree on one key). It is not a signing key:
//! its name does not end in `.key`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;

/// File name of the erasure key in the keys directory.
pub const KEY_FILE: &str = "audit-erasure.secret";
/// What every pseudonym starts with.
pub const PREFIX: &str = "erased:";

/// What an erasure pseudonymises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An account name (the `account` and `subject` columns).
    Account(String),
    /// A client address, in the form berth records it.
    Address(String),
}

/// The erasure key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error("{0}: not an audit erasure key (64 hex digits expected)")]
    Malformed(PathBuf),
    /// Others may read it.
    #[error("{0} is readable beyond berth's user; run `chmod 600` on it")]
    Exposed(PathBuf),
}

/// The installation's erasure key.
pub struct ErasureKey(hmac::Key);

impl std::fmt::Debug for ErasureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErasureKey(..)")
    }
}

impl ErasureKey {
    /// Reads the key from `keys_dir`, creating it (and the directory, 0700)
    /// on first use.
    pub fn load_or_create(keys_dir: &Path) -> Result<Self, KeyError> {
        let path = keys_dir.join(KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            crate::custody::private_dir(keys_dir).map_err(io)?;
            create(keys_dir, &path).map_err(io)?;
        }
        let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed(path));
        }
        let text = fs::read_to_string(&path).map_err(io)?;
        let raw = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyError::Malformed(path.clone()))?;
        Ok(ErasureKey(hmac::Key::new(hmac::HMAC_SHA256, &raw)))
    }

    /// The pseudonym of `subject`: `erased:` and 16 hex digits.
    pub fn pseudonym(&self, subject: &Subject) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        match subject {
            Subject::Account(name) => {
                ctx.update(b"account\0");
                ctx.update(name.as_bytes());
            }
            Subject::Address(addr) => {
                ctx.update(b"address\0");
                ctx.update(addr.as_bytes());
            }
        }
        let tag = ctx.sign();
        let hex = data_encoding::HEXLOWER.encode(tag.as_ref());
        format!("{PREFIX}{}", &hex[..16])
    }
}

/// Writes a new key to a private temporary file, then links it into place;
/// another process that got there first wins, and its key is kept.
fn create(dir: &Path, path: &Path) -> std::io::Result<()> {
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| std::io::Error::other("no randomness for the erasure key"))?;
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| std::io::Error::other("no randomness for the erasure key"))?;
    let tmp = dir.join(format!(
        ".{KEY_FILE}.{}",
        data_encoding::HEXLOWER.encode(&nonce)
    ));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", data_encoding::HEXLOWER.encode(&raw))?;
        f.sync_all()?;
        match fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = fs::remove_file(&tmp);
    written
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_key_per_installation_private_and_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let a = ErasureKey::load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = ErasureKey::load_or_create(&dir).unwrap();
        let alice = Subject::Account("alice".into());
        let p = a.pseudonym(&alice);
        assert_eq!(p, b.pseudonym(&alice), "the same key next time");
        assert!(p.starts_with(PREFIX) && p.len() == PREFIX.len() + 16, "{p}");
        assert!(!p.contains("alice"));
        assert_ne!(p, a.pseudonym(&Subject::Address("alice".into())));
        assert_ne!(p, a.pseudonym(&Subject::Account("alicf".into())));
        let other = tempfile::tempdir().unwrap();
        let c = ErasureKey::load_or_create(other.path()).unwrap();
        assert_ne!(p, c.pseudonym(&alice), "another installation, another key");
        // Nothing but the key is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);

        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ErasureKey::load_or_create(&dir),
            Err(KeyError::Exposed(_))
        ));
        fs::write(dir.join(KEY_FILE), "short\n").unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            ErasureKey::load_or_create(&dir),
            Err(KeyError::Malformed(_))
        ));
    }
}
