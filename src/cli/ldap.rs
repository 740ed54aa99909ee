//! `berth ldap …`: check `[[ldap]]` directories from the command line (the
//! fastest way to debug a filter or a group setting), and revoke a directory
//! user's docker logins.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::authn::ldap::config::{Transport, UserLookup};
use crate::authn::ldap::{Directory, DirectoryConfig};
use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum LdapCommand {
    /// Connect to each directory and bind as the service account; with
    /// `--user`, also search that user, check the password with a bind, and show
    /// the DN, the groups and the identity policy would see.
    Check {
        /// Only this directory (by `name`).
        #[arg(long)]
        directory: Option<String>,
        /// Check this user.
        #[arg(long)]
        user: Option<String>,
        /// Read the password from the first line of stdin instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Revoke a directory user's docker logins (refresh tokens). Disable the
    /// user in the directory to keep them from signing in again.
    RevokeUser {
        /// Account name as policy sees it.
        user: String,
        /// Only in this directory (by `name`).
        #[arg(long)]
        directory: Option<String>,
    },
}

fn password(from_stdin: bool, user: &str) -> anyhow::Result<SecretString> {
    let pw = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        rpassword::prompt_password(format!("Password for {user}: "))?
    };
    Ok(SecretString::from(pw))
}

pub async fn run(config: Config, cmd: LdapCommand) -> anyhow::Result<()> {
    let (directory, user, password_stdin) = match cmd {
        LdapCommand::Check {
            directory,
            user,
            password_stdin,
        } => (directory, user, password_stdin),
        LdapCommand::RevokeUser { user, directory } => {
            let store = Store::open(&config.database).await?;
            let n = store
                .revoke_ldap_username(directory.as_deref(), &user.to_lowercase())
                .await;
            store.close().await;
            println!("revoked {} docker login(s) of {user}", n?);
            return Ok(());
        }
    };
    let chosen: Vec<_> = config
        .ldap
        .iter()
        .filter(|d| directory.as_deref().is_none_or(|n| n == d.name))
        .collect();
    if chosen.is_empty() {
        bail!(match directory {
            Some(n) => format!("no [[ldap]] directory named {n:?}"),
            None => "no [[ldap]] directory is configured".to_owned(),
        });
    }
    let pw = match &user {
        Some(u) => Some(password(password_stdin, u)?),
        None => None,
    };
    let mut failed = 0;
    for cfg in chosen {
        describe(cfg);
        let d = match Directory::new(cfg.clone()) {
            Ok(d) => d,
            Err(e) => {
                println!("  FAILED: {e}");
                failed += 1;
                continue;
            }
        };
        if let Err(e) = check(&d, user.as_deref(), pw.as_ref()).await {
            println!("  FAILED: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} directory(ies) failed the check");
    }
    Ok(())
}

fn describe(cfg: &DirectoryConfig) {
    println!("{}", cfg.name);
    for u in &cfg.urls {
        let how = match u.transport {
            Transport::Ldaps => "TLS",
            Transport::StartTls => "StartTLS",
            Transport::Plain => "NO TLS (insecure_no_tls)",
        };
        println!("  server   {} ({how})", u.url);
    }
    match &cfg.user {
        UserLookup::Search { base, filter, .. } => {
            println!("  users    {filter} under {base}")
        }
        UserLookup::Dn(t) => println!("  users    {t}"),
    }
    if cfg.groups_prefix.is_empty() {
        println!("  note: groups_prefix is empty: directory groups share names with local groups");
    }
}

async fn check(d: &Directory, user: Option<&str>, pw: Option<&SecretString>) -> anyhow::Result<()> {
    d.probe().await?;
    match &d.cfg.bind {
        Some((dn, _)) => println!("  service bind as {dn}: ok"),
        None => println!("  anonymous bind: ok"),
    }
    let (Some(user), Some(pw)) = (user, pw) else {
        return Ok(());
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let u = d.authenticate(user, pw, now).await?;
    println!("  password of {user}: accepted");
    println!("    dn       {}", u.dn);
    println!("    account  {} (kind directory)", u.username);
    if u.groups.is_empty() {
        println!("    groups   none (check group_attribute / group_base and group_filter)");
    } else {
        println!("    groups   {}", u.groups.join(", "));
    }
    if u.groups_cut {
        println!(
            "    note: more than max_groups = {} groups; the rest are ignored",
            d.cfg.max_groups
        );
    }
    Ok(())
}
