//! `berth policy diff --policies CANDIDATE`: replays requests (the audit log's,
//! or `--cases`) under the live policy and the candidate, and reports every
//! grant gained or lost. The replay itself is `policy::diff`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

use time::OffsetDateTime;

use super::replay::{replay_audit, CurrentGroups};
use super::Source;
use crate::config::{parse_duration, Config};
use crate::policy::diff::{cases, DiffReport, Differ};
use crate::policy::{load_dir, Policy};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The candidate policy directory (say, the policy repository's checkout
    /// of a pull request).
    #[arg(long = "policies", value_name = "CANDIDATE_DIR")]
    candidate: PathBuf,
    /// The live policy directory (default: the configured one, or the built-in
    /// default policy while that does not exist).
    #[arg(long, value_name = "DIR")]
    live: Option<PathBuf>,
    /// Replay the audit log of the last DURATION (e.g. 7d, 12h).
    #[arg(long, value_parser = parse_duration, default_value = "30d", conflicts_with = "cases")]
    since: Duration,
    /// Replay these cases instead of the audit log: a file, or a directory of
    /// `*.toml` files, of `[[case]]` entries as in policy test files
    /// (`expect` is ignored; `count` weighs a case).
    #[arg(long, value_name = "FILE")]
    cases: Option<PathBuf>,
    /// Exit 0 even when access would be lost (a reviewed loss).
    #[arg(long)]
    allow_loss: bool,
    /// Use local users' and robots' groups as the database holds them now,
    /// instead of the groups recorded with each request.
    #[arg(long, conflicts_with = "cases")]
    current_groups: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Loads the candidate; a candidate that does not load stops here, before
/// anything is replayed.
fn load_candidate(dir: &Path) -> anyhow::Result<Policy> {
    let loaded = load_dir(dir).map_err(|e| anyhow!("candidate policy does not load: {e}"))?;
    for w in &loaded.warnings {
        eprintln!("berth: candidate: {w}");
    }
    Ok(loaded.policy)
}

fn replay_cases(path: &Path, differ: &mut Differ<'_>) -> anyhow::Result<()> {
    for file in cases::files(path).map_err(|e| anyhow!(e))? {
        for case in cases::read(&file).map_err(|e| anyhow!(e))? {
            case.replay(differ);
        }
    }
    Ok(())
}

fn print(report: &DiffReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

pub async fn run(config: &Config, args: DiffArgs) -> anyhow::Result<()> {
    let candidate = load_candidate(&args.candidate)?;
    let live = Source::pick(args.live, config)
        .load()
        .context("live policy does not load")?
        .policy;
    let mut differ = Differ::new(&live, &candidate);
    match &args.cases {
        Some(path) => replay_cases(path, &mut differ)?,
        None => {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let since = now.saturating_sub(i64::try_from(args.since.as_secs()).unwrap_or(i64::MAX));
            let store = Store::open(&config.database).await?;
            let result = async {
                let current = match args.current_groups {
                    true => Some(CurrentGroups::read(&store, config).await?),
                    false => None,
                };
                replay_audit(
                    &store,
                    &config.database,
                    since,
                    current.as_ref(),
                    &mut differ,
                )
                .await
            }
            .await;
            store.close().await;
            result?;
        }
    }
    let report = differ.finish();
    print(&report, args.json)?;
    if report.has_loss() && !args.allow_loss {
        bail!(
            "{} request(s) would lose access; review the losses and pass --allow-loss to accept them",
            report.lost
        );
    }
    Ok(())
}
