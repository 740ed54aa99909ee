//! `berth token …`: personal access tokens.

use clap::Subcommand;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use super::robot::date;
use crate::authn::machine::{new_secret, ACCESS_TOKEN_PREFIX};
use crate::config::{parse_duration, Config};
use crate::policy::limit::Limit;
use crate::store::Store;
use crate::types::Username;

fn parse_token_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid token name {s:?}: use 1-64 letters, digits, '.', '_' or '-'"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a personal access token; it is shown once. Used as the password of
    /// its owner, it grants what both the owner's policy and its limits allow.
    Create {
        /// Owner.
        #[arg(long)]
        user: Username,
        /// Token name (default: a timestamp).
        #[arg(long, value_parser = parse_token_name)]
        name: Option<String>,
        /// Scope limit, e.g. 'repository:team-a/**:pull' (repeatable; at least one).
        #[arg(long = "limit", required = true)]
        limits: Vec<Limit>,
        /// Lifetime, e.g. 30d.
        #[arg(long, value_parser = parse_duration, default_value = "30d")]
        expires: std::time::Duration,
    },
    /// List a user's tokens (never the secrets).
    List {
        /// Owner.
        #[arg(long)]
        user: Username,
    },
    /// Revoke a token.
    Revoke {
        /// Owner.
        #[arg(long)]
        user: Username,
        /// Token name.
        #[arg(value_parser = parse_token_name)]
        name: String,
    },
}

pub async fn run(config: Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database).await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let result = async {
        match cmd {
            TokenCommand::Create {
                user,
                name,
                limits,
                expires,
            } => {
                let name = name.unwrap_or_else(|| format!("token-{now}"));
                let expires_at = now.saturating_add(i64::try_from(expires.as_secs())?);
                let limits: Vec<String> = limits.iter().map(ToString::to_string).collect();
                let (secret, hash) = new_secret(ACCESS_TOKEN_PREFIX)?;
                store
                    .create_access_token(&user, &name, &hash, &limits, Some(expires_at), now)
                    .await?;
                println!(
                    "created token {name} for {user}, expires {}",
                    date(Some(expires_at))
                );
                println!("limits: {}", limits.join(" "));
                println!("token (shown once): {}", secret.expose_secret());
                println!(
                    "use it as the password: docker login -u {user} --password-stdin REGISTRY"
                );
            }
            TokenCommand::List { user } => {
                println!(
                    "{:<24} {:<17} {:<17} {:<17} LIMITS",
                    "NAME", "CREATED", "EXPIRES", "LAST USED"
                );
                for t in store.list_access_tokens(&user).await? {
                    println!(
                        "{:<24} {:<17} {:<17} {:<17} {}",
                        t.name,
                        date(Some(t.created_at)),
                        date(t.expires_at),
                        date(t.last_used_at),
                        t.limits.join(" ")
                    );
                }
            }
            TokenCommand::Revoke { user, name } => {
                store.revoke_access_token(&user, &name).await?;
                println!("revoked token {name} of {user}");
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}
