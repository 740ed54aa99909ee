//! The command line: one file per subcommand group.

mod access_token;
mod audit;
mod config;
mod db;
mod doctor;
mod examples;
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

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;

/// Where `berth serve` keeps its files by default, shown by `berth serve --help`.
/// Relative paths are taken from the working directory, so any directory works.
const SERVE_FILES: &str = "\
Files (relative paths are from the working directory; each is created on first start):
  configuration   none: every setting has a default; --config FILE or BERTH_CONFIG=FILE
                  names a TOML file, and BERTH_* variables override it
                  (`berth config show` prints the result and where each value came from)
  database        data/berth.db (SQLite; database = \"postgres://…\" for PostgreSQL)
                  [database, BERTH_DATABASE]
  signing keys    keys/ (private keys 0600, bundle.pem for the registry)
                  [keys_dir, BERTH_KEYS_DIR]
  policies        policies/ (the shipped default policy is written there if the
                  directory does not exist) [policies_dir, BERTH_POLICIES_DIR]
  listens on      127.0.0.1:5001 [listen, BERTH_LISTEN]

The first admin is `admin` in group admins, with a password printed once
(or BERTH_ADMIN_PASSWORD, or a file named by BERTH_ADMIN_PASSWORD_FILE).
`berth registry-config` prints the registry's block again.";

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
    /// Show the effective configuration and where each value came from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(config::CompletionsArgs),
    /// Print the man page (roff), or write one page per subcommand.
    Man(config::ManArgs),
}

/// The command-line definition with the `--help` examples attached; also the
/// source of the completion scripts and man pages.
pub fn command() -> clap::Command {
    examples::attach(Cli::command())
}

/// Parses the command line, runs it, and maps errors to a message and exit code 1.
pub fn run() -> ExitCode {
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
    // These need no configuration, or load it themselves.
    let command = match cli.command {
        Command::Config(cmd) => return config::run(cli.config.as_deref(), cmd),
        Command::Completions(args) => return config::completions(command(), args),
        Command::Man(args) => return config::man(command(), args),
        other => other,
    };
    let config = Config::load(cli.config.as_deref())?;
    match command {
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
        Command::Config(_) | Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    #[test]
    fn command_line_definition_is_consistent() {
        super::command().debug_assert();
    }

    #[test]
    fn examples_reach_their_commands() {
        let mut cmd = super::command();
        for path in [
            &["serve"][..],
            &["user", "add"],
            &["robot", "create"],
            &["token", "create"],
            &["policy", "check"],
            &["policy", "test"],
            &["doctor"],
        ] {
            let mut c = &mut cmd;
            for name in path {
                c = c
                    .find_subcommand_mut(name)
                    .unwrap_or_else(|| panic!("no {name}"));
            }
            let help = c.render_long_help().to_string();
            assert!(
                help.contains("Examples:") && help.contains(&format!("berth {}", path.join(" "))),
                "{path:?}: {help}"
            );
        }
    }
}
