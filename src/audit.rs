//! One record per token decision: a structured log line (target `berth::decision`;
//! JSON with `BERTH_LOG_FORMAT=json`) and a row in the database's audit log.
//!
//! Rows are written by a background task in batches, off the request path,
//! through a bounded queue (`audit_queue`, default 50,000 records). When the
//! database is down the task retries with what it holds (at most
//! [`MAX_IN_HAND`] records) and stops taking more, so the queue fills. A request
//! that finds it full waits up to [`QUEUE_WAIT`] for room; then, with
//! `audit_required = true`, it is answered 503 and gets no token; otherwise
//! (the default) it is served, its row is dropped, counted in
//! `berth_audit_dropped_total` and logged, and its decision line still reaches
//! the log. The default keeps pulls working through a long database outage,
//! while the log keeps every decision. Memory stays bounded either way. A
//! record never holds a token, password or hash.
//!
//! Repeated grants are folded ([`fold`]): within `audit_fold_window` the first
//! grant of a combination gets its row and its log line; repeats add to that
//! row's `repeats` and `last_at` when the window closes or berth stops, and are
//! logged once then, as a count (target `berth::audit`).

pub mod erasure;
pub mod fold;
mod writer;

use std::net::IpAddr;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use self::fold::{Fold, FoldTable, Head, FOLD_SLOTS};
use self::writer::{writer, Writer};
use crate::policy::{Identity, Kind};
use crate::store::{AuditRecord, Store};

/// Most records the writer holds while the database is unreachable (no more
/// than the queue's capacity); the rest wait in the queue.
pub const MAX_IN_HAND: usize = 4 * BATCH;
/// How long a request waits for room in a full queue.
pub const QUEUE_WAIT: Duration = Duration::from_millis(100);
/// Most records written in one transaction.
const BATCH: usize = 512;
/// How long the first record of a burst waits for others to share its write.
const GATHER: Duration = Duration::from_millis(50);
/// How often the writer closes windows whose time is up (at most; less often
/// than the window itself is pointless).
const SWEEP: Duration = Duration::from_secs(1);

/// What happened to one token request.
#[derive(Debug)]
pub struct DecisionLog {
    /// Request id (random), shared by the log line and the audit row.
    pub request_id: String,
    /// Client address.
    pub client: IpAddr,
    /// Account as authenticated (or as claimed, when authentication failed).
    pub account: String,
    /// Identity kind, once known.
    pub kind: Option<Kind>,
    /// The identity's subject and sorted groups exactly as policy saw them,
    /// once known (see [`DecisionLog::identify`]).
    pub identity: Option<(String, Vec<String>)>,
    /// Authentication backend.
    pub via: &'static str,
    /// Service (audience).
    pub service: String,
    /// Requested scopes.
    pub requested: Vec<String>,
    /// Granted scopes (only those with at least one action).
    pub granted: Vec<String>,
    /// Refused actions, as scopes (`repository:x:push`).
    pub denied: Vec<String>,
    /// Ids of the rules that matched.
    pub rules: Vec<String>,
    /// `issued`, or the OAuth error code.
    pub outcome: &'static str,
    /// Client-facing error description, if any.
    pub error: Option<String>,
    /// Time spent.
    pub latency: Duration,
}

fn request_id() -> String {
    let mut raw = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).is_err() {
        return String::from("0000000000000000");
    }
    data_encoding::HEXLOWER.encode(&raw)
}

impl DecisionLog {
    /// An empty record for a request from `client`.
    pub fn new(client: IpAddr) -> Self {
        DecisionLog {
            request_id: request_id(),
            client,
            account: String::new(),
            kind: None,
            identity: None,
            via: "",
            service: String::new(),
            requested: Vec::new(),
            granted: Vec::new(),
            denied: Vec::new(),
            rules: Vec::new(),
            outcome: "",
            error: None,
            latency: Duration::ZERO,
        }
    }

    /// Records the identity authentication established, as policy will see it:
    /// account, kind, backend, and the snapshot (subject and sorted groups)
    /// that lets the decision be replayed later.
    pub fn identify(&mut self, identity: &Identity) {
        self.account = identity.subject.clone();
        self.kind = Some(identity.kind);
        self.via = identity.via;
        let mut groups = identity.groups.clone();
        groups.sort();
        self.identity = Some((identity.subject.clone(), groups));
    }

    fn to_record(&self, at: i64) -> AuditRecord {
        AuditRecord {
            at,
            request_id: self.request_id.clone(),
            client: self.client.to_string(),
            account: self.account.clone(),
            kind: self.kind.map(|k| k.to_string()).unwrap_or_default(),
            via: self.via.to_owned(),
            service: self.service.clone(),
            requested: self.requested.join(" "),
            granted: self.granted.join(" "),
            denied: self.denied.join(" "),
            rules: self.rules.join(" "),
            outcome: self.outcome.to_owned(),
            error: self.error.clone().unwrap_or_default(),
            latency_us: i64::try_from(self.latency.as_micros()).unwrap_or(i64::MAX),
            subject: self.identity.as_ref().map(|(s, _)| s.clone()),
            groups: self.identity.as_ref().map(|(_, g)| g.clone()),
            repeats: 1,
            last_at: None,
        }
    }
}

