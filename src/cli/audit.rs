//! `berth audit`: query token decisions; `berth audit erase`: pseudonymise one
//! person's rows on request.

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use super::robot::date;
use crate::audit::erasure::{ErasureKey, Subject};
use crate::config::{parse_duration, Config};
use crate::store::{AuditQuery, AuditRecord, ErasedColumn, Store};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
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

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Pseudonymise one person's audit rows (a privacy request): their name or
    /// client address becomes `erased:` and a keyed hash, the same in every
    /// row, so counts and decisions stay queryable. Recorded in the audit log.
    Erase(EraseArgs),
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["user", "address"])))]
struct EraseArgs {
    /// The account name, as the rows show it.
    #[arg(long)]
    user: Option<String>,
    /// The client address, as the rows show it.
    #[arg(long)]
    address: Option<String>,
    /// Then rewrite the audit log's storage, so the old values leave the disk
    /// too (SQLite: VACUUM of the whole file; PostgreSQL: VACUUM FULL of the
    /// audit table). Writers wait while it runs.
    #[arg(long)]
    vacuum: bool,
}

pub async fn run(config: Config, args: AuditArgs) -> anyhow::Result<()> {
    if let Some(AuditCommand::Erase(erase_args)) = args.command {
        return erase(config, erase_args).await;
    }
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
            println!("{}", line(&r));
        }
    }
    Ok(())
}

/// One record as `berth audit` prints it.
fn line(r: &AuditRecord) -> String {
    let who = if r.account.is_empty() {
        "(anonymous)"
    } else {
        r.account.as_str()
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    // A row standing for folded repeats says how many, and until when.
    let times = if r.repeats > 1 {
        format!(" ×{} until {}", r.repeats, date(r.last_at))
    } else {
        String::new()
    };
    format!(
        "{} {} {} {} {}{} [{}] granted: {} denied: {} rules: {}",
        date(Some(r.at)),
        r.request_id,
        r.client,
        who,
        r.outcome,
        times,
        r.requested,
        or_dash(&r.granted),
        or_dash(&r.denied),
        or_dash(&r.rules),
    )
}

async fn erase(config: Config, args: EraseArgs) -> anyhow::Result<()> {
    let (subject, column, what) = match (args.user.clone(), args.address.clone()) {
        (Some(user), None) => {
            if user.is_empty() || user.len() > 255 || user.chars().any(char::is_control) {
                anyhow::bail!("--user: not an account name");
            }
            (Subject::Account(user), ErasedColumn::Account, "account")
        }
        (None, Some(address)) => {
            // Rows hold the address in its canonical form.
            let ip: std::net::IpAddr = address
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--address: {address:?} is not an IP address"))?;
            (
                Subject::Address(ip.to_string()),
                ErasedColumn::Client,
                "address",
            )
        }
        _ => anyhow::bail!("give --user or --address"),
    };
    let key = ErasureKey::load_or_create(&config.keys_dir)?;
    let pseudonym = key.pseudonym(&subject);
    let value = match &subject {
        Subject::Account(v) | Subject::Address(v) => v.as_str(),
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let record = erasure_record(now, column, &pseudonym);
    let store = Store::open(&config.database).await?;
    let res = store.erase_audit(column, value, &pseudonym, &record).await;
    let res = match res {
        Ok(counts) if args.vacuum => store.compact_audit().await.map(|()| counts),
        other => other,
    };
    store.close().await;
    match res? {
        (0, 0) => anyhow::bail!("no audit row names the {what} {value:?}; nothing erased"),
        (0, before) => println!(
            "no audit row names that {what} any more: already erased ({before} rows show {pseudonym})"
        ),
        (changed, _) => println!(
            "{changed} audit rows pseudonymised: the {what} now shows as {pseudonym} (the erasure is recorded)"
        ),
    }
    Ok(())
}

/// The audit row recording an erasure: it names only the pseudonym.
fn erasure_record(now: i64, column: ErasedColumn, pseudonym: &str) -> AuditRecord {
    let mut raw = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
    let (account, client, what) = match column {
        ErasedColumn::Account => (pseudonym.to_owned(), String::new(), "account"),
        ErasedColumn::Client => (String::new(), pseudonym.to_owned(), "address"),
    };
    AuditRecord {
        at: now,
        request_id: data_encoding::HEXLOWER.encode(&raw),
        client,
        account,
        via: "cli".into(),
        outcome: "erased".into(),
        error: format!("{what} pseudonymised on request"),
        ..AuditRecord::default()
    }
}
