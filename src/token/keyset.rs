//! The keys directory as a whole: every signing key and berth's CA, which key
//! signs and which are published at a moment, which may retire, and the files
//! registries read (`bundle.pem` for a `rootcertbundle`, `jwks.json` for
//! distribution 3's `jwks` option).

use std::fs;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::keys::{io_err, read_pem, write_replace, Algorithm, KeyError, SigningKey, CA_NAME};

/// Name of the file holding every certificate, for a registry's `rootcertbundle`.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// Name of the JWKS file written beside the bundle (distribution 3's `jwks` option).
pub const JWKS_FILE: &str = "jwks.json";

/// All signing keys found in the keys directory, newest first, and berth's CA.
#[derive(Debug)]
pub struct KeySet {
    /// Keys, the one that starts signing last first.
    pub keys: Vec<SigningKey>,
    /// Directory they came from.
    pub dir: PathBuf,
    /// PEM of berth's CA certificate, when `ca.crt` exists.
    pub ca_pem: Option<String>,
}

/// Whether `dir` holds at least one signing key (the CA does not count).
pub fn has_signing_key(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                let p = e.path();
                p.extension().and_then(|x| x.to_str()) == Some("key")
                    && p.file_stem().and_then(|s| s.to_str()) != Some(CA_NAME)
            })
        })
        .unwrap_or(false)
}

