//! Whether anything was committed to the SQLite database since a moment,
//! answered from the header of its WAL index without a transaction.
//!
//! In WAL mode SQLite keeps an index of the log in shared memory: the `-shm`
//! file beside the database, which every connection on the machine maps. Its
//! first 96 bytes are two copies of a 48-byte header (the documented WAL-index
//! format), and every commit, from any connection or process, rewrites both
//! before it returns: the second copy, a memory barrier, then the first. The
//! header holds a counter moved by each commit, the last valid frame, the
//! page count and checksums, so an unchanged header means nothing was
//! committed in between.
//!
//! Beginning a read transaction costs several file-lock system calls and, with
//! two request threads, a lock held across them; reading the header costs one
//! `pread`. [`super::inline`] uses it to answer the authentication generation
//! from its last reading when the header still matches the one seen before that
//! reading was made, and reads the database otherwise.
//!
//! A header is trusted only when both copies agree (a commit in progress
//! leaves them different), it is marked initialised, and its version is the
//! one format SQLite has used since WAL mode was introduced. A commit that
//! returned before a request arrived has written both copies, so the request
//! sees the new header. Nothing here writes to the file or takes a lock.
//!
//! No crate reads this header; it is a dozen lines over the standard library.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One copy of the WAL-index header.
pub(super) type Header = [u8; HEADER];

const HEADER: usize = 48;
/// `iVersion`, the first field, in native byte order: the only WAL-index
/// format there is.
const VERSION: u32 = 3_007_000;
/// `isInit`, one byte: 1 once the header is initialised.
const IS_INIT: usize = 12;
/// How often the `-shm` path is checked to still be the file read here.
const RECHECK: Duration = Duration::from_secs(1);

/// The `-shm` file of one SQLite database, opened read-only.
#[derive(Debug)]
pub(super) struct WalIndex {
    file: File,
    path: PathBuf,
    /// Device and inode of `file`, to notice the path naming another file.
    id: (u64, u64),
    /// Milliseconds after `born` at which the path was last checked.
    checked: AtomicU64,
    born: Instant,
    /// The path no longer names `file`: never trust a header again.
    lost: AtomicBool,
}

impl WalIndex {
    /// Opens the WAL index of the database at `db` (in WAL mode, with a
    /// connection open, so the file exists and is initialised).
    pub(super) fn open(db: &Path) -> std::io::Result<Self> {
        let mut path = db.as_os_str().to_owned();
        path.push("-shm");
        let path = PathBuf::from(path);
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        let index = WalIndex {
            file,
            path,
            id: (meta.dev(), meta.ino()),
            checked: AtomicU64::new(0),
            born: Instant::now(),
            lost: AtomicBool::new(false),
        };
        if index.header().is_none() {
            return Err(std::io::Error::other("no initialised WAL-index header"));
        }
        Ok(index)
    }

    /// The header as committed now; `None` while a commit is rewriting it,
    /// when it cannot be read, or once the `-shm` path names another file.
    pub(super) fn header(&self) -> Option<Header> {
        if self.lost.load(Ordering::Relaxed) || !self.still_ours() {
            return None;
        }
        let mut both = [0u8; 2 * HEADER];
        self.file.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(HEADER);
        let version = u32::from_ne_bytes(first[..4].try_into().ok()?);
        if first != second || version != VERSION || first[IS_INIT] != 1 {
            return None;
        }
        first.try_into().ok()
    }

    /// Whether the `-shm` path still names the file read here, checked at most
    /// once per [`RECHECK`]. A file removed and made anew under the same name
    /// would leave this one unchanged forever: the reader then always reads
    /// the database.
    fn still_ours(&self) -> bool {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.checked.load(Ordering::Relaxed);
        if now.saturating_sub(last) < RECHECK.as_millis() as u64
            || self
                .checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return true;
        }
        let same = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if !same {
            self.lost.store(true, Ordering::Relaxed);
            tracing::warn!(
                path = %self.path.display(),
                "the SQLite WAL index was replaced while open; the generation is read from the database on every request"
            );
        }
        same
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A header of `version`, initialised or not, with change counter `change`.
    fn header(version: u32, init: u8, change: u32) -> Header {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&version.to_ne_bytes());
        h[8..12].copy_from_slice(&change.to_ne_bytes());
        h[IS_INIT] = init;
        h
    }

    fn write(shm: &Path, first: &Header, second: &Header) {
        let mut both = first.to_vec();
        both.extend_from_slice(second);
        std::fs::write(shm, both).unwrap();
    }

    #[test]
    fn only_two_equal_initialised_copies_of_the_one_version_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("berth.db");
        let shm = dir.path().join("berth.db-shm");
        let good = header(VERSION, 1, 41);
        write(&shm, &good, &good);
        let index = WalIndex::open(&db).unwrap();
        assert_eq!(index.header(), Some(good));

        // A commit in progress: the second copy is new, the first not yet.
        let next = header(VERSION, 1, 42);
        write(&shm, &good, &next);
        assert_eq!(index.header(), None, "torn header trusted");
        write(&shm, &next, &next);
        assert_eq!(index.header(), Some(next));

        let uninitialised = header(VERSION, 0, 42);
        write(&shm, &uninitialised, &uninitialised);
        assert_eq!(index.header(), None, "uninitialised header trusted");
        let other = header(VERSION + 1, 1, 42);
        write(&shm, &other, &other);
        assert_eq!(index.header(), None, "another format trusted");
        std::fs::write(&shm, &good[..40]).unwrap();
        assert_eq!(index.header(), None, "a short file trusted");

        // Nothing to open: no file, or no initialised header in it.
        std::fs::remove_file(&shm).unwrap();
        assert!(WalIndex::open(&db).is_err());
        write(&shm, &uninitialised, &uninitialised);
        assert!(WalIndex::open(&db).is_err());
    }
}
