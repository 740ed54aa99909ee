//! Signing keys on disk: generation, loading, and the certificate bundle.
//!
//! A key is a pair of files in the keys directory: `NAME.key` (PKCS#8 PEM, mode 0600)
//! and `NAME.crt` (a self-signed certificate for the same key). `bundle.pem` holds every
//! certificate, for a registry's `rootcertbundle`. This module does not sign tokens
//! (see `signer`).

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey as X509PublicKey;

use super::kid;

/// Name of the file holding every certificate, for a registry's `rootcertbundle`.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// Name of the JWKS file written beside the bundle (distribution 3's `jwks` option).
pub const JWKS_FILE: &str = "jwks.json";

/// Errors loading or generating keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file's contents are not a usable key or certificate.
    #[error("{path}: {problem}")]
    Invalid {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// There is no key to sign with.
    #[error("no signing key in {0} (run `berth key generate`)")]
    NoKey(PathBuf),
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generate(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(path: &Path, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
}

impl Algorithm {
    /// The JOSE name.
    pub fn jose(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "es256" => Ok(Algorithm::Es256),
            "rs256" => Ok(Algorithm::Rs256),
            other => Err(format!("unsupported algorithm {other:?} (es256 or rs256)")),
        }
    }
}

/// Public key material, as needed for JWKs and thumbprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Elliptic curve point.
    Ec {
        /// Curve name (`P-256`).
        crv: &'static str,
        /// X coordinate, big-endian.
        x: Vec<u8>,
        /// Y coordinate, big-endian.
        y: Vec<u8>,
    },
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A loaded signing key with its certificate and derived identifiers.
pub struct SigningKey {
    /// File stem in the keys directory.
    pub name: String,
    /// Signature algorithm.
    pub alg: Algorithm,
    /// libtrust key ID (distribution 2.x).
    pub kid_libtrust: String,
    /// RFC 7638 thumbprint key ID.
    pub kid_thumbprint: String,
    /// DER of the certificate.
    pub cert_der: Vec<u8>,
    /// PEM of the certificate.
    pub cert_pem: String,
    /// Public key material.
    pub public: PublicKey,
    /// Certificate validity start.
    pub not_before: OffsetDateTime,
    /// Certificate validity end.
    pub not_after: OffsetDateTime,
    pair: Pair,
}

impl fmt::Debug for SigningKey {
    // Hand-written so the private key can never be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("alg", &self.alg)
            .field("kid_libtrust", &self.kid_libtrust)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Signs `message` (the JWS signing input) and returns the raw JWS signature.
    pub fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            Pair::Ec(k) => k
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Generate("ECDSA signing failed".into())),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, rng, message, &mut sig)
                    .map_err(|_| KeyError::Generate("RSA signing failed".into()))?;
                Ok(sig)
            }
        }
    }

    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// Loads `NAME.key` and `NAME.crt` from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Self, KeyError> {
        let key_path = dir.join(format!("{name}.key"));
        let crt_path = dir.join(format!("{name}.crt"));
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let cert_pem = fs::read_to_string(&crt_path).map_err(io_err(&crt_path))?;
        let key_der =
            pem::parse(&key_pem).map_err(|e| invalid(&key_path, format!("not PEM: {e}")))?;
        if key_der.tag() != "PRIVATE KEY" {
            return Err(invalid(
                &key_path,
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block",
            ));
        }
        let cert =
            pem::parse(&cert_pem).map_err(|e| invalid(&crt_path, format!("not PEM: {e}")))?;
        let cert_der = cert.contents().to_vec();
        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| invalid(&crt_path, format!("not an X.509 certificate: {e}")))?;
        let spki = x509.public_key();
        let public = match spki.parsed() {
            Ok(X509PublicKey::EC(point)) => {
                let data = point.data();
                if data.len() != 65 || data[0] != 4 {
                    return Err(invalid(
                        &crt_path,
                        "only uncompressed P-256 points are supported",
                    ));
                }
                PublicKey::Ec {
                    crv: "P-256",
                    x: data[1..33].to_vec(),
                    y: data[33..].to_vec(),
                }
            }
            Ok(X509PublicKey::RSA(rsa)) => PublicKey::Rsa {
                n: strip_zeros(rsa.modulus),
                e: strip_zeros(rsa.exponent),
            },
            _ => return Err(invalid(&crt_path, "unsupported public key type")),
        };
        let rng = SystemRandom::new();
        let (alg, pair) = match public {
            PublicKey::Ec { .. } => (
                Algorithm::Es256,
                Pair::Ec(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        key_der.contents(),
                        &rng,
                    )
                    .map_err(|e| invalid(&key_path, format!("not a P-256 PKCS#8 key: {e}")))?,
                ),
            ),
            PublicKey::Rsa { .. } => (
                Algorithm::Rs256,
                Pair::Rsa(
                    RsaKeyPair::from_pkcs8(key_der.contents())
                        .map_err(|e| invalid(&key_path, format!("not an RSA PKCS#8 key: {e}")))?,
                ),
            ),
        };
        let pair_public: &[u8] = match &pair {
            Pair::Ec(k) => k.public_key().as_ref(),
            Pair::Rsa(k) => k.public_key().as_ref(),
        };
        // The certificate must certify this very key, or registries would trust
        // a different key than the one that signs.
        if pair_public != spki.subject_public_key.data.as_ref() {
            return Err(invalid(
                &crt_path,
                format!("certificate does not match {name}.key"),
            ));
        }
        let to_time = |t: x509_parser::time::ASN1Time| t.to_datetime();
        Ok(SigningKey {
            name: name.to_owned(),
            alg,
            kid_libtrust: kid::libtrust(spki.raw),
            kid_thumbprint: kid::thumbprint(&public),
            cert_pem: pem::encode(&pem::Pem::new("CERTIFICATE", cert_der.clone())),
            not_before: to_time(x509.validity().not_before),
            not_after: to_time(x509.validity().not_after),
            cert_der,
            public,
            pair,
        })
    }
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