/// Names of signing certificates in `dir` whose private key file is missing
/// (deleted, or not written yet).
pub fn orphan_certificates(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let p = e.path();
                    let stem = p.file_stem()?.to_str()?.to_owned();
                    let orphan = p.extension().and_then(|x| x.to_str()) == Some("crt")
                        && stem != CA_NAME
                        && !dir.join(format!("{stem}.key")).exists();
                    orphan.then_some(stem)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl KeySet {
    /// Loads every `*.key`/`*.crt` pair in `dir` (a `.crt` without its `.key` is
    /// ignored: key files are written last).
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let ca_path = dir.join(format!("{CA_NAME}.crt"));
        let ca_der = if ca_path.exists() {
            Some(read_pem(&ca_path, "CERTIFICATE")?)
        } else {
            None
        };
        let entries = fs::read_dir(dir).map_err(io_err(dir))?;
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err(dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("key") {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if stem == CA_NAME {
                continue;
            }
            keys.push(SigningKey::load(dir, stem, ca_der.as_deref())?);
        }
        keys.sort_by(|a, b| b.not_before.cmp(&a.not_before).then(b.name.cmp(&a.name)));
        Ok(KeySet {
            keys,
            dir: dir.to_owned(),
            ca_pem: ca_der.map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d))),
        })
    }

    /// The key that signs at `now`: of those allowed to sign, the one that started last.
    pub fn active(&self, now: OffsetDateTime) -> Result<&SigningKey, KeyError> {
        self.active_index(now)
            .map(|i| &self.keys[i])
            .ok_or_else(|| KeyError::NoKey(self.dir.clone()))
    }

    /// Index in `keys` of the key that signs at `now`.
    pub fn active_index(&self, now: OffsetDateTime) -> Option<usize> {
        self.keys.iter().position(|k| k.valid_at(now))
    }

    /// Keys registries should trust at `now` (published in JWKS and bundle),
    /// including keys that will sign later.
    pub fn published(&self, now: OffsetDateTime) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(move |k| k.published_at(now))
    }

    /// berth's CA certificate (if any), then the published keys' certificates.
    ///
    /// Ed25519 certificates are left out: distribution 2.x refuses to start with one
    /// in its `rootcertbundle`. EdDSA keys reach registries through `x5c` (chained to
    /// the CA, which is in the bundle) or the JWKS file.
    pub fn bundle_pem(&self, now: OffsetDateTime) -> String {
        let mut out = self.ca_pem.clone().unwrap_or_default();
        out.extend(
            self.published(now)
                .filter(|k| k.alg != Algorithm::EdDsa)
                .map(|k| k.cert_pem.as_str()),
        );
        out
    }

    /// Keys no registry needs any more at `now`: expired ones, and ones superseded
    /// (a newer key has signed for longer than `token_lifetime` plus the registries'
    /// 60 s leeway), so every token they signed has expired. Never the signing key.
    pub fn retirable(
        &self,
        now: OffsetDateTime,
        token_lifetime: time::Duration,
    ) -> Vec<&SigningKey> {
        let active = self.active_index(now);
        let grace = token_lifetime + time::Duration::seconds(60);
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, k)| {
                if Some(*i) == active || k.signs_from() > now {
                    return false;
                }
                let superseded = self.keys.iter().any(|n| {
                    n.signs_from() > k.signs_from()
                        && n.valid_at(now)
                        && n.signs_from() + grace <= now
                });
                !k.published_at(now) || superseded
            })
            .map(|(_, k)| k)
            .collect()
    }

    /// Writes `bundle.pem` and `jwks.json` beside the keys.
    pub fn write_bundle(&self, now: OffsetDateTime) -> Result<(), KeyError> {
        let path = self.dir.join(BUNDLE_FILE);
        write_replace(&path, self.bundle_pem(now).as_bytes())?;
        let path = self.dir.join(JWKS_FILE);
        let jwks = super::jwks::jwks(
            self.published(now),
            &[
                crate::config::KeyIdMode::Thumbprint,
                crate::config::KeyIdMode::Libtrust,
            ],
        );
        write_replace(&path, &serde_json::to_vec_pretty(&jwks).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::super::generate::generate;
    use super::super::public::PublicKey;
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature;
    use std::os::unix::fs::PermissionsExt;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn verify(key: &SigningKey, msg: &[u8], sig: &[u8]) {
        let (alg, bytes): (&dyn signature::VerificationAlgorithm, Vec<u8>) = match &key.public {
            PublicKey::Ec { crv, x, y } => {
                let mut point = vec![4];
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                let alg: &dyn signature::VerificationAlgorithm = if *crv == "P-384" {
                    &signature::ECDSA_P384_SHA384_FIXED
                } else {
                    &signature::ECDSA_P256_SHA256_FIXED
                };
                (alg, point)
            }
            PublicKey::Okp { x, .. } => (&signature::ED25519, x.clone()),
            PublicKey::Rsa { .. } => {
                let (_, cert) = X509Certificate::from_der(&key.cert_der).unwrap();
                let spki = cert.public_key().subject_public_key.data.to_vec();
                let alg: &dyn signature::VerificationAlgorithm = if key.alg == Algorithm::Ps256 {
                    &signature::RSA_PSS_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                };
                (alg, spki)
            }
        };
        signature::UnparsedPublicKey::new(alg, bytes)
            .verify(msg, sig)
            .unwrap_or_else(|_| panic!("{} signature does not verify", key.alg));
    }

    #[test]
    fn generate_and_load_every_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
            let at = now + time::Duration::seconds(i as i64);
            let name = generate(dir.path(), alg, at, at).unwrap();
            assert!(name.starts_with(alg.file_prefix()), "{name}");
            let mode = fs::metadata(dir.path().join(format!("{name}.key")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let set = KeySet::load(dir.path()).unwrap();
            let key = set.active(at).unwrap();
            assert_eq!(key.name, name);
            assert_eq!(key.alg, alg);
            assert_eq!(key.kid_libtrust.split(':').count(), 12);
            assert_eq!(key.chain.len(), 2, "issued by berth's CA");
            let sig = key.sign(&SystemRandom::new(), b"hello").unwrap();
            verify(key, b"hello", &sig);
            assert!(!format!("{key:?}").contains("PRIVATE"));
        }
        let ca_mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(ca_mode & 0o777, 0o600);
    }

    #[test]
    fn mismatched_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let a = generate(dir.path(), Algorithm::Es256, now, now).unwrap();
        let later = now + time::Duration::seconds(1);
        let b = generate(dir.path(), Algorithm::Es256, later, later).unwrap();
        fs::copy(
            dir.path().join(format!("{b}.crt")),
            dir.path().join(format!("{a}.crt")),
        )
        .unwrap();
        let err = KeySet::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.key"), b"\xff\x00garbage").unwrap();
        fs::write(dir.path().join("x.crt"), b"nope").unwrap();
        assert!(KeySet::load(dir.path()).is_err());
        fs::write(dir.path().join("x.key"), b"not a key").unwrap();
        fs::remove_file(dir.path().join("x.crt")).unwrap();
        let err = KeySet::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("x.key") || err.contains("x.crt"), "{err}");
    }

    #[test]
    fn a_key_is_published_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let old = generate(dir.path(), Algorithm::Es256, now, now).unwrap();
        let later = now + time::Duration::minutes(10);
        let new = generate(dir.path(), Algorithm::Rs256, now, later).unwrap();
        let set = KeySet::load(dir.path()).unwrap();
        let published: Vec<&str> = set.published(now).map(|k| k.name.as_str()).collect();
        assert!(published.contains(&new.as_str()) && published.contains(&old.as_str()));
        assert_eq!(set.active(now).unwrap().name, old);
        assert_eq!(
            set.active(later - time::Duration::seconds(1)).unwrap().name,
            old
        );
        assert_eq!(set.active(later).unwrap().name, new);
        let bundle = set.bundle_pem(now);
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 3, "CA + 2");
        // An Ed25519 certificate would stop distribution 2.x from starting.
        let later = later + time::Duration::seconds(1);
        generate(dir.path(), Algorithm::EdDsa, now, later).unwrap();
        let set = KeySet::load(dir.path()).unwrap();
        assert_eq!(set.published(now).count(), 3);
        assert_eq!(set.bundle_pem(now), bundle);
        assert!(bundle.starts_with(set.ca_pem.as_deref().unwrap()));
        assert!(has_signing_key(dir.path()));
    }

    #[test]
    fn superseded_keys_retire_after_the_last_token_expired() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let old = generate(dir.path(), Algorithm::Es256, now, now).unwrap();
        let switch = now + time::Duration::minutes(10);
        let new = generate(dir.path(), Algorithm::Es256, now, switch).unwrap();
        let set = KeySet::load(dir.path()).unwrap();
        let ttl = time::Duration::minutes(5);
        let names = |at| -> Vec<String> {
            set.retirable(at, ttl)
                .iter()
                .map(|k| k.name.clone())
                .collect()
        };
        assert!(names(now).is_empty(), "nothing to retire before the switch");
        assert!(names(switch).is_empty(), "old tokens are still valid");
        let after = switch + ttl + time::Duration::seconds(60);
        assert_eq!(
            names(after - time::Duration::seconds(1)),
            Vec::<String>::new()
        );
        assert_eq!(names(after), vec![old]);
        assert!(!names(after).contains(&new));
    }

    #[test]
    fn ca_alone_is_no_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        super::super::generate::ensure_ca(dir.path(), OffsetDateTime::now_utc()).unwrap();
        assert!(!has_signing_key(dir.path()));
        let set = KeySet::load(dir.path()).unwrap();
        assert!(set.keys.is_empty());
        assert!(set.active(OffsetDateTime::now_utc()).is_err());
    }
}
