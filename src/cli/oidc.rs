//! `berth oidc …`: check `[[oidc]]` providers from the command line, before
//! users find out that a mapper or a client setting is missing; list and revoke
//! what federated users hold (sign-in page tokens, docker logins).

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;
use secrecy::SecretString;
use time::OffsetDateTime;

use super::robot::date;
use crate::authn::oidc::Provider;
use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum OidcCommand {
    /// Fetch each provider's discovery document and signing keys; with
    /// `--user`, check that user's password with the direct grant and show the
    /// name and groups policy would see.
    Check {
        /// Only this provider (by `name`).
        #[arg(long)]
        provider: Option<String>,
        /// Check this user's password.
        #[arg(long)]
        user: Option<String>,
        /// Read the password from the first line of stdin instead of a prompt.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the tokens federated users minted on the sign-in page (never the
    /// secrets).
    Tokens {
        /// Only this provider (by `name`).
        #[arg(long)]
        provider: Option<String>,
        /// Only this federated username.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke sign-in page tokens by the ids `berth oidc tokens` shows.
    Revoke {
        /// Token ids.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Revoke everything a federated user holds: docker logins (refresh
    /// sessions) and sign-in page tokens. Disable the user at the provider to
    /// keep them from signing in again.
    RevokeUser {
        /// Federated username.
        user: String,
        /// Only at this provider (by `name`).
        #[arg(long)]
        provider: Option<String>,
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

pub async fn run(config: Config, cmd: OidcCommand) -> anyhow::Result<()> {
    let (provider, user, password_stdin) = match cmd {
        OidcCommand::Check {
            provider,
            user,
            password_stdin,
        } => (provider, user, password_stdin),
        other => return held(&config, other).await,
    };
    let chosen: Vec<_> = config
        .oidc
        .providers
        .iter()
        .filter(|p| provider.as_deref().is_none_or(|n| n == p.name))
        .collect();
    if chosen.is_empty() {
        bail!(match provider {
            Some(n) => format!("no [[oidc]] provider named {n:?}"),
            None => "no [[oidc]] provider is configured".to_owned(),
        });
    }
    let pw = match &user {
        Some(u) => Some(password(password_stdin, u)?),
        None => None,
    };
    let mut failed = 0;
    for cfg in chosen {
        println!("{} ({})", cfg.name, cfg.issuer);
        let p = match Provider::new(cfg.clone()) {
            Ok(p) => p,
            Err(e) => {
                println!("  FAILED: {e}");
                failed += 1;
                continue;
            }
        };
        if let Err(e) = check(&p, user.as_deref(), pw.as_ref()).await {
            println!("  FAILED: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} provider(s) failed the check");
    }
    Ok(())
}

async fn check(p: &Provider, user: Option<&str>, pw: Option<&SecretString>) -> anyhow::Result<()> {
    let meta = p.metadata().await?;
    println!("  discovery: ok");
    println!("    authorization endpoint {}", meta.authorization_endpoint);
    println!("    token endpoint         {}", meta.token_endpoint);
    let keys = p.signing_keys().await?;
    println!("  signing keys: {keys} usable");
    let (Some(user), Some(pw)) = (user, pw) else {
        return Ok(());
    };
    if !p.cfg.password_grant {
        bail!("password_grant = false for this provider");
    }
    let tokens = p.password_grant(user, pw, false).await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let u = p.user_from_access_token(&tokens.access_token, now).await?;
    println!("  password of {user}: accepted");
    println!(
        "    account  {} (kind federated, subject {})",
        u.username, u.subject
    );
    if u.groups.is_empty() {
        println!("    groups   none (is the group membership mapper on the access token?)");
    } else {
        println!("    groups   {}", u.groups.join(", "));
    }
    if tokens.refresh_token.is_none() {
        println!("    note: no refresh token: docker would keep the password on disk");
    }
    Ok(())
}

/// `tokens`, `revoke`, `revoke-user`: what federated users hold, in the database.
async fn held(config: &Config, cmd: OidcCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database).await?;
    let result = async {
        match cmd {
            OidcCommand::Check { .. } => {}
            OidcCommand::Tokens { provider, user } => {
                println!(
                    "{:<6} {:<12} {:<24} {:<17} {:<17} {:<17} {:<18} DESCRIPTION",
                    "ID", "PROVIDER", "USER", "CREATED", "EXPIRES", "LAST USED", "ACTIONS"
                );
                let tokens = store
                    .list_all_oidc_tokens(provider.as_deref(), user.as_deref())
                    .await?;
                for t in tokens {
                    println!(
                        "{:<6} {:<12} {:<24} {:<17} {:<17} {:<17} {:<18} {}",
                        t.id,
                        t.owner.provider,
                        t.owner.username,
                        date(Some(t.created_at)),
                        date(Some(t.expires_at)),
                        date(t.last_used_at),
                        t.actions.join(","),
                        t.description
                    );
                }
            }
            OidcCommand::Revoke { ids } => {
                let mut missing = Vec::new();
                for id in ids {
                    if store.delete_oidc_token(id, None).await? {
                        println!("revoked sign-in page token {id}");
                    } else {
                        missing.push(id.to_string());
                    }
                }
                if !missing.is_empty() {
                    bail!("no sign-in page token with id {}", missing.join(", "));
                }
            }
            OidcCommand::RevokeUser { user, provider } => {
                let n = store
                    .revoke_oidc_username(provider.as_deref(), &user)
                    .await?;
                println!("revoked {n} docker login(s) and sign-in page token(s) of {user}");
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}
