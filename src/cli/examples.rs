//! Examples shown by `--help` of the commands operators use most. They are
//! attached to the clap definition here, in one place, so the subcommand files
//! keep only their arguments.

/// `(subcommand path, examples)`.
const EXAMPLES: &[(&[&str], &str)] = &[
    (
        &["serve"],
        "Examples:\n  berth serve\n  berth --config /etc/berth/berth.toml serve\n  \
         BERTH_DATABASE_FILE=/run/secrets/db-url BERTH_PUBLIC_URL=https://auth.example.com berth serve",
    ),
    (
        &["user", "add"],
        "Examples:\n  berth user add alice --group team-a\n  \
         printf '%s\\n' \"$PASSWORD\" | berth user add ci-bot --group ci --password-stdin",
    ),
    (
        &["robot", "create"],
        "Examples:\n  berth robot create deploy --group team-a --expires 90d --description 'CI of team-a'",
    ),
    (
        &["token", "create"],
        "Examples:\n  berth token create --user alice --limit 'repository:team-a/**:pull' --expires 30d\n  \
         berth token create --user alice --name laptop --limit 'repository:alice/*:pull,push'",
    ),
    (
        &["policy", "check"],
        "Examples:\n  berth policy check --user alice --scope repository:team-a/app:pull,push --explain\n  \
         berth policy check --account ci --group ci --kind robot --scope repository:team-a/app:push",
    ),
    (
        &["policy", "test"],
        "Examples:\n  berth policy test\n  berth policy test policies/tests --policies policies",
    ),
    (
        &["doctor"],
        "Examples:\n  berth doctor --registry https://registry.example.com\n  \
         printf '%s\\n' \"$PASSWORD\" | berth doctor --registry https://registry.example.com -u alice --password-stdin",
    ),
    (
        &["config", "show"],
        "Examples:\n  berth --config /etc/berth/berth.toml config show\n  BERTH_MAX_SCOPES=64 berth config show",
    ),
];

/// Adds the examples to `cmd`'s subcommands.
pub fn attach(mut cmd: clap::Command) -> clap::Command {
    for (path, text) in EXAMPLES {
        cmd = attach_one(cmd, path, text);
    }
    cmd
}

fn attach_one(cmd: clap::Command, path: &[&str], text: &'static str) -> clap::Command {
    match path.split_first() {
        None => {
            let help = match cmd.get_after_help() {
                Some(existing) => format!("{existing}\n\n{text}"),
                None => text.to_owned(),
            };
            cmd.after_help(help)
        }
        Some((first, rest)) => {
            if cmd.find_subcommand(first).is_none() {
                return cmd;
            }
            cmd.mut_subcommand(*first, |sub| attach_one(sub, rest, text))
        }
    }
}
