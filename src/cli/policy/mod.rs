//! `berth policy …`: check, test and lint policy files; list who may do an
//! action (`who-can`); replay requests against a candidate policy (`diff`).

mod diff;
mod replay;
mod who_can;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::Subcommand;

use crate::config::Config;
use crate::policy::explain::explain;
use crate::policy::load::Loaded;
use crate::policy::{default, lint, load_dir, testfile, Identity, Kind, Request};
use crate::scope::Scope;
use crate::store::Store;
use crate::types::Username;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show what a request would be granted, and why.
    Check {
        /// Look the identity up in the database (groups, kind user).
        #[arg(long, conflicts_with_all = ["account", "groups"])]
        user: Option<Username>,
        /// Account name, given by hand.
        #[arg(long)]
        account: Option<String>,
        /// Group, given by hand (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Identity kind: user, robot, anonymous, federated.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<Kind>,
        /// Service (audience); the first configured one by default.
        #[arg(long)]
        service: Option<String>,
        /// Client address.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Requested scope (repeatable), e.g. repository:alice/app:pull,push.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Show, per action, the rules that allowed or denied it.
        #[arg(long)]
        explain: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Policy directory (default: the configured one, or the built-in
        /// default policy while that does not exist).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Run policy tests: `[[case]]` files (default `<policies>/tests/*.toml`).
    Test {
        /// Directory of test files.
        dir: Option<PathBuf>,
        /// Policy directory (default: the configured one, or the built-in
        /// default policy while that does not exist).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// List every identity the policy lets do ACTION on REPOSITORY: local users
    /// and robots by name (groups from the database), groups, federated groups
    /// and roles, account patterns, kinds, anonymous; with the rules that grant
    /// it and the denies that cancel it. REPOSITORY is one name, not a pattern.
    WhoCan(who_can::WhoCanArgs),
    /// Replay recorded requests (the audit log, or --cases) against the live
    /// policy and a candidate; report every grant gained or lost. Exits 1 when
    /// any access would be lost, unless --allow-loss.
    Diff(diff::DiffArgs),
    /// Report rules that can never match, allows always cancelled by a deny,
    /// group rules without `kind` (federated users could match them), unknown
    /// actions and files without rules.
    Lint {
        /// Policy directory (default: the configured one, or the built-in
        /// default policy while that does not exist).
        #[arg(long)]
        policies: Option<PathBuf>,
    },
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    match s {
        "user" => Ok(Kind::User),
        "robot" => Ok(Kind::Robot),
        "anonymous" => Ok(Kind::Anonymous),
        "federated" => Ok(Kind::Federated),
        "directory" => Ok(Kind::Directory),
        other => Err(format!(
            "unknown kind {other:?} (user, robot, anonymous, federated, directory)"
        )),
    }
}

/// Where a policy command reads the policy from.
pub(super) enum Source {
    /// A directory: `--policies` as given, or the configured one that exists.
    Dir(PathBuf),
    /// The configured directory does not exist yet (`berth serve` writes the
    /// default into it on first start): the built-in copy of that default.
    Builtin,
}

impl Source {
    /// `--policies DIR` is used as given, and fails if it is missing (a CI job
    /// must not pass on a typo); only the configured directory falls back.
    pub(super) fn pick(flag: Option<PathBuf>, config: &Config) -> Source {
        match flag {
            Some(dir) => Source::Dir(dir),
            None if default::is_missing(&config.policies_dir) => {
                eprintln!(
                    "berth: {} does not exist; using the built-in default policy (berth serve writes it there on first start)",
                    config.policies_dir.display()
                );
                Source::Builtin
            }
            None => Source::Dir(config.policies_dir.clone()),
        }
    }

    pub(super) fn load(&self) -> anyhow::Result<Loaded> {
        Ok(match self {
            Source::Dir(dir) => load_dir(dir)?,
            Source::Builtin => default::builtin()?,
        })
    }

    fn describe(&self) -> String {
        match self {
            Source::Dir(dir) => dir.display().to_string(),
            Source::Builtin => default::BUILTIN_NAME.to_owned(),
        }
    }
}

/// Runs every test file in `tdir` against `policy`.
fn run_dir(policy: &crate::policy::Policy, tdir: &Path) -> anyhow::Result<testfile::Report> {
    let files = testfile::test_files(tdir).map_err(|e| anyhow!(e))?;
    if files.is_empty() {
        bail!("no test files (*.toml) in {}", tdir.display());
    }
    testfile::run_files(policy, &files).map_err(|e| anyhow!(e))
}

pub async fn run(config: Config, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check {
            user,
            account,
            groups,
            kind,
            service,
            ip,
            scopes,
            explain: show_why,
            json,
            policies,
        } => {
            let policy = Source::pick(policies, &config).load()?.policy;
            let identity = match user {
                Some(name) => {
                    let store = Store::open(&config.database).await?;
                    let rec = store.find_user(&name).await?;
                    store.close().await;
                    let rec = rec.ok_or_else(|| anyhow!("no user named {name}"))?;
                    Identity {
                        subject: rec.username,
                        kind: kind.unwrap_or(Kind::User),
                        groups: rec.groups,
                        via: "local",
                    }
                }
                None => Identity {
                    kind: kind.unwrap_or(if account.is_some() {
                        Kind::User
                    } else {
                        Kind::Anonymous
                    }),
                    subject: account.unwrap_or_default(),
                    groups,
                    via: "check",
                },
            };
            let service = service.unwrap_or_else(|| config.services[0].name.clone());
            let req = Request {
                identity: &identity,
                service: &service,
                ip,
            };
            let results: Vec<_> = scopes.iter().map(|s| explain(&policy, &req, s)).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                for r in &results {
                    if show_why {
                        print!("{r}");
                    } else {
                        let granted = if r.granted.is_empty() {
                            "(nothing)".into()
                        } else {
                            r.granted.join(", ")
                        };
                        println!("{} -> {granted}", r.scope);
                    }
                }
            }
        }
        PolicyCommand::Test { dir, policies } => {
            let source = Source::pick(policies, &config);
            let policy = source.load()?.policy;
            let report = match (dir, &source) {
                (Some(tdir), _) => run_dir(&policy, &tdir)?,
                (None, Source::Dir(pdir)) => run_dir(&policy, &pdir.join("tests"))?,
                // The built-in policy with its own built-in cases.
                (None, Source::Builtin) => {
                    testfile::run_text(&policy, "(built-in policy tests)", default::TESTS)
                        .map_err(|e| anyhow!(e))?
                }
            };
            for f in &report.failures {
                print!("{f}");
            }
            println!(
                "policy tests: {} passed, {} failed",
                report.passed,
                report.failures.len()
            );
            if !report.failures.is_empty() {
                bail!("{} policy test(s) failed", report.failures.len());
            }
        }
        PolicyCommand::WhoCan(args) => who_can::run(&config, args).await?,
        PolicyCommand::Diff(args) => diff::run(&config, args).await?,
        PolicyCommand::Lint { policies } => {
            let source = Source::pick(policies, &config);
            let loaded = source.load()?;
            let mut findings = loaded.warnings;
            findings.extend(lint::lint(&loaded.policy));
            for f in &findings {
                println!("{f}");
            }
            if findings.is_empty() {
                println!(
                    "{}: {} rules, no findings",
                    source.describe(),
                    loaded.policy.rules().len()
                );
            } else {
                bail!("{} finding(s)", findings.len());
            }
        }
    }
    Ok(())
}
