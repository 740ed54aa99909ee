//! `berth user …`: local accounts.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::authn::{parse_group, password, Username};
use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from a prompt or from stdin.
    Add {
        /// Account name.
        name: Username,
        /// Group membership (repeatable).
        #[arg(long = "group", value_parser = parse_group)]
        groups: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password (revokes their sessions).
    Passwd {
        /// Account name.
        name: Username,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user and their sessions.
    Del {
        /// Account name.
        name: Username,
    },
    /// List users.
    List,
    /// Disable a user (revokes their sessions).
    Disable {
        /// Account name.
        name: Username,
    },
    /// Enable a disabled user.
    Enable {
        /// Account name.
        name: Username,
    },
    /// Change a user's groups.
    Groups {
        /// Account name.
        name: Username,
        /// Add to this group (repeatable).
        #[arg(long = "add", value_parser = parse_group)]
        add: Vec<String>,
        /// Remove from this group (repeatable).
        #[arg(long = "remove", value_parser = parse_group)]
        remove: Vec<String>,
    },
    /// Revoke all refresh tokens (docker logins) of a user.
    RevokeSessions {
        /// Account name.
        name: Username,
    },
    /// Lift a sign-in lockout: forget the failed password attempts counted for
    /// this account name, from every address (local or federated names alike).
    Unlock {
        /// Account name as it was typed at sign-in (case does not matter).
        name: String,
    },
    /// Import users from an htpasswd file (bcrypt hashes only; upgraded to argon2id
    /// at the next successful login).
    ImportHtpasswd {
        /// The htpasswd file.
        file: PathBuf,
        /// Group for every imported user (repeatable).
        #[arg(long = "group", value_parser = parse_group)]
        groups: Vec<String>,
    },
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn read_password(from_stdin: bool) -> anyhow::Result<SecretString> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading password from stdin")?;
        SecretString::from(line.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to prompt for a password: use --password-stdin");
        }
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        if first != second {
            bail!("passwords do not match");
        }
        SecretString::from(first)
    };
    if password.expose_secret().is_empty() {
        bail!("empty password");
    }
    if password.expose_secret().len() > 1024 {
        bail!("password longer than 1024 bytes");
    }
    Ok(password)
}

async fn hash(password: SecretString) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await?
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

pub async fn run(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database).await?;
    let result = execute(&store, cmd).await;
    store.close().await;
    result
}

async fn execute(store: &Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            mut groups,
            password_stdin,
        } => {
            let pw = read_password(password_stdin)?;
            groups.sort();
            groups.dedup();
            store
                .create_user(&name, &hash(pw).await?, &groups, now())
                .await?;
            println!("created user {name}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let pw = read_password(password_stdin)?;
            store.set_password(&name, &hash(pw).await?, now()).await?;
            println!("password changed for {name}; their sessions were revoked");
        }
        UserCommand::Del { name } => {
            store.delete_user(&name).await?;
            println!("deleted user {name}");
        }
        UserCommand::List => {
            let users = store.list_users().await?;
            println!("{:<24} {:<8} {:<20} GROUPS", "NAME", "STATUS", "CREATED");
            for u in users {
                let created = OffsetDateTime::from_unix_timestamp(u.created_at)
                    .map(|t| t.date().to_string())
                    .unwrap_or_default();
                println!(
                    "{:<24} {:<8} {:<20} {}",
                    u.username,
                    if u.disabled { "disabled" } else { "active" },
                    created,
                    u.groups.join(",")
                );
            }
        }
        UserCommand::Disable { name } => {
            store.set_disabled(&name, true, now()).await?;
            println!("disabled {name}; their sessions were revoked");
        }
        UserCommand::Enable { name } => {
            store.set_disabled(&name, false, now()).await?;
            println!("enabled {name}");
        }
        UserCommand::Groups { name, add, remove } => {
            let user = store
                .find_user(&name)
                .await?
                .ok_or_else(|| StoreError::NoSuchUser(name.to_string()))?;
            let mut groups: Vec<String> = user
                .groups
                .into_iter()
                .filter(|g| !remove.contains(g))
                .collect();
            groups.extend(add);
            groups.sort();
            groups.dedup();
            store.set_groups(&name, &groups, now()).await?;
            println!("{name}: groups {}", groups.join(","));
        }
        UserCommand::RevokeSessions { name } => {
            if store.find_user(&name).await?.is_none() {
                return Err(StoreError::NoSuchUser(name.to_string()).into());
            }
            let n = store.revoke_sessions(&name).await?;
            println!("revoked {n} session(s) of {name}");
        }
        UserCommand::Unlock { name } => {
            if name.is_empty() || name.len() > 256 {
                bail!("an account name is 1-256 bytes");
            }
            let n = crate::authn::throttle::unlock(store, &name).await?;
            println!("unlocked {name}: cleared {n} counter(s) of failed sign-ins");
        }
        UserCommand::ImportHtpasswd { file, mut groups } => {
            groups.sort();
            groups.dedup();
            import_htpasswd(store, &file, &groups).await?;
        }
    }
    Ok(())
}

async fn import_htpasswd(
    store: &Store,
    file: &std::path::Path,
    groups: &[String],
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (mut imported, mut skipped) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", file.display(), i + 1);
        let Some((user, hash)) = line.split_once(':') else {
            eprintln!("{at}: skipped: not user:hash");
            skipped += 1;
            continue;
        };
        let name: Username = match user.parse() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{at}: skipped: {e}");
                skipped += 1;
                continue;
            }
        };
        if password::kind_of(hash) != password::HashKind::Bcrypt {
            eprintln!("{at}: skipped {name}: only bcrypt ($2y$/$2b$) hashes can be imported");
            skipped += 1;
            continue;
        }
        match store.create_user(&name, hash, groups, now()).await {
            Ok(()) => imported += 1,
            Err(StoreError::UserExists(_)) => {
                eprintln!("{at}: skipped {name}: user exists already");
                skipped += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("imported {imported} user(s), skipped {skipped}");
    Ok(())
}
