//! `berth audit`: query token decisions.

use clap::Args;
use time::OffsetDateTime;

use super::robot::date;
use crate::config::{parse_duration, Config};
use crate::store::{AuditQuery, Store};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this account.
    #[arg(long)]
    user: Option<String>,
    /// Only requests for this repository.
    #[arg(long)]
    repo: Option<String>,
    /// Only the last DURATION, e.g. 1h or 7d.
    #[arg(long, value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// Only decisions that refused something.
    #[arg(long)]
    denied: bool,
    /// Most records (newest first).
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: Config, args: AuditArgs) -> anyhow::Result<()> {
    let store = Store::open(&config.database).await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let since = args
        .since
        .map(|d| i64::try_from(d.as_secs()).map(|s| now - s))
        .transpose()?;
    let records = store
        .query_audit(&AuditQuery {
            account: args.user,
            repository: args.repo,
            since,
            denied_only: args.denied,
            limit: args.limit,
        })
        .await;
    store.close().await;
    for r in records? {
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            let who = if r.account.is_empty() {
                "(anonymous)"
            } else {
                r.account.as_str()
            };
            println!(
                "{} {} {} {} {} [{}] granted: {} denied: {} rules: {}",
                date(Some(r.at)),
                r.request_id,
                r.client,
                who,
                r.outcome,
                r.requested,
                if r.granted.is_empty() {
                    "-"
                } else {
                    &r.granted
                },
                if r.denied.is_empty() { "-" } else { &r.denied },
                if r.rules.is_empty() { "-" } else { &r.rules },
            );
        }
    }
    Ok(())
}
