//! `berth key …`: signing keys.

use clap::Subcommand;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{parse_duration, Config, KeyIdMode};
use crate::token::{generate, jwks, Algorithm, KeySet};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new signing key (certified by berth's CA); it signs from now on.
    Generate {
        /// Algorithm: es256 (default), es384, rs256, ps256 or eddsa.
        #[arg(long, default_value = "es256")]
        alg: Algorithm,
    },
    /// Add a new signing key that is published now and signs only after a delay.
    ///
    /// bundle.pem and jwks.json list the new key at once; registries that read them
    /// at start (kid modes) must be restarted within the delay. Registries trusting
    /// berth's CA (x5c) need nothing. The old key stays published, so tokens it
    /// signed keep verifying until they expire; a running berth switches by itself.
    Rotate {
        /// Algorithm of the new key (default: that of the key signing now).
        #[arg(long)]
        alg: Option<Algorithm>,
        /// How long to publish before signing, like 90s, 30m or 1h
        /// (default: `key_publish_delay`).
        #[arg(long, value_parser = parse_duration)]
        publish_delay: Option<std::time::Duration>,
    },
    /// Remove keys no token can still need: expired ones, and ones a newer key
    /// replaced longer ago than the token lifetime (plus 60 s). Rewrites the bundle.
    Prune {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Renew the certificates of the signing key and of keys that sign later,
    /// when they expire within 10 days (every one with --force). Needs ca.key:
    /// run it where the CA key is kept, then copy the .crt files to berth.
    Renew {
        /// Renew every signing and pending key's certificate now.
        #[arg(long)]
        force: bool,
    },
    /// Show keys: algorithm, key IDs in both forms, when each signs.
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

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn run(config: Config, cmd: KeyCommand) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        KeyCommand::Renew { force } => {
            let renewed = generate::renew_due(&config.keys_dir, now, force)?;
            if renewed.is_empty() {
                println!("no certificate is due (use --force to renew anyway)");
            }
            let set = KeySet::load(&config.keys_dir)?;
            for name in &renewed {
                if let Some(k) = set.keys.iter().find(|k| &k.name == name) {
                    println!("renewed {name}.crt: valid until {}", rfc3339(k.not_after));
                }
            }
        }
        KeyCommand::Generate { alg } => {
            let _lock = generate::lock(&config.keys_dir)?;
            let name = generate::generate(&config.keys_dir, alg, now, now)?;
            let set = KeySet::load(&config.keys_dir)?;
            set.write_bundle(now)?;
            println!(
                "generated {name} ({}) in {}; bundle.pem and jwks.json updated. \
                 A running berth signs with it within seconds; registries that trust \
                 keys by kid need the new bundle.pem or jwks.json (restart them).",
                alg.jose(),
                config.keys_dir.display()
            );
        }
        KeyCommand::Rotate { alg, publish_delay } => {
            let _lock = generate::lock(&config.keys_dir)?;
            let set = KeySet::load(&config.keys_dir)?;
            let current = set.active(now)?;
            let alg = alg.unwrap_or(current.alg);
            let delay = publish_delay.unwrap_or(config.key_publish_delay);
            let delay = time::Duration::try_from(delay)?;
            let signs_from = now + delay;
            let name = generate::generate(&config.keys_dir, alg, now, signs_from)?;
            let set = KeySet::load(&config.keys_dir)?;
            set.write_bundle(now)?;
            println!(
                "added {name} ({}), published now in bundle.pem and jwks.json; it signs from {} \
                 (in {}s). {} keeps signing until then and stays published.\n\
                 Registries that trust berth's CA (key_id = \"x5c\") need nothing. Restart \
                 registries that read bundle.pem or jwks.json (kid modes) before that time.",
                alg.jose(),
                rfc3339(signs_from.replace_nanosecond(0).unwrap_or(signs_from)),
                delay.whole_seconds(),
                current.name,
            );
        }
        KeyCommand::Prune { dry_run } => {
            let set = KeySet::load(&config.keys_dir)?;
            let ttl = time::Duration::try_from(config.token_ttl)?;
            let retire = set.retirable(now, ttl);
            if retire.is_empty() {
                println!("no key to remove: every key may still verify a valid token");
            }
            for k in &retire {
                if dry_run {
                    println!("would remove {}", k.name);
                    continue;
                }
                for ext in ["key", "crt"] {
                    let path = config.keys_dir.join(format!("{}.{ext}", k.name));
                    std::fs::remove_file(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                println!("removed {}", k.name);
            }
            if !dry_run && !retire.is_empty() {
                KeySet::load(&config.keys_dir)?.write_bundle(now)?;
                println!("bundle.pem and jwks.json updated; registries may keep the old files until they restart");
            }
        }
        KeyCommand::Show => {
            let set = KeySet::load(&config.keys_dir)?;
            let active = set.active(now).ok().map(|k| k.name.clone());
            for k in &set.keys {
                let state = if active.as_deref() == Some(k.name.as_str()) {
                    "  (signing)"
                } else if k.signs_from() > now {
                    "  (published, signs later)"
                } else if k.published_at(now) {
                    "  (published, superseded)"
                } else {
                    "  (expired)"
                };
                println!(
                    "{}{state}\n  algorithm:  {}\n  libtrust:   {}\n  thumbprint: {}\n  issuer:     {}\n  signs:      {} .. {}",
                    k.name,
                    k.alg.jose(),
                    k.kid_libtrust,
                    k.kid_thumbprint,
                    if k.chain.len() > 1 { "berth CA (ca.crt)" } else { "self-signed" },
                    rfc3339(k.signs_from()),
                    rfc3339(k.not_after),
                );
                if let crate::token::keys::PublicKey::Ec { x, y, .. } = &k.public {
                    if x.first() == Some(&0) || y.first() == Some(&0) {
                        println!(
                            "  note:       a coordinate starts with a zero byte; distribution 3 derives \
                             another thumbprint from rootcertbundle for such keys, so give it jwks.json \
                             or use x5c (keys berth generates avoid this)"
                        );
                    }
                }
            }
            let orphans = crate::token::keyset::orphan_certificates(&config.keys_dir);
            if !orphans.is_empty() {
                anyhow::bail!(
                    "certificate(s) {} in {} have no private key file (deleted?); a running berth keeps \
                     signing with the key it loaded, but restore the .key files from backup before \
                     restarting it",
                    orphans.join(", "),
                    config.keys_dir.display()
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
