//! Feeding the audit log to `berth policy diff`: rows are streamed from the
//! database (SQLite in batches, by its own reader) and replayed one at a time,
//! so memory stays flat however many rows there are. A row is replayed once,
//! weighted by its repeat count.

use std::collections::HashMap;

use futures::StreamExt;

use crate::config::{Config, Database};
use crate::policy::diff::{parse_kind, parse_scopes, Differ, Replay};
use crate::policy::{Identity, Kind};
use crate::store::{audit_replay_sqlite, ReplayRow, Store};

/// Groups of local users and robots as the database holds them now, by the
/// subject policy sees (a robot's login name, prefix included).
pub struct CurrentGroups {
    accounts: HashMap<(Kind, String), Vec<String>>,
}

impl CurrentGroups {
    /// Reads every user and robot.
    pub async fn read(store: &Store, config: &Config) -> anyhow::Result<Self> {
        let mut accounts = HashMap::new();
        for u in store.list_users().await? {
            accounts.insert((Kind::User, u.username), u.groups);
        }
        for r in store.list_robots().await? {
            accounts.insert(
                (Kind::Robot, format!("{}{}", config.robot_prefix, r.name)),
                r.groups,
            );
        }
        Ok(CurrentGroups { accounts })
    }
}

fn replay_row(row: ReplayRow, current: Option<&CurrentGroups>, differ: &mut Differ<'_>) {
    let weight = u64::try_from(row.repeats).unwrap_or(1).max(1);
    let Some(rec) = row.identity else {
        differ.not_replayable(weight);
        return;
    };
    let Some(kind) = parse_kind(&rec.kind) else {
        differ.not_replayable(weight);
        return;
    };
    let Some(scopes) = parse_scopes(&row.requested) else {
        differ.unreadable(weight);
        return;
    };
    let mut groups = rec.groups;
    if let Some(cur) = current {
        if matches!(kind, Kind::User | Kind::Robot) {
            match cur.accounts.get(&(kind, rec.subject.clone())) {
                Some(g) => groups = g.clone(),
                None => {
                    differ.gone(weight);
                    return;
                }
            }
        }
    }
    let identity = Identity {
        subject: rec.subject,
        kind,
        groups,
        via: "replay",
    };
    differ.add(&Replay {
        identity: &identity,
        service: &row.service,
        ip: row.client.parse().ok(),
        scopes: &scopes,
        weight,
    });
}

/// Replays every row recorded at or after `since` (unix seconds). SQLite is
/// read in batches by its own reader; PostgreSQL through the store's stream.
pub async fn replay_audit(
    store: &Store,
    database: &Database,
    since: i64,
    current: Option<&CurrentGroups>,
    differ: &mut Differ<'_>,
) -> anyhow::Result<()> {
    if let Database::Sqlite(path) = database {
        let mut batches = audit_replay_sqlite(path, since);
        while let Some(batch) = batches.recv().await {
            for row in batch? {
                replay_row(row, current, differ);
            }
        }
        return Ok(());
    }
    let mut rows = store.audit_replay(since);
    while let Some(row) = rows.next().await {
        replay_row(row?, current, differ);
    }
    Ok(())
}
