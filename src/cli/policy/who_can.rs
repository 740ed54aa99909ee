//! `berth policy who-can REPOSITORY ACTION`: every identity the policy lets do
//! ACTION on REPOSITORY. Reads users and robots from the database; the answer
//! itself comes from `policy::who_can`.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Args;

use super::Source;
use crate::config::Config;
use crate::policy::who_can::{parse_target, who_can, Account, Directory, Who, WhoEntry};
use crate::store::Store;

#[derive(Debug, Args)]
pub struct WhoCanArgs {
    /// One repository name, e.g. team-a/api (a pattern such as team-*/api is
    /// refused: ask about a name under it).
    repository: String,
    /// The action: pull, push, delete or *.
    action: String,
    /// Service (audience); the first configured one by default. Must be a
    /// configured service.
    #[arg(long)]
    service: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Policy directory (default: the configured one, or the built-in
    /// default policy while that does not exist).
    #[arg(long)]
    policies: Option<PathBuf>,
}

/// Reads the stored accounts the answer lists by name.
async fn directory(config: &Config) -> anyhow::Result<Directory> {
    let store = Store::open(&config.database).await?;
    let users = store.list_users().await;
    let robots = store.list_robots().await;
    store.close().await;
    let mut role_prefixes: Vec<String> = config
        .oidc
        .providers
        .iter()
        .flat_map(|p| [p.realm_roles_prefix.clone(), p.client_roles_prefix.clone()])
        .filter(|p| !p.is_empty())
        .collect();
    if role_prefixes.is_empty() {
        role_prefixes.push("role:".to_owned());
    }
    role_prefixes.sort();
    role_prefixes.dedup();
    Ok(Directory {
        users: users?
            .into_iter()
            .map(|u| Account {
                name: u.username,
                groups: u.groups,
                disabled: u.disabled,
            })
            .collect(),
        robots: robots?
            .into_iter()
            .map(|r| Account {
                name: format!("{}{}", config.robot_prefix, r.name),
                groups: r.groups,
                disabled: r.disabled,
            })
            .collect(),
        role_prefixes,
    })
}

fn who_word(w: Who) -> &'static str {
    match w {
        Who::User => "user",
        Who::Robot => "robot",
        Who::Group => "group",
        Who::FederatedGroup => "federated group",
        Who::FederatedRole => "federated role",
        Who::DirectoryGroup => "directory group",
        Who::Account => "account",
        Who::Kind => "every",
        Who::Anonymous => "anonymous",
        Who::Everyone => "everyone",
    }
}

fn line(e: &WhoEntry) -> String {
    let mut who = match e.who {
        Who::Anonymous | Who::Everyone => who_word(e.who).to_owned(),
        _ => format!("{} {}", who_word(e.who), e.name),
    };
    let show_kinds = matches!(e.who, Who::Group | Who::Account) && !e.kinds.is_empty();
    if show_kinds {
        let kinds: Vec<String> = e.kinds.iter().map(ToString::to_string).collect();
        who.push_str(&format!(" ({})", kinds.join(", ")));
    }
    for c in &e.conditions {
        who.push_str(&format!(", {c}"));
    }
    let verdict = if e.granted { "yes" } else { "NO " };
    let mut why = vec![format!("allowed by {}", e.allowed_by.join(", "))];
    if !e.denied_by.is_empty() {
        why.push(format!("denied by {}", e.denied_by.join(", ")));
    }
    if !e.may_be_denied_by.is_empty() {
        why.push(format!(
            "may be denied by {}",
            e.may_be_denied_by.join(", ")
        ));
    }
    format!("  {verdict} {who}: {}", why.join("; "))
}

pub async fn run(config: &Config, args: WhoCanArgs) -> anyhow::Result<()> {
    let scope = parse_target(&args.repository, &args.action).map_err(|e| anyhow!(e))?;
    let service = match args.service {
        Some(s) => {
            if !config.services.iter().any(|c| c.name == s) {
                let known: Vec<&str> = config.services.iter().map(|c| c.name.as_str()).collect();
                bail!("unknown service {s:?} (configured: {})", known.join(", "));
            }
            s
        }
        None => config
            .services
            .first()
            .map(|c| c.name.clone())
            .ok_or_else(|| anyhow!("no service configured"))?,
    };
    let policy = Source::pick(args.policies, config).load()?.policy;
    let dir = directory(config).await?;
    let entries = who_can(&policy, &scope, &service, &dir);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "repository": args.repository,
                "action": args.action,
                "service": service,
                "entries": entries,
            }))?
        );
        return Ok(());
    }
    println!(
        "who can {} {} (service {service}):",
        args.action, args.repository
    );
    if entries.is_empty() {
        println!("  nobody: no rule allows it");
    }
    for e in &entries {
        println!("{}", line(e));
    }
    Ok(())
}
