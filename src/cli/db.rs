//! `berth db …`: database maintenance.

use clap::Subcommand;

use crate::config::Config;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (berth serve also does this at start).
    Migrate,
}

pub async fn run(config: Config, cmd: DbCommand) -> anyhow::Result<()> {
    match cmd {
        DbCommand::Migrate => {
            let store = Store::connect(&config.database).await?;
            let result = store.migrate().await;
            store.close().await;
            result?;
            println!("{}: migrations applied", config.database);
        }
    }
    Ok(())
}
