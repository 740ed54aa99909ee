//! The audit log table: one row per token decision.

use sqlx::any::AnyRow;
use sqlx::{Connection, Row};

use super::{Backend, Store, StoreError};

/// One decision as stored. Holds no secret, token or hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// Request id (also in the log line).
    pub request_id: String,
    /// Client address.
    pub client: String,
    /// Account (as authenticated, or as claimed when authentication failed).
    pub account: String,
    /// Identity kind (`user`, `robot`, …), empty when unknown.
    pub kind: String,
    /// Authentication backend.
    pub via: String,
    /// Service (audience).
    pub service: String,
    /// Requested scopes, space-separated.
    pub requested: String,
    /// Granted scopes, space-separated.
    pub granted: String,
    /// Requested but refused actions, as scopes, space-separated.
    pub denied: String,
    /// Ids of the rules that decided, space-separated.
    pub rules: String,
    /// `issued` or an error code.
    pub outcome: String,
    /// Client-facing error text, if any.
    pub error: String,
    /// Time spent, microseconds.
    pub latency_us: i64,
    /// The identity's subject exactly as policy saw it; `None` when no identity
    /// was established (a refused sign-in) or the row predates the snapshot.
    pub subject: Option<String>,
    /// The identity's groups as policy saw them, sorted; `None` like `subject`.
    pub groups: Option<Vec<String>>,
    /// Decisions this row stands for: 1, or more once repeated grants were
    /// folded into it.
    pub repeats: i64,
    /// Unix seconds of the last repeat folded into this row, if any.
    pub last_at: Option<i64>,
}

impl Default for AuditRecord {
    fn default() -> Self {
        AuditRecord {
            at: 0,
            request_id: String::new(),
            client: String::new(),
            account: String::new(),
            kind: String::new(),
            via: String::new(),
            service: String::new(),
            requested: String::new(),
            granted: String::new(),
            denied: String::new(),
            rules: String::new(),
            outcome: String::new(),
            error: String::new(),
            latency_us: 0,
            subject: None,
            groups: None,
            repeats: 1,
            last_at: None,
        }
    }
}

impl AuditRecord {
    /// Whether the row holds the identity as policy saw it (it can be replayed).
    pub fn snapshot(&self) -> bool {
        self.subject.is_some() && self.groups.is_some()
    }
}

/// The column an erasure rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasedColumn {
    /// `account` and `subject`.
    Account,
    /// `client`.
    Client,
}

/// Filters for [`Store::query_audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this account.
    pub account: Option<String>,
    /// Only requests naming this repository (substring of requested scopes).
    pub repository: Option<String>,
    /// Only records at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Only records with refused actions or failed outcomes.
    pub denied_only: bool,
    /// Most rows returned (newest first).
    pub limit: i64,
}

/// Columns of one audit row, in insert order.
const AUDIT_COLUMNS: &str = "at, request_id, client, account, kind, via, service, requested, \
     granted, denied, rules, outcome, error, latency_us, subject, groups, snapshot, repeats, last_at";
const AUDIT_COLUMN_COUNT: usize = 19;
/// Row counts of the multi-row `INSERT`s: a batch is split into statements of
/// these sizes (largest first), so a few statements serve every batch size and
/// each round trip to the database carries many rows.
const AUDIT_CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// `INSERT INTO audit_log (…) VALUES (…), (…)` for `rows` rows. SQLite gets
/// anonymous `?` parameters: it finds a numbered one by a linear search, which
/// would make a many-row statement cost quadratic time to bind.
fn audit_insert_sql(backend: Backend, rows: usize) -> &'static str {
    type Statements = Vec<(Backend, usize, String)>;
    static SQL: std::sync::OnceLock<Statements> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut all = Vec::new();
        for b in [Backend::Sqlite, Backend::Postgres] {
            for &n in &AUDIT_CHUNKS {
                let values: Vec<String> = (0..n)
                    .map(|r| {
                        let cols: Vec<String> = (1..=AUDIT_COLUMN_COUNT)
                            .map(|c| match b {
                                Backend::Sqlite => "?".to_owned(),
                                Backend::Postgres => format!("${}", r * AUDIT_COLUMN_COUNT + c),
                            })
                            .collect();
                        format!("({})", cols.join(", "))
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES {} RETURNING id",
                    values.join(", ")
                );
                all.push((b, n, sql));
            }
        }
        all
    });
    all.iter()
        .find(|(b, n, _)| *b == backend && *n == rows)
        .map_or("", |(_, _, sql)| sql.as_str())
}

