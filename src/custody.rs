//! Who can read berth's secrets on disk. The keys directory and the SQLite
//! database's directory are created 0700, the database file 0600 before SQLite
//! first opens it (SQLite gives its `-wal` and `-shm` files the database's
//! mode), and private keys are written 0600 by `token::generate`. At start-up
//! berth warns about a private key or database file that its group or others
//! can read, which an operator's copy or restore may have left behind.
//!
//! Only modes are handled here; what the files hold belongs to `token` and
//! `store`. Directories and files that already exist are never changed.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` and any missing parent with mode 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates an empty file at `path` with mode 0600 unless it exists.
pub fn private_file(path: &Path) -> io::Result<()> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The files among `paths` that exist and that the group or others may read
/// or write, with their modes, for a start-up warning.
pub fn exposed(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| {
            let mode = fs::metadata(p).ok()?.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then(|| {
                format!(
                    "{} is readable beyond berth's user (mode {mode:04o}); run `chmod 600 {}`",
                    p.display(),
                    p.display()
                )
            })
        })
        .collect()
}

/// The private keys in `keys_dir` (`*.key`) and the database file with its
/// `-wal` and `-shm` companions, for [`exposed`].
pub fn secret_files(keys_dir: &Path, sqlite: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(keys_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    if let Some(db) = sqlite {
        files.push(db.to_owned());
        for suffix in ["-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn creates_private_dirs_and_files_and_names_exposed_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        for d in [tmp.path().join("a"), dir.clone()] {
            assert_eq!(
                fs::metadata(&d).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        let db = dir.join("berth.db");
        private_file(&db).unwrap();
        assert_eq!(
            fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(dir.join("k.key"), "x").unwrap();
        fs::set_permissions(dir.join("k.key"), fs::Permissions::from_mode(0o640)).unwrap();
        let files = secret_files(&dir, Some(&db));
        assert_eq!(files.len(), 4);
        let warnings = exposed(&files);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("k.key") && warnings[0].contains("0640"));
        // An existing file keeps its mode.
        private_file(&dir.join("k.key")).unwrap();
        assert_eq!(exposed(&files).len(), 1);
    }
}
