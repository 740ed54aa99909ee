//! `berth key …`: signing keys.

use clap::Subcommand;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{Config, KeyIdMode};
use crate::token::{jwks, keys, Algorithm, KeySet};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new signing key and self-signed certificate; it signs from now on.
    Generate {
        /// Algorithm: es256 (default) or rs256 (RSA 2048).
        #[arg(long, default_value = "es256")]
        alg: Algorithm,
    },
    /// Show keys: algorithm, key IDs in both forms, expiry.
    Show,
    /// Print the certificates for a registry's `rootcertbundle`.
    Bundle,
    /// Print a JWKS file (distribution 3's `jwks` option).
    Jwks {
        /// Key ID form: thumbprint (default) or libtrust.
        #[arg(long, default_value = "thumbprint")]
        kid: KeyIdMode,
    },
}

pub fn run(config: Config, cmd: KeyCommand) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        KeyCommand::Generate { alg } => {
            let name = keys::generate(&config.keys_dir, alg, now)?;
            let set = KeySet::load(&config.keys_dir)?;
            set.write_bundle(now)?;
            println!(
                "generated {name} ({}) in {}; bundle.pem and jwks.json updated. Restart berth to sign with it.",
                alg.jose(),
                config.keys_dir.display()
            );
        }
        KeyCommand::Show => {
            let set = KeySet::load(&config.keys_dir)?;
            let active = set.active(now).ok().map(|k| k.name.clone());
            for k in &set.keys {
                println!(
                    "{}{}\n  algorithm:  {}\n  libtrust:   {}\n  thumbprint: {}\n  valid:      {} .. {}",
                    k.name,
                    if active.as_deref() == Some(k.name.as_str()) { "  (active)" } else { "" },
                    k.alg.jose(),
                    k.kid_libtrust,
                    k.kid_thumbprint,
                    k.not_before.format(&Rfc3339).unwrap_or_default(),
                    k.not_after.format(&Rfc3339).unwrap_or_default(),
                );
            }
            if set.keys.is_empty() {
                println!(
                    "no keys in {} (berth serve creates one)",
                    config.keys_dir.display()
                );
            }
        }
        KeyCommand::Bundle => {
            let set = KeySet::load(&config.keys_dir)?;
            print!("{}", set.bundle_pem(now));
        }
        KeyCommand::Jwks { kid } => {
            let set = KeySet::load(&config.keys_dir)?;
            let keys: Vec<_> = set
                .published(now)
                .map(|k| jwks::jwk(k, jwks::kid_for(k, kid)))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "keys": keys }))?
            );
        }
    }
    Ok(())
}
