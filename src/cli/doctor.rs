//! `berth doctor`: why does the registry refuse berth's tokens?

use std::io::BufRead;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::doctor::{self, Level, Options};
use crate::token::KeySet;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The registry's base URL, e.g. https://registry.example.com (as clients use it).
    #[arg(long)]
    registry: String,
    /// Account to obtain the test token for (a user or robot); anonymous without it.
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

pub async fn run(config: Config, args: DoctorArgs) -> anyhow::Result<()> {
    let credentials = match &args.username {
        Some(user) => {
            let password = if args.password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            } else {
                rpassword::prompt_password(format!("password for {user}: "))
                    .context("reading the password")?
            };
            Some((user.clone(), password))
        }
        None => None,
    };
    // Doctor signs probe tokens with berth's keys, so it runs where berth's keys are.
    let keys = KeySet::load(&config.keys_dir)?;
    let report = doctor::run(
        &config,
        &keys,
        &Options {
            registry: args.registry.clone(),
            credentials,
        },
    )
    .await;
    for f in &report.findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Problem => "FAIL",
        };
        println!("{tag} [{}] {}", f.code, f.text);
    }
    if report.has_problem() {
        anyhow::bail!("the registry does not accept berth's tokens (see FAIL above)");
    }
    println!("berth and {} agree: tokens are accepted.", args.registry);
    Ok(())
}
