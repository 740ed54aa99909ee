//! `berth robot …`: machine accounts for CI.

use clap::Subcommand;
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::authn::machine::{new_secret, parse_robot_name, ROBOT_SECRET_PREFIX};
use crate::authn::parse_group;
use crate::config::{parse_duration, Config};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum RobotCommand {
    /// Create a robot; its secret is shown once.
    Create {
        /// Robot name; it signs in as `<robot_prefix><name>` (default `robot$<name>`).
        #[arg(value_parser = parse_robot_name)]
        name: String,
        /// Group membership (repeatable).
        #[arg(long = "group", value_parser = parse_group)]
        groups: Vec<String>,
        /// Lifetime, e.g. 90d; never expires when omitted.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// What the robot is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List robots (never their secrets).
    List,
    /// Replace a robot's secret; the old one stops working at once.
    RotateSecret {
        /// Robot name.
        #[arg(value_parser = parse_robot_name)]
        name: String,
    },
    /// Disable a robot.
    Disable {
        /// Robot name.
        #[arg(value_parser = parse_robot_name)]
        name: String,
    },
    /// Enable a disabled robot.
    Enable {
        /// Robot name.
        #[arg(value_parser = parse_robot_name)]
        name: String,
    },
    /// Delete a robot.
    Delete {
        /// Robot name.
        #[arg(value_parser = parse_robot_name)]
        name: String,
    },
}

pub(super) fn date(t: Option<i64>) -> String {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .map(|t| format!("{} {:02}:{:02}", t.date(), t.hour(), t.minute()))
        .unwrap_or_else(|| "-".into())
}

pub async fn run(config: Config, cmd: RobotCommand) -> anyhow::Result<()> {
    let store = Store::open(&config.database).await?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let prefix = &config.robot_prefix;
    let result = async {
        match cmd {
            RobotCommand::Create {
                name,
                mut groups,
                expires,
                description,
            } => {
                groups.sort();
                groups.dedup();
                if description.len() > 256 || description.chars().any(char::is_control) {
                    anyhow::bail!("description must be at most 256 printable characters");
                }
                let expires_at = expires
                    .map(|d| i64::try_from(d.as_secs()).map(|s| now.saturating_add(s)))
                    .transpose()?;
                let (secret, hash) = new_secret(ROBOT_SECRET_PREFIX)?;
                store
                    .create_robot(&name, &hash, &groups, &description, expires_at, now)
                    .await?;
                println!(
                    "created robot {prefix}{name} (expires {})",
                    date(expires_at)
                );
                println!("secret (shown once): {}", secret.expose_secret());
                println!("log in with: docker login -u '{prefix}{name}' --password-stdin REGISTRY");
            }
            RobotCommand::List => {
                println!(
                    "{:<32} {:<8} {:<17} {:<17} {:<24} DESCRIPTION",
                    "LOGIN", "STATUS", "EXPIRES", "LAST USED", "GROUPS"
                );
                for r in store.list_robots().await? {
                    let status = if r.disabled {
                        "disabled"
                    } else if r.expires_at.is_some_and(|e| e <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<32} {:<8} {:<17} {:<17} {:<24} {}",
                        format!("{prefix}{}", r.name),
                        status,
                        date(r.expires_at),
                        date(r.last_used_at),
                        r.groups.join(","),
                        r.description
                    );
                }
            }
            RobotCommand::RotateSecret { name } => {
                let (secret, hash) = new_secret(ROBOT_SECRET_PREFIX)?;
                store.set_robot_secret(&name, &hash, now).await?;
                println!(
                    "new secret for {prefix}{name} (shown once): {}",
                    secret.expose_secret()
                );
            }
            RobotCommand::Disable { name } => {
                store.set_robot_disabled(&name, true, now).await?;
                println!("disabled {prefix}{name}");
            }
            RobotCommand::Enable { name } => {
                store.set_robot_disabled(&name, false, now).await?;
                println!("enabled {prefix}{name}");
            }
            RobotCommand::Delete { name } => {
                store.delete_robot(&name).await?;
                println!("deleted {prefix}{name}");
            }
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}
