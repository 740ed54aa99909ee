//! Folding repeated grants: the first grant of an (identity, client, service,
//! granted access) combination within a window gets its own audit row; repeats
//! within the window only count, and the count is added to that row when the
//! window closes (or at shutdown). Refusals, errors and decisions without an
//! established identity are never folded.
//!
//! The table is bounded ([`FOLD_SLOTS`] open windows); a combination that finds
//! it full is written individually, never lost. Counts live in memory until
//! their window closes: a crash loses at most the open windows' counts, never a
//! first row, a refusal or an error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::DecisionLog;
use crate::policy::Kind;

/// Most open windows held at once.
pub const FOLD_SLOTS: usize = 10_000;

/// What a repeat must share with the first decision to be folded into its row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    subject: String,
    kind: Kind,
    groups: Vec<String>,
    via: &'static str,
    client: IpAddr,
    service: String,
    granted: Vec<String>,
}

impl FoldKey {
    /// The key of a decision that may fold: a clean grant (nothing refused, no
    /// error) to an established identity.
    fn of(log: &DecisionLog) -> Option<Self> {
        let (subject, groups) = log.identity.as_ref()?;
        let kind = log.kind?;
        let clean = log.outcome == "issued" && log.denied.is_empty() && log.error.is_none();
        clean.then(|| FoldKey {
            subject: subject.clone(),
            kind,
            groups: groups.clone(),
            via: log.via,
            client: log.client,
            service: log.service.clone(),
            granted: log.granted.clone(),
        })
    }
}

/// The row a window's repeats are added to; its id is set once it is written.
#[derive(Debug, Default)]
pub struct Head {
    id: AtomicI64,
}

impl Head {
    /// Records the row id the database gave the first decision.
    pub fn written(&self, id: i64) {
        self.id.store(id, Ordering::Release);
    }

    /// The row id, once written.
    pub fn id(&self) -> Option<i64> {
        Some(self.id.load(Ordering::Acquire)).filter(|id| *id > 0)
    }
}

#[derive(Debug)]
struct Slot {
    opened: Instant,
    head: Arc<Head>,
    request_id: String,
    repeats: u64,
    last_at: i64,
}

/// A closed window with repeats to add to its first row.
#[derive(Debug)]
pub struct Closed {
    /// The first row.
    pub head: Arc<Head>,
    /// Its request id (for the log).
    pub request_id: String,
    /// Repeats folded into it.
    pub repeats: u64,
    /// Unix seconds of the last repeat.
    pub last_at: i64,
}

/// How one decision is recorded.
#[derive(Debug)]
pub enum Fold {
    /// Its own row, the first of a window: later repeats are added to it.
    Head(Arc<Head>),
    /// Counted into an open window's row: no row, no info line.
    Folded,
    /// Its own row, alone.
    Alone,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<FoldKey, Slot>,
    closed: Vec<Closed>,
    stopped: bool,
}

/// The open windows.
#[derive(Debug)]
pub struct FoldTable {
    window: Duration,
    cap: usize,
    inner: Mutex<Inner>,
    folded: AtomicU64,
}

