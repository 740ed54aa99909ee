//! What a registry must be told to trust berth's tokens, per registry flavor:
//! the config block `berth registry-config` prints, and which key header forms
//! and algorithms each flavor understands.
//!
//! Pure text generation from the configuration and the keys directory listing; it
//! reads no key material.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{Config, ServiceConfig};
use crate::types::KeyIdMode;

use super::keys::Algorithm;
use super::keyset::{BUNDLE_FILE, JWKS_FILE};

/// A registry implementation, as far as token verification differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// distribution 2.x (`registry:2`, Debian `docker-registry`).
    Distribution2,
    /// distribution 3.x (`registry:3`).
    Distribution3,
    /// zot.
    Zot,
}

impl std::str::FromStr for Flavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "distribution2" | "distribution" | "registry2" => Ok(Flavor::Distribution2),
            "distribution3" | "registry3" => Ok(Flavor::Distribution3),
            "zot" => Ok(Flavor::Zot),
            other => Err(format!(
                "unknown registry flavor {other:?} (distribution2, distribution3 or zot)"
            )),
        }
    }
}

impl Flavor {
    /// The flavor a key ID mode is meant for, when the operator names none.
    pub fn for_key_id(mode: KeyIdMode) -> Self {
        match mode {
            KeyIdMode::Thumbprint => Flavor::Distribution3,
            KeyIdMode::Libtrust | KeyIdMode::X5c => Flavor::Distribution2,
        }
    }

    /// Whether this flavor finds the signing key from a header of `mode`.
    pub fn understands(self, mode: KeyIdMode) -> bool {
        match self {
            // 2.x looks `kid` up as a libtrust ID; it computes no thumbprints.
            Flavor::Distribution2 => mode != KeyIdMode::Thumbprint,
            // 3.x dropped libtrust IDs, but finds any `kid` listed in its JWKS file,
            // and berth's JWKS file lists the libtrust form too.
            Flavor::Distribution3 => true,
            // zot ignores the header and uses its one configured certificate.
            Flavor::Zot => true,
        }
    }

    /// Whether this flavor verifies signatures of `alg`.
    pub fn accepts(self, alg: Algorithm) -> bool {
        match self {
            Flavor::Distribution2 => {
                matches!(alg, Algorithm::Es256 | Algorithm::Es384 | Algorithm::Rs256)
            }
            Flavor::Distribution3 | Flavor::Zot => true,
        }
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// The config block for `service` on a registry of `flavor`. `cert` is the signing
/// certificate zot should use (zot trusts exactly one); `None` prints a placeholder.
pub fn config_block(
    config: &Config,
    service: &ServiceConfig,
    flavor: Flavor,
    cert: Option<&Path>,
) -> String {
    let keys = absolute(config.keys_dir.clone());
    let bundle = keys.join(BUNDLE_FILE);
    let jwks = keys.join(JWKS_FILE);
    let mut out = String::new();
    let mut warn = |text: &str| {
        let _ = writeln!(out, "# berth: {text}");
    };
    if !flavor.understands(service.key_id) {
        warn(&format!(
            "service {:?} sends key_id = \"thumbprint\", which distribution 2.x cannot look up; \
             use key_id = \"libtrust\" or \"x5c\" for it",
            service.name
        ));
    }
    if flavor == Flavor::Distribution2 && service.audience_list {
        warn("distribution 2.x accepts `aud` only as a string; set audience_list = false");
    }
    if flavor == Flavor::Zot && !service.expand_wildcard {
        warn(&format!(
            "zot does not read `*` as every action; set expand_wildcard = true for service {:?}",
            service.name
        ));
    }
    match flavor {
        Flavor::Distribution2 | Flavor::Distribution3 => {
            let _ = write!(
                out,
                "auth:\n  token:\n    realm: {realm}\n    service: {svc}\n    issuer: {iss}\n    rootcertbundle: {bundle}\n",
                realm = config.realm(),
                svc = service.name,
                iss = config.issuer,
                bundle = bundle.display(),
            );
            if flavor == Flavor::Distribution3 {
                let _ = writeln!(out, "    jwks: {}", jwks.display());
            }
        }
        Flavor::Zot => {
            let cert = cert
                .map(|c| absolute(c.to_owned()).display().to_string())
                .unwrap_or_else(|| keys.join("NAME.crt").display().to_string());
            let _ = write!(
                out,
                "{{\n  \"http\": {{\n    \"auth\": {{\n      \"bearer\": {{\n        \"realm\": {realm},\n        \"service\": {svc},\n        \"cert\": {cert}\n      }}\n    }}\n  }}\n}}\n",
                realm = serde_json::Value::from(config.realm()),
                svc = serde_json::Value::from(service.name.clone()),
                cert = serde_json::Value::from(cert),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    struct NoEnv;
    impl crate::config::Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn config(services: &str) -> Config {
        Config::from_toml(
            Path::new("t.toml"),
            &format!(
                "issuer = 'iss'\npublic_url = 'https://auth.example'\nkeys_dir = '/k'\n{services}"
            ),
            &NoEnv,
        )
        .unwrap()
    }

    #[test]
    fn distribution_blocks() {
        let c = config("[[service]]\nname = 'reg'\nkey_id = 'thumbprint'\n");
        let d3 = config_block(&c, &c.services[0], Flavor::Distribution3, None);
        assert_eq!(
            d3,
            "auth:\n  token:\n    realm: https://auth.example/token\n    service: reg\n    issuer: iss\n    rootcertbundle: /k/bundle.pem\n    jwks: /k/jwks.json\n"
        );
        let d2 = config_block(&c, &c.services[0], Flavor::Distribution2, None);
        assert!(d2.starts_with("# berth: "), "{d2}");
        assert!(!d2.contains("jwks"));
    }

    #[test]
    fn zot_block_is_json_and_warns_about_wildcards() {
        let c = config("[[service]]\nname = 'zot'\n");
        let z = config_block(&c, &c.services[0], Flavor::Zot, Some(Path::new("/k/a.crt")));
        let (comment, json) = z.split_once('\n').unwrap();
        assert!(comment.contains("expand_wildcard"));
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["http"]["auth"]["bearer"]["cert"], "/k/a.crt");
        assert_eq!(
            v["http"]["auth"]["bearer"]["realm"],
            "https://auth.example/token"
        );
    }

    #[test]
    fn flavor_capabilities() {
        assert!(!Flavor::Distribution2.understands(KeyIdMode::Thumbprint));
        assert!(Flavor::Distribution2.understands(KeyIdMode::X5c));
        assert!(!Flavor::Distribution2.accepts(Algorithm::EdDsa));
        assert!(Flavor::Distribution3.accepts(Algorithm::Ps256));
        assert_eq!(
            "distribution3".parse::<Flavor>().unwrap(),
            Flavor::Distribution3
        );
        assert!("harbor".parse::<Flavor>().is_err());
    }
}
