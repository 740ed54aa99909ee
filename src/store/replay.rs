//! Reading the audit log back for replay: every recorded decision since a time,
//! oldest first, streamed row by row (memory stays flat over millions of rows),
//! with the identity exactly as policy saw it when the row holds a snapshot.
//!
//! Rows written by a berth without snapshots, and refused sign-ins (no identity
//! was established), come back with `identity: None`: not replayable, never
//! guessed from today's accounts.

use futures::stream::{BoxStream, StreamExt};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::groups_from;
use super::{Store, StoreError};

/// One recorded decision as replay needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRow {
    /// Row id.
    pub id: i64,
    /// Unix seconds of the decision (the first one, for a folded row).
    pub at: i64,
    /// Unix seconds of the last decision the row stands for (`at` when nothing
    /// was folded into it).
    pub last_at: i64,
    /// Decisions the row stands for (1, or more for folded repeats): the weight
    /// of its replay.
    pub repeats: i64,
    /// Account as recorded (as claimed, for a refused sign-in).
    pub account: String,
    /// Client address as recorded.
    pub client: String,
    /// Service (audience).
    pub service: String,
    /// The stored `requested` column, unchanged: scopes, space-separated.
    pub requested: String,
    /// The stored `granted` column: granted scopes, space-separated.
    pub granted: String,
    /// `issued` or an error code.
    pub outcome: String,
    /// The identity as policy saw it; `None` when the row cannot be replayed.
    pub identity: Option<RecordedIdentity>,
}

/// An identity as recorded with a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedIdentity {
    /// Subject (policy's `Identity::subject`); empty for anonymous.
    pub subject: String,
    /// Kind (`user`, `robot`, `anonymous`, `federated`, `directory`).
    pub kind: String,
    /// Group names as policy saw them, sorted.
    pub groups: Vec<String>,
    /// Authentication backend.
    pub via: String,
}

fn replay_row(r: &AnyRow) -> Result<ReplayRow, sqlx::Error> {
    let at: i64 = r.try_get("at")?;
    let snapshot = r.try_get::<i64, _>("snapshot")? != 0;
    let subject: Option<String> = r.try_get("subject")?;
    let groups = groups_from(r.try_get("groups")?);
    let kind: String = r.try_get("kind")?;
    let identity = match (snapshot, subject, groups) {
        (true, Some(subject), Some(groups)) if !kind.is_empty() => Some(RecordedIdentity {
            subject,
            kind,
            groups,
            via: r.try_get("via")?,
        }),
        _ => None,
    };
    Ok(ReplayRow {
        id: r.try_get("id")?,
        at,
        last_at: r.try_get::<Option<i64>, _>("last_at")?.unwrap_or(at),
        repeats: r.try_get("repeats")?,
        account: r.try_get("account")?,
        client: r.try_get("client")?,
        service: r.try_get("service")?,
        requested: r.try_get("requested")?,
        granted: r.try_get("granted")?,
        outcome: r.try_get("outcome")?,
        identity,
    })
}

impl Store {
    /// Every decision recorded at or after `since` (unix seconds), by id,
    /// streamed from the database (one row in memory at a time on this side).
    /// The records of erasures (`berth audit erase`) are not decisions and are
    /// left out.
    pub fn audit_replay(&self, since: i64) -> BoxStream<'_, Result<ReplayRow, StoreError>> {
        sqlx::query(
            "SELECT id, at, last_at, repeats, account, client, kind, via, service, requested,
                    granted, outcome, subject, groups, snapshot
             FROM audit_log WHERE at >= $1 AND outcome <> 'erased' ORDER BY id",
        )
        .bind(since)
        .fetch(&self.pool)
        .map(|row| Ok(replay_row(&row?)?))
        .boxed()
    }
}