impl FoldTable {
    /// A table folding repeats within `window` (zero: never), holding at most
    /// `cap` open windows.
    pub fn new(window: Duration, cap: usize) -> Self {
        FoldTable {
            window,
            cap,
            inner: Mutex::new(Inner::default()),
            folded: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides how `log` is recorded at `now` (`at` in unix seconds). A new
    /// window opens only for a decision that has room in the queue (`queued`):
    /// a window whose first row is not written would have nowhere to go.
    pub fn decide(&self, log: &DecisionLog, queued: bool, now: Instant, at: i64) -> Fold {
        if self.window.is_zero() {
            return Fold::Alone;
        }
        let Some(key) = FoldKey::of(log) else {
            return Fold::Alone;
        };
        let mut inner = self.lock();
        if inner.stopped {
            return Fold::Alone;
        }
        let inner = &mut *inner;
        if let Some(slot) = inner.slots.get_mut(&key) {
            if now.saturating_duration_since(slot.opened) < self.window {
                slot.repeats += 1;
                slot.last_at = at;
                self.folded.fetch_add(1, Ordering::Relaxed);
                return Fold::Folded;
            }
            if !queued {
                return Fold::Alone;
            }
            // The window closed: hand its count over, open the next one.
            let head = Arc::new(Head::default());
            let old = std::mem::replace(
                slot,
                Slot {
                    opened: now,
                    head: head.clone(),
                    request_id: log.request_id.clone(),
                    repeats: 0,
                    last_at: at,
                },
            );
            close_into(&mut inner.closed, old);
            return Fold::Head(head);
        }
        if !queued || inner.slots.len() >= self.cap {
            return Fold::Alone;
        }
        let head = Arc::new(Head::default());
        inner.slots.insert(
            key,
            Slot {
                opened: now,
                head: head.clone(),
                request_id: log.request_id.clone(),
                repeats: 0,
                last_at: at,
            },
        );
        Fold::Head(head)
    }

    /// Closes the windows open since before `now - window` (every window when
    /// `all`, which also ends folding: later decisions are written alone) and
    /// returns those with repeats to add.
    pub fn close(&self, now: Instant, all: bool) -> Vec<Closed> {
        let mut inner = self.lock();
        if all {
            inner.stopped = true;
        }
        let mut out = std::mem::take(&mut inner.closed);
        let window = self.window;
        let due = inner
            .slots
            .extract_if(|_, s| all || now.saturating_duration_since(s.opened) >= window);
        for (_, slot) in due {
            close_into(&mut out, slot);
        }
        out
    }

    /// Open windows, and decisions folded so far.
    pub fn stats(&self) -> (usize, u64) {
        (self.lock().slots.len(), self.folded.load(Ordering::Relaxed))
    }
}

fn close_into(out: &mut Vec<Closed>, slot: Slot) {
    if slot.repeats > 0 {
        out.push(Closed {
            head: slot.head,
            request_id: slot.request_id,
            repeats: slot.repeats,
            last_at: slot.last_at,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::policy::Identity;

    fn grant(subject: &str, groups: &[&str], service: &str, granted: &str) -> DecisionLog {
        let mut log = DecisionLog::new(IpAddr::from([192, 0, 2, 1]));
        log.identify(&Identity {
            subject: subject.into(),
            kind: Kind::User,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            via: "local",
        });
        log.service = service.into();
        log.granted = vec![granted.into()];
        log.outcome = "issued";
        log
    }

    #[test]
    fn a_full_table_writes_alone_and_loses_nothing() {
        let t = FoldTable::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        let a = grant("a", &[], "reg", "repository:a/x:pull");
        let b = grant("b", &[], "reg", "repository:b/x:pull");
        let c = grant("c", &[], "reg", "repository:c/x:pull");
        assert!(matches!(t.decide(&a, true, now, 1), Fold::Head(_)));
        assert!(matches!(t.decide(&b, true, now, 1), Fold::Head(_)));
        for _ in 0..3 {
            assert!(
                matches!(t.decide(&c, true, now, 1), Fold::Alone),
                "no room: each of c's grants gets its own row"
            );
        }
        assert!(matches!(t.decide(&a, true, now, 2), Fold::Folded));
        assert_eq!(t.stats(), (2, 1));
    }

    #[test]
    fn windows_close_with_their_counts() {
        let t = FoldTable::new(Duration::from_secs(60), 10);
        let start = Instant::now();
        let a = grant("a", &["g2", "g1"], "reg", "repository:a/x:pull");
        let Fold::Head(first) = t.decide(&a, true, start, 100) else {
            panic!("first grant opens a window")
        };
        for i in 0..5 {
            assert!(matches!(t.decide(&a, true, start, 101 + i), Fold::Folded));
        }
        // Not due yet.
        assert!(t.close(start + Duration::from_secs(30), false).is_empty());
        // Past the window, the next grant opens a new one and hands the count over.
        let later = start + Duration::from_secs(61);
        assert!(matches!(t.decide(&a, true, later, 200), Fold::Head(_)));
        let closed = t.close(later, false);
        assert_eq!(closed.len(), 1);
        assert!(Arc::ptr_eq(&closed[0].head, &first));
        assert_eq!((closed[0].repeats, closed[0].last_at), (5, 105));
        // Without room in the queue, no window opens (its row would be lost).
        let b = grant("b", &[], "reg", "repository:b/x:pull");
        assert!(matches!(t.decide(&b, false, later, 200), Fold::Alone));
        // Shutdown closes everything; later grants are written alone.
        assert!(matches!(t.decide(&a, true, later, 201), Fold::Folded));
        let rest = t.close(later, true);
        assert_eq!(rest.len(), 1);
        assert!(matches!(t.decide(&a, true, later, 202), Fold::Alone));
    }

    #[test]
    fn only_clean_grants_to_an_identity_fold() {
        let t = FoldTable::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let mut refused = grant("a", &[], "reg", "repository:a/x:pull");
        refused.denied = vec!["repository:a/x:push".into()];
        let mut failed = grant("a", &[], "reg", "repository:a/x:pull");
        failed.outcome = "invalid_request";
        failed.error = Some("bad".into());
        let mut unknown = DecisionLog::new(IpAddr::from([192, 0, 2, 1]));
        unknown.outcome = "unauthorized";
        for log in [&refused, &failed, &unknown] {
            for _ in 0..3 {
                assert!(matches!(t.decide(log, true, now, 1), Fold::Alone));
            }
        }
        let off = FoldTable::new(Duration::ZERO, 10);
        let a = grant("a", &[], "reg", "repository:a/x:pull");
        assert!(matches!(off.decide(&a, true, now, 1), Fold::Alone));
        assert!(matches!(off.decide(&a, true, now, 1), Fold::Alone));
    }
}
