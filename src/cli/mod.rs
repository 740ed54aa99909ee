//! The command line: one file per subcommand group.

mod access_token;
mod audit;
mod db;
mod doctor;
mod key;
mod ldap;
mod oidc;
mod policy;
mod probe;
mod registry_config;
mod robot;
mod serve;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Where `berth serve` keeps its files by default, shown by `berth serve --help`.
/// Relative paths are taken from the working directory, so any directory works.
const SERVE_FILES: &str = "\
Files (relative paths are from the working directory; each is created on first start):
  configuration   none: every setting has a default; --config FILE or BERTH_CONFIG=FILE
                  names a TOML file, and BERTH_* variables override it
  database        data/berth.db (SQLite; database = \"postgres://…\" for PostgreSQL)
                  [database, BERTH_DATABASE]
  signing keys    keys/ (private keys 0600, bundle.pem for the registry)
                  [keys_dir, BERTH_KEYS_DIR]
  policies        policies/ (the shipped default policy is written there if the
                  directory does not exist) [policies_dir, BERTH_POLICIES_DIR]
  listens on      127.0.0.1:5001 [listen, BERTH_LISTEN]

The first admin is `admin` in group admins, with a password printed once
(or BERTH_ADMIN_PASSWORD). `berth registry-config` prints the registry's block again.";

/// berth: token authorization server for container registries.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
pub struct Cli {
    /// Configuration file (TOML), also from BERTH_CONFIG. Every setting has a
    /// default; `BERTH_*` environment variables override the file.
    #[arg(long, global = true, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the token server (creates keys, the database, the default policy and
    /// the first admin on first start).
    #[command(after_help = SERVE_FILES)]
    Serve,
    /// Print the block a registry's configuration needs to trust berth's tokens.
    RegistryConfig(registry_config::RegistryConfigArgs),
    /// Find out why a registry refuses berth's tokens (realm, service, issuer,
    /// key, algorithm, clock).
    Doctor(doctor::DoctorArgs),
    /// Manage local users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// OpenID Connect: check providers (`[[oidc]]`); list and revoke what federated
    /// users hold.
    #[command(subcommand)]
    Oidc(oidc::OidcCommand),
    /// LDAP and Active Directory: check directories (`[[ldap]]`); revoke a
    /// directory user's docker logins.
    #[command(subcommand)]
    Ldap(ldap::LdapCommand),
    /// Check, test and lint policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Manage robot accounts (machine credentials for CI).
    #[command(subcommand)]
    Robot(robot::RobotCommand),
    /// Manage personal access tokens.
    #[command(subcommand)]
    Token(access_token::TokenCommand),
    /// Query the audit log of token decisions.
    Audit(audit::AuditArgs),
    /// Database maintenance.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Ask a running berth whether it is ready (exit 0) or not (exit 1), for
    /// container health checks.
    Probe(probe::ProbeArgs),
}

/// Parses the command line, runs it, and maps errors to a message and exit code 1.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve::run(config).await,
        Command::RegistryConfig(args) => registry_config::run(&config, args),
        Command::Doctor(args) => doctor::run(config, args).await,
        Command::User(cmd) => user::run(config, cmd).await,
        Command::Key(cmd) => key::run(config, cmd),
        Command::Oidc(cmd) => oidc::run(config, cmd).await,
        Command::Ldap(cmd) => ldap::run(config, cmd).await,
        Command::Policy(cmd) => policy::run(config, cmd).await,
        Command::Robot(cmd) => robot::run(config, cmd).await,
        Command::Token(cmd) => access_token::run(config, cmd).await,
        Command::Audit(args) => audit::run(config, args).await,
        Command::Db(cmd) => db::run(config, cmd).await,
        Command::Probe(args) => probe::run(&config, args).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
