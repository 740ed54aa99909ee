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
     granted, denied, rules, outcome, error, latency_us";
const AUDIT_COLUMN_COUNT: usize = 14;
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
                    "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES {}",
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

async fn insert_audit_in(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
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
                .bind(r.latency_us);
        }
        q.execute(&mut *tx).await?;
        rest = tail;
    }
    tx.commit().await?;
    Ok(())
}

fn from_row(r: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
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
        let mut conn = self.pool.acquire().await?;
        let res = insert_audit_in(self.backend, &mut conn, records).await;
        if res.is_err() {
            if let Err(e) = conn.detach().close().await {
                tracing::debug!(error = %e, "closing a connection after a failed audit write");
            }
        }
        res
    }

    /// Queries the audit log, newest first.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        // Fixed SQL with optional filters expressed as parameters, so no user input
        // is ever spliced into the statement.
        let rows = sqlx::query(
            "SELECT at, request_id, client, account, kind, via, service, requested, granted, denied,
                    rules, outcome, error, latency_us
             FROM audit_log
             WHERE ($1 = '' OR account = $1)
               AND ($2 = '' OR requested LIKE $3 ESCAPE '\\')
               AND at >= $4
               AND ($5 = 0 OR denied <> '' OR outcome <> 'issued')
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