/// Emits the record as one log line.
pub fn record(log: &DecisionLog) {
    tracing::info!(
        target: "berth::decision",
        request_id = %log.request_id,
        client = %log.client,
        account = %log.account,
        kind = log.kind.map(|k| k.to_string()).unwrap_or_default(),
        via = log.via,
        service = %log.service,
        requested = %log.requested.join(" "),
        granted = %log.granted.join(" "),
        denied = %log.denied.join(" "),
        rules = %log.rules.join(" "),
        outcome = log.outcome,
        error = log.error.as_deref().unwrap_or(""),
        latency_us = u64::try_from(log.latency.as_micros()).unwrap_or(u64::MAX),
        "token decision"
    );
}

type Stopper = Arc<Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>>;

/// One audit row on its way to the database, with the window it opens, if any.
#[derive(Debug)]
pub struct QueuedRecord {
    record: AuditRecord,
    head: Option<Arc<Head>>,
}

/// Where decisions go: the log, and the database writer.
#[derive(Debug, Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<QueuedRecord>,
    required: bool,
    dropped: Arc<AtomicU64>,
    fold: Arc<FoldTable>,
    stopper: Stopper,
}

/// The audit row could not be queued and `audit_required` is set: the request
/// must fail.
#[derive(Debug, thiserror::Error)]
#[error("the audit log is not keeping up")]
pub struct AuditUnavailable;

impl AuditSink {
    /// Starts the writer task over `store`, with a queue of `capacity` records,
    /// folding repeated grants within `fold_window` (zero: never).
    pub fn start(
        store: Store,
        grace: Duration,
        capacity: usize,
        required: bool,
        fold_window: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let in_hand = MAX_IN_HAND.min(capacity.max(1));
        let fold = Arc::new(FoldTable::new(fold_window, FOLD_SLOTS));
        // Windows close within half a window of their end; with folding off
        // the writer still wakes now and then, for nothing.
        let sweep = if fold_window.is_zero() {
            SWEEP
        } else {
            SWEEP.min(fold_window / 2).max(Duration::from_millis(10))
        };
        let task = tokio::spawn(writer(
            Writer {
                store,
                fold: fold.clone(),
                grace,
                in_hand,
                sweep,
            },
            rx,
            stop_rx,
        ));
        AuditSink {
            tx,
            required,
            dropped: Arc::new(AtomicU64::new(0)),
            fold,
            stopper: Arc::new(Mutex::new(Some((stop_tx, task)))),
        }
    }

    /// Writes what is queued, adds every open window's count to its row, and
    /// stops the writer (waiting at most the grace period if the database is
    /// down). Later records only reach the log.
    pub async fn shutdown(&self) {
        let pair = match self.stopper.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some((stop, task)) = pair {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Takes room in the queue for one row, waiting up to [`QUEUE_WAIT`]. With
    /// `audit_required` a full queue is an error; without, the row is dropped,
    /// counted and logged, and `Ok(None)` lets the request through.
    pub async fn reserve(
        &self,
    ) -> Result<Option<mpsc::OwnedPermit<QueuedRecord>>, AuditUnavailable> {
        let permit = match self.tx.clone().try_reserve_owned() {
            Ok(p) => Ok(p),
            Err(mpsc::error::TrySendError::Full(tx)) => {
                match tokio::time::timeout(QUEUE_WAIT, tx.reserve_owned()).await {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(_)) => Err(false),
                    Err(_) => Err(true),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(false),
        };
        match permit {
            Ok(p) => Ok(Some(p)),
            // Stopped (shutting down): the log line is all that is left.
            Err(false) => Ok(None),
            Err(true) if self.required => Err(AuditUnavailable),
            Err(true) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One line per thousand drops: the log must not drown too.
                if n % 1000 == 1 {
                    tracing::error!(
                        dropped_total = n,
                        "audit queue full: decision kept only in the log"
                    );
                }
                Ok(None)
            }
        }
    }

    /// Logs the decision and queues its audit row with the room `permit` holds,
    /// or, for a repeat within an open window, only counts it (the room is
    /// given back).
    pub fn record(&self, log: &DecisionLog, permit: Option<mpsc::OwnedPermit<QueuedRecord>>) {
        let at = time::OffsetDateTime::now_utc().unix_timestamp();
        let head = match self
            .fold
            .decide(log, permit.is_some(), tokio::time::Instant::now(), at)
        {
            Fold::Folded => {
                tracing::debug!(
                    target: "berth::decision",
                    request_id = %log.request_id,
                    account = %log.account,
                    service = %log.service,
                    "token decision folded into an earlier row"
                );
                return;
            }
            Fold::Head(head) => Some(head),
            Fold::Alone => None,
        };
        record(log);
        if let Some(permit) = permit {
            permit.send(QueuedRecord {
                record: log.to_record(at),
                head,
            });
        }
    }

    /// Rows waiting in the queue, and rows dropped because it was full.
    pub fn stats(&self) -> (usize, u64) {
        (
            self.tx.max_capacity() - self.tx.capacity(),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// Open fold windows, and decisions folded into an earlier row so far.
    pub fn fold_stats(&self) -> (usize, u64) {
        self.fold.stats()
    }
}
