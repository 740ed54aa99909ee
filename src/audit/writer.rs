//! The database writer task: takes queued rows in batches, writes them (keeping
//! them and retrying while the database is down), records the row ids of fold
//! windows' first rows, and adds closed windows' counts to those rows; at
//! shutdown it writes what is queued and every open window's count, within the
//! grace period.
//!
//! Memory: the queue (tokio's bounded channel) takes room for rows in blocks
//! of 32 as they wait and gives it back as they are written, so what it holds
//! follows the rows waiting, not `audit_queue`: with the writer keeping up, and
//! repeated grants folded (they queue nothing), it stays small under load; it
//! grows toward `audit_queue` rows only while the database is slow or down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::fold::{Closed, FoldTable};
use super::{QueuedRecord, BATCH, GATHER};
use crate::store::{AuditRecord, Store};

/// What the writer task works with.
pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) fold: Arc<FoldTable>,
    pub(super) grace: Duration,
    pub(super) in_hand: usize,
    pub(super) sweep: Duration,
}

impl Writer {
    /// Adds the counts of closed windows whose rows are written; keeps the
    /// others (their rows are still on the way) and those a failed write left.
    async fn flush(&self, pending: &mut Vec<Closed>) -> Result<(), crate::store::StoreError> {
        let ready: Vec<(i64, i64, i64)> = pending
            .iter()
            .filter_map(|c| {
                let id = c.head.id()?;
                Some((id, i64::try_from(c.repeats).unwrap_or(i64::MAX), c.last_at))
            })
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        self.store.fold_audit(&ready).await?;
        pending.retain(|c| {
            if c.head.id().is_none() {
                return true;
            }
            tracing::info!(
                target: "berth::audit",
                request_id = %c.request_id,
                repeats = c.repeats,
                last_at = c.last_at,
                "repeated grants folded into the decision's row"
            );
            false
        });
        Ok(())
    }
}

pub(super) async fn writer(
    w: Writer,
    mut rx: mpsc::Receiver<QueuedRecord>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut buffer: Vec<QueuedRecord> = Vec::new();
    // Closed windows whose counts are not written yet.
    let mut pending: Vec<Closed> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut closed = false;
    let mut closed_at: Option<tokio::time::Instant> = None;
    let mut next_sweep = tokio::time::Instant::now() + w.sweep;
    loop {
        if buffer.is_empty() && !closed {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => buffer.push(r),
                    None => closed = true,
                },
                _ = &mut stop => closed = true,
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
            // Let a burst gather for a moment: one transaction per burst, not one
            // per request, keeps the database's work off busy token traffic.
            let deadline = tokio::time::Instant::now() + GATHER;
            while !closed && !buffer.is_empty() && buffer.len() < BATCH {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => buffer.push(r),
                        None => closed = true,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = &mut stop => closed = true,
                }
            }
        }
        if closed {
            // Take everything still queued; nothing new is waited for.
            while let Ok(r) = rx.try_recv() {
                buffer.push(r);
            }
            if buffer.is_empty() {
                break;
            }
        }
        // Gather what else is waiting, up to a batch.
        while !buffer.is_empty() && buffer.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => buffer.push(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let n = buffer.len().min(BATCH);
        let written = if n == 0 {
            Ok(())
        } else {
            let records: Vec<AuditRecord> = buffer[..n].iter().map(|q| q.record.clone()).collect();
            w.store.insert_audit_ids(&records).await.map(|ids| {
                for (q, id) in buffer.drain(..n).zip(ids) {
                    if let Some(head) = q.head {
                        head.written(id);
                    }
                }
            })
        };
        let written = match written {
            Ok(()) if tokio::time::Instant::now() >= next_sweep && !closed => {
                next_sweep = tokio::time::Instant::now() + w.sweep;
                pending.extend(w.fold.close(tokio::time::Instant::now(), false));
                w.flush(&mut pending).await
            }
            other => other,
        };
        match written {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, pending = buffer.len(), "audit records not written yet; retrying");
                // Once stopping, retries end with the grace period, which a
                // backoff sleep never overruns.
                let mut wait = backoff;
                if closed {
                    let since = *closed_at.get_or_insert_with(tokio::time::Instant::now);
                    let left = w.grace.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        tracing::error!(
                            lost = buffer.len(),
                            "shutting down with audit records unwritten (kept in the log)"
                        );
                        buffer.clear();
                        break;
                    }
                    wait = wait.min(left);
                }
                // Keep receiving while waiting, so the channel does not grow unseen;
                // a stop ends the wait, so the grace period starts at once.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        r = rx.recv(), if !closed && buffer.len() < w.in_hand => match r {
                            Some(r) => buffer.push(r),
                            None => {
                                closed = true;
                                break;
                            }
                        },
                        _ = &mut stop, if !closed => {
                            closed = true;
                            break;
                        }
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    final_flush(&w, pending, closed_at).await;
}

/// At shutdown: closes every window and adds its count to its row, retrying
/// within what is left of the grace period.
async fn final_flush(
    w: &Writer,
    mut pending: Vec<Closed>,
    closed_at: Option<tokio::time::Instant>,
) {
    pending.extend(w.fold.close(tokio::time::Instant::now(), true));
    // A window whose first row was never written has nowhere to go.
    pending.retain(|c| c.head.id().is_some());
    let since = closed_at.unwrap_or_else(tokio::time::Instant::now);
    let mut backoff = Duration::from_millis(100);
    while !pending.is_empty() {
        match w.flush(&mut pending).await {
            Ok(()) => return,
            Err(e) => {
                let left = w.grace.saturating_sub(since.elapsed());
                if left.is_zero() {
                    let lost: u64 = pending.iter().map(|c| c.repeats).sum();
                    tracing::error!(
                        error = %e,
                        lost,
                        "shutting down with folded repeat counts unwritten"
                    );
                    return;
                }
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
