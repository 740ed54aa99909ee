//! `berth registry-config`: the block a registry needs to trust berth's tokens.

use clap::Args;

use crate::config::Config;
use crate::token::registry::{config_block, Flavor};
use crate::token::KeySet;

#[derive(Debug, Args)]
pub struct RegistryConfigArgs {
    /// Registry flavor: distribution2 (config.yml `auth: token:`, rootcertbundle),
    /// distribution3 (also the jwks file) or zot (JSON `http.auth.bearer`).
    /// Default: the one the service's key_id is meant for.
    #[arg(long)]
    flavor: Option<Flavor>,
    /// Service (token audience) the registry announces; default: the first one.
    #[arg(long)]
    service: Option<String>,
}

pub fn run(config: &Config, args: RegistryConfigArgs) -> anyhow::Result<()> {
    let service = match &args.service {
        Some(name) => config.service(name).ok_or_else(|| {
            anyhow::anyhow!(
                "no service {name:?} in the configuration (services: {})",
                config
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => &config.services[0],
    };
    let flavor = args
        .flavor
        .unwrap_or_else(|| Flavor::for_key_id(service.key_id));
    let now = time::OffsetDateTime::now_utc();
    let keys = KeySet::load(&config.keys_dir).ok();
    let active = keys.as_ref().and_then(|set| set.active(now).ok());
    if let Some(key) = active {
        if !flavor.accepts(key.alg) {
            println!(
                "# berth: the signing key {} is {}, which this registry cannot verify; \
                 use `berth key rotate --alg es256` (or es384, rs256)",
                key.name,
                key.alg.jose()
            );
        }
    }
    // zot trusts one certificate: the key that signs now.
    let cert = match flavor {
        Flavor::Zot => active.map(|k| config.keys_dir.join(format!("{}.crt", k.name))),
        _ => None,
    };
    print!("{}", config_block(config, service, flavor, cert.as_deref()));
    Ok(())
}