/// Inserts `records`; returns their row ids, in order.
///
/// Ids are read back with `RETURNING id` and sorted: both databases number
/// the rows of one `INSERT … VALUES` in the order of its values (SQLite within
/// its single writer, PostgreSQL by calling the sequence row by row; another
/// writer may only leave gaps), while the order `RETURNING` lists them in is
/// not promised.
async fn insert_audit_in(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    records: &[AuditRecord],
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(records.len());
    let mut tx = conn.begin().await?;
    let mut rest = records;
    while !rest.is_empty() {
        let n = AUDIT_CHUNKS
            .iter()
            .copied()
            .find(|&n| n <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut q = sqlx::query(audit_insert_sql(backend, n));
        for r in chunk {
            q = q
                .bind(r.at)
                .bind(&r.request_id)
                .bind(&r.client)
                .bind(&r.account)
                .bind(&r.kind)
                .bind(&r.via)
                .bind(&r.service)
                .bind(&r.requested)
                .bind(&r.granted)
                .bind(&r.denied)
                .bind(&r.rules)
                .bind(&r.outcome)
                .bind(&r.error)
                .bind(r.latency_us)
                .bind(r.subject.clone())
                .bind(r.groups.as_deref().map(sorted_groups_json))
                .bind(i64::from(r.snapshot()))
                .bind(r.repeats.max(1))
                .bind(r.last_at);
        }
        let mut got: Vec<i64> = q
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        got.sort_unstable();
        ids.extend(got);
        rest = tail;
    }
    tx.commit().await?;
    Ok(ids)
}

async fn fold_audit_in(
    conn: &mut sqlx::AnyConnection,
    folds: &[(i64, i64, i64)],
) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    for &(id, repeats, last_at) in folds {
        sqlx::query(
            "UPDATE audit_log SET repeats = repeats + $1,
                 last_at = CASE WHEN last_at IS NULL OR last_at < $2 THEN $2 ELSE last_at END
             WHERE id = $3",
        )
        .bind(repeats)
        .bind(last_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sorted group names as stored (a JSON array).
pub(super) fn sorted_groups_json(groups: &[String]) -> String {
    let mut sorted: Vec<&String> = groups.iter().collect();
    sorted.sort();
    serde_json::to_string(&sorted).unwrap_or_else(|_| "[]".into())
}

/// Reads a stored group list; `None` for NULL or a value that is not a JSON
/// array of strings (never guessed).
pub(super) fn groups_from(stored: Option<String>) -> Option<Vec<String>> {
    serde_json::from_str(&stored?).ok()
}

fn from_row(r: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    let snapshot = r.try_get::<i64, _>("snapshot")? != 0;
    let (subject, groups) = if snapshot {
        (
            r.try_get::<Option<String>, _>("subject")?,
            groups_from(r.try_get("groups")?),
        )
    } else {
        (None, None)
    };
    Ok(AuditRecord {
        at: r.try_get("at")?,
        request_id: r.try_get("request_id")?,
        client: r.try_get("client")?,
        account: r.try_get("account")?,
        kind: r.try_get("kind")?,
        via: r.try_get("via")?,
        service: r.try_get("service")?,
        requested: r.try_get("requested")?,
        granted: r.try_get("granted")?,
        denied: r.try_get("denied")?,
        rules: r.try_get("rules")?,
        outcome: r.try_get("outcome")?,
        error: r.try_get("error")?,
        latency_us: r.try_get("latency_us")?,
        subject,
        groups,
        repeats: r.try_get("repeats")?,
        last_at: r.try_get("last_at")?,
    })
}

impl Store {
    /// Inserts records in one transaction (all or none).
    ///
    /// When any step fails the connection is closed instead of going back to the
    /// pool: SQLite may keep a transaction open after a failed `COMMIT` (a full
    /// disk), and a pooled connection still holding it would turn the next
    /// `BEGIN` into a savepoint whose rows are never committed, while blocking
    /// every other writer. Closing the handle rolls back and frees the lock.
    pub async fn insert_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.insert_audit_ids(records).await.map(drop)
    }

    /// Like [`Store::insert_audit`], returning the new rows' ids in order.
    pub async fn insert_audit_ids(&self, records: &[AuditRecord]) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let res = insert_audit_in(self.backend, &mut conn, records).await;
        if res.is_err() {
            if let Err(e) = conn.detach().close().await {
                tracing::debug!(error = %e, "closing a connection after a failed audit write");
            }
        }
        res
    }

    /// Adds folded repeats to written rows, all in one transaction: per row
    /// `(id, repeats, last_at)`.
    pub async fn fold_audit(&self, folds: &[(i64, i64, i64)]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let res = fold_audit_in(&mut conn, folds).await;
        if res.is_err() {
            // As for inserts: a failed transaction's connection is not reused.
            if let Err(e) = conn.detach().close().await {
                tracing::debug!(error = %e, "closing a connection after a failed audit write");
            }
        }
        res
    }

    /// Pseudonymises every audit row naming `value`: the account name (in
    /// `account` and `subject`) or the client address (`client`) becomes
    /// `pseudonym`. When any row changed, `record` (the erasure itself, naming
    /// only the pseudonym) is added in the same transaction. Returns the rows
    /// changed, and the rows that showed the pseudonym before (an earlier
    /// erasure of the same person).
    ///
    /// The old values may stay in the database's free space until
    /// [`Store::compact_audit`].
    pub async fn erase_audit(
        &self,
        column: ErasedColumn,
        value: &str,
        pseudonym: &str,
        record: &AuditRecord,
    ) -> Result<(u64, u64), StoreError> {
        let (update, count) = match column {
            ErasedColumn::Account => (
                "UPDATE audit_log
                 SET account = CASE WHEN account = $1 THEN $2 ELSE account END,
                     subject = CASE WHEN subject = $1 THEN $2 ELSE subject END
                 WHERE account = $1 OR subject = $1",
                "SELECT COUNT(*) FROM audit_log WHERE account = $1 OR subject = $1",
            ),
            ErasedColumn::Client => (
                "UPDATE audit_log SET client = $2 WHERE client = $1",
                "SELECT COUNT(*) FROM audit_log WHERE client = $1",
            ),
        };
        let mut tx = self.pool.begin().await?;
        let before: i64 = sqlx::query_scalar(count)
            .bind(pseudonym)
            .fetch_one(&mut *tx)
            .await?;
        let changed = sqlx::query(update)
            .bind(value)
            .bind(pseudonym)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed > 0 {
            insert_audit_in(self.backend, &mut tx, std::slice::from_ref(record)).await?;
        }
        tx.commit().await?;
        Ok((changed, u64::try_from(before).unwrap_or(0)))
    }

    /// Rewrites the audit log's storage so that values replaced by an erasure
    /// leave the disk: SQLite `VACUUM` (the whole file; writers wait until it
    /// ends) and an emptied write-ahead log; PostgreSQL `VACUUM FULL audit_log`
    /// (the table is locked while it runs).
    pub async fn compact_audit(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("VACUUM").execute(&mut *conn).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await?;
            }
            Backend::Postgres => {
                sqlx::query("VACUUM FULL audit_log")
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Queries the audit log, newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        // Fixed SQL with optional filters expressed as parameters, so no user input
        // is ever spliced into the statement.
        let rows = sqlx::query(
            "SELECT at, request_id, client, account, kind, via, service, requested, granted,
                    denied, rules, outcome, error, latency_us, subject, groups, snapshot, repeats,
                    last_at
             FROM audit_log
             WHERE ($1 = '' OR account = $1)
               AND ($2 = '' OR requested LIKE $3 ESCAPE '\\')
               AND at >= $4
               AND ($5 = 0 OR denied <> '' OR (outcome <> 'issued' AND outcome <> 'erased'))
             ORDER BY at DESC, id DESC
             LIMIT $6",
        )
        .bind(q.account.clone().unwrap_or_default())
        .bind(q.repository.clone().unwrap_or_default())
        .bind(format!(
            "%:{}:%",
            // Escaped, not dropped: `_` is a LIKE wildcard and part of many names.
            q.repository
                .clone()
                .unwrap_or_default()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ))
        .bind(q.since.unwrap_or(0))
        .bind(i64::from(q.denied_only))
        .bind(q.limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Deletes records older than `before` (unix seconds); returns how many.
    pub async fn purge_audit(&self, before: i64) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }
}