/// All signing keys found in the keys directory, newest first.
#[derive(Debug)]
pub struct KeySet {
    /// Keys, newest certificate first.
    pub keys: Vec<SigningKey>,
    /// Directory they came from.
    pub dir: PathBuf,
}

impl KeySet {
    /// Loads every `*.key`/`*.crt` pair in `dir`.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
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
            keys.push(SigningKey::load(dir, stem)?);
        }
        keys.sort_by(|a, b| b.not_before.cmp(&a.not_before).then(b.name.cmp(&a.name)));
        Ok(KeySet {
            keys,
            dir: dir.to_owned(),
        })
    }

    /// The key that signs at `now`: the newest one whose certificate is valid.
    pub fn active(&self, now: OffsetDateTime) -> Result<&SigningKey, KeyError> {
        self.keys
            .iter()
            .find(|k| k.valid_at(now))
            .ok_or_else(|| KeyError::NoKey(self.dir.clone()))
    }

    /// Keys whose certificates are valid at `now` (published in JWKS and bundle).
    pub fn published(&self, now: OffsetDateTime) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(move |k| k.valid_at(now))
    }

    /// Concatenated PEM certificates of the published keys.
    pub fn bundle_pem(&self, now: OffsetDateTime) -> String {
        self.published(now).map(|k| k.cert_pem.as_str()).collect()
    }

    /// Writes `bundle.pem` and `jwks.json` beside the keys.
    pub fn write_bundle(&self, now: OffsetDateTime) -> Result<(), KeyError> {
        let path = self.dir.join(BUNDLE_FILE);
        fs::write(&path, self.bundle_pem(now)).map_err(io_err(&path))?;
        let path = self.dir.join(JWKS_FILE);
        let jwks = super::jwks::jwks(self.published(now), &[crate::config::KeyIdMode::Thumbprint]);
        fs::write(&path, serde_json::to_vec_pretty(&jwks).unwrap_or_default())
            .map_err(io_err(&path))
    }
}

/// Generates a new key and self-signed certificate in `dir`; returns its name.
///
/// The private key file is created with mode 0600 before any key byte is written.
pub fn generate(dir: &Path, alg: Algorithm, now: OffsetDateTime) -> Result<String, KeyError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key_pair = match alg {
        Algorithm::Es256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError::Generate(e.to_string()))?,
        Algorithm::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
                .map_err(|e| KeyError::Generate(e.to_string()))?
        }
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth token signing key");
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(730);
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut serial)
        .map_err(|_| KeyError::Generate("no randomness".into()))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| KeyError::Generate(e.to_string()))?;

    let stamp = now.unix_timestamp();
    let name = format!("{}-{stamp}", alg.jose().to_ascii_lowercase());
    let key_path = dir.join(format!("{name}.key"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io_err(&key_path))?;
    file.write_all(key_pair.serialize_pem().as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(io_err(&key_path))?;
    let crt_path = dir.join(format!("{name}.crt"));
    fs::write(&crt_path, cert.pem()).map_err(io_err(&crt_path))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_and_load_es256() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let name = generate(dir.path(), Algorithm::Es256, now).unwrap();
        let mode = fs::metadata(dir.path().join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let set = KeySet::load(dir.path()).unwrap();
        let key = set.active(now).unwrap();
        assert_eq!(key.alg, Algorithm::Es256);
        assert_eq!(key.kid_libtrust.split(':').count(), 12);
        let sig = key.sign(&SystemRandom::new(), b"hello").unwrap();
        let PublicKey::Ec { x, y, .. } = &key.public else {
            panic!("expected EC")
        };
        let mut point = vec![4];
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(b"hello", &sig)
            .unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn mismatched_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let a = generate(dir.path(), Algorithm::Es256, now).unwrap();
        let b = generate(
            dir.path(),
            Algorithm::Es256,
            now + time::Duration::seconds(1),
        )
        .unwrap();
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
        assert!(err.contains("x.crt"), "{err}");
    }
}
