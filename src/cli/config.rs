//! `berth config show`, `berth completions` and `berth man`: what an operator
//! asks about berth itself rather than about its state.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::{Config, ProcessEnv};

/// `berth config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, with the source of each value
    /// (default, file or environment variable); secrets are redacted.
    Show,
}

/// Prints what `cmd` asks for, loading the configuration itself so that the
/// source of each value is known.
pub fn run(path: Option<&Path>, cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Show => {
            let loaded = Config::load_explained(path, &ProcessEnv)?;
            let mut out = crate::config::render(&loaded);
            for w in &loaded.warnings {
                out.push_str(&format!("# warning: {w}\n"));
            }
            std::io::stdout()
                .write_all(out.as_bytes())
                .context("cannot write to stdout")
        }
    }
}

/// `berth completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

/// Prints the completion script for a shell.
pub fn completions(mut command: clap::Command, args: CompletionsArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "berth", &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("cannot write to stdout")
}

/// `berth man [--dir DIR]`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write berth.1 and one page per subcommand (berth-user-add.1, …) into
    /// this directory instead of printing berth.1.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Prints the man page, or writes every page into a directory.
pub fn man(command: clap::Command, args: ManArgs) -> anyhow::Result<()> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("cannot render the man page")?;
            std::io::stdout()
                .write_all(&out)
                .context("cannot write to stdout")
        }
    }
}
