//! Signing keys on disk: loading, the certificate bundle and the JWKS file.
//!
//! A key is a pair of files in the keys directory: `NAME.key` (PKCS#8 PEM, mode 0600)
//! and `NAME.crt` (its certificate, issued by berth's CA `ca.crt`, or self-signed by
//! keys from before the CA existed). `bundle.pem` holds the CA and every published
//! certificate, for a registry's `rootcertbundle`; `jwks.json` holds the published
//! public keys, for distribution 3's `jwks` option.
//!
//! When a key signs is read from its certificate: from `notBefore` + [`CERT_BACKDATE`]
//! until `notAfter`. Certificates are backdated so a registry whose clock lags still
//! accepts an `x5c` chain, and a rotated key's certificate starts in the future, so
//! the key is published before it signs. Generation lives in `generate`; this module
//! does not sign tokens (see `signer`).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey as X509PublicKey;

use super::kid;

/// Name of the file holding every certificate, for a registry's `rootcertbundle`.
pub const BUNDLE_FILE: &str = "bundle.pem";
/// Name of the JWKS file written beside the bundle (distribution 3's `jwks` option).
pub const JWKS_FILE: &str = "jwks.json";
/// File stem of berth's certificate authority (`ca.key`, `ca.crt`); never signs tokens.
pub const CA_NAME: &str = "ca";
/// How far a certificate's `notBefore` lies before the moment its key starts to sign.
pub const CERT_BACKDATE: time::Duration = time::Duration::hours(1);

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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn invalid(path: &Path, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (the default: every registry accepts it).
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// RSA-PSS with SHA-256.
    Ps256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// Every algorithm berth signs with.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Rs256,
        Algorithm::Ps256,
        Algorithm::EdDsa,
    ];

    /// The JOSE name.
    pub fn jose(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Prefix of key file names; for RSA keys it is what tells PS256 from RS256.
    pub fn file_prefix(self) -> &'static str {
        match self {
            Algorithm::Es256 => "es256",
            Algorithm::Es384 => "es384",
            Algorithm::Rs256 => "rs256",
            Algorithm::Ps256 => "ps256",
            Algorithm::EdDsa => "eddsa",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jose())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "es256" => Ok(Algorithm::Es256),
            "es384" => Ok(Algorithm::Es384),
            "rs256" => Ok(Algorithm::Rs256),
            "ps256" => Ok(Algorithm::Ps256),
            "eddsa" | "ed25519" => Ok(Algorithm::EdDsa),
            other => Err(format!(
                "unsupported algorithm {other:?} (es256, es384, rs256, ps256 or eddsa)"
            )),
        }
    }
}

/// Public key material, as needed for JWKs and thumbprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Elliptic curve point.
    Ec {
        /// Curve name (`P-256` or `P-384`).
        crv: &'static str,
        /// X coordinate, big-endian, full width.
        x: Vec<u8>,
        /// Y coordinate, big-endian, full width.
        y: Vec<u8>,
    },
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// Octet key pair (Ed25519).
    Okp {
        /// Curve name (`Ed25519`).
        crv: &'static str,
        /// The public key.
        x: Vec<u8>,
    },
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed(Ed25519KeyPair),
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
    /// DER certificates for an `x5c` header: this key's, then its issuer's when
    /// berth's CA issued it.
    pub chain: Vec<Vec<u8>>,
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

/// Reads a PEM file with one block of the expected tag.
pub(crate) fn read_pem(path: &Path, tag: &str) -> Result<Vec<u8>, KeyError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let block = pem::parse(&text).map_err(|e| invalid(path, format!("not PEM: {e}")))?;
    if block.tag() != tag {
        return Err(invalid(path, format!("expected a {tag:?} PEM block")));
    }
    Ok(block.contents().to_vec())
}

/// The public key of a certificate, or why berth cannot use it.
fn public_key_of(x509: &X509Certificate<'_>) -> Result<PublicKey, String> {
    let spki = x509.public_key();
    if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 {
        let data = spki.subject_public_key.data.to_vec();
        if data.len() != 32 {
            return Err("malformed Ed25519 public key".into());
        }
        return Ok(PublicKey::Okp {
            crv: "Ed25519",
            x: data,
        });
    }
    match spki.parsed() {
        Ok(X509PublicKey::EC(point)) => {
            let data = point.data();
            let crv = match data.len() {
                65 => "P-256",
                97 => "P-384",
                _ => return Err("only uncompressed P-256 and P-384 points are supported".into()),
            };
            if data[0] != 4 {
                return Err("only uncompressed EC points are supported".into());
            }
            let half = (data.len() - 1) / 2;
            Ok(PublicKey::Ec {
                crv,
                x: data[1..=half].to_vec(),
                y: data[half + 1..].to_vec(),
            })
        }
        Ok(X509PublicKey::RSA(rsa)) => Ok(PublicKey::Rsa {
            n: strip_zeros(rsa.modulus),
            e: strip_zeros(rsa.exponent),
        }),
        _ => Err("unsupported public key type".into()),
    }
}

impl SigningKey {
    /// Signs `message` (the JWS signing input) and returns the raw JWS signature.
    pub fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.sign_with(self.alg, rng, message)
    }

    /// Signs as `alg` rather than the key's own algorithm: an RSA key signs RS256 or
    /// PS256 (`berth doctor` probes registries with both); other keys only their own.
    pub fn sign_with(
        &self,
        alg: Algorithm,
        rng: &SystemRandom,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let rsa_alg = matches!(alg, Algorithm::Rs256 | Algorithm::Ps256);
        if alg != self.alg && !(rsa_alg && matches!(self.pair, Pair::Rsa(_))) {
            return Err(KeyError::Generate(format!(
                "a {} key cannot sign {}",
                self.alg, alg
            )));
        }
        match &self.pair {
            Pair::Ec(k) => k
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Generate("ECDSA signing failed".into())),
            Pair::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, rng, message, &mut sig)
                    .map_err(|_| KeyError::Generate("RSA signing failed".into()))?;
                Ok(sig)
            }
            Pair::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }

    /// When this key starts to sign: [`CERT_BACKDATE`] after its certificate's `notBefore`.
    pub fn signs_from(&self) -> OffsetDateTime {
        self.not_before + CERT_BACKDATE
    }

    /// Whether this key may sign at `now`.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.signs_from() <= now && now < self.not_after
    }

    /// Whether registries should trust this key at `now`: its certificate has not
    /// expired (keys that sign only later are published ahead of time).
    pub fn published_at(&self, now: OffsetDateTime) -> bool {
        now < self.not_after
    }

    /// Loads `NAME.key` and `NAME.crt` from `dir`; `ca` is berth's CA certificate
    /// (DER), if there is one, to build the `x5c` chain.
    pub fn load(dir: &Path, name: &str, ca: Option<&[u8]>) -> Result<Self, KeyError> {
        let key_path = dir.join(format!("{name}.key"));
        let crt_path = dir.join(format!("{name}.crt"));
        let key_der = read_pem(&key_path, "PRIVATE KEY")?;
        let cert_der = read_pem(&crt_path, "CERTIFICATE")?;
        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| invalid(&crt_path, format!("not an X.509 certificate: {e}")))?;
        let public = public_key_of(&x509).map_err(|p| invalid(&crt_path, p))?;
        let rng = SystemRandom::new();
        let bad_key = |what: &str, e: ring::error::KeyRejected| {
            invalid(&key_path, format!("not a {what} PKCS#8 key: {e}"))
        };
        let (alg, pair) = match &public {
            PublicKey::Ec { crv: "P-384", .. } => (
                Algorithm::Es384,
                Pair::Ec(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                        &key_der,
                        &rng,
                    )
                    .map_err(|e| bad_key("P-384", e))?,
                ),
            ),
            PublicKey::Ec { .. } => (
                Algorithm::Es256,
                Pair::Ec(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &key_der,
                        &rng,
                    )
                    .map_err(|e| bad_key("P-256", e))?,
                ),
            ),
            PublicKey::Rsa { .. } => {
                // An RSA key signs PS256 only when its file says so.
                let alg = if name.starts_with(Algorithm::Ps256.file_prefix()) {
                    Algorithm::Ps256
                } else {
                    Algorithm::Rs256
                };
                let pair = RsaKeyPair::from_pkcs8(&key_der).map_err(|e| bad_key("RSA", e))?;
                (alg, Pair::Rsa(pair))
            }
            PublicKey::Okp { .. } => (
                Algorithm::EdDsa,
                Pair::Ed(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key_der)
                        .map_err(|e| bad_key("Ed25519", e))?,
                ),
            ),
        };
        let pair_public: &[u8] = match &pair {
            Pair::Ec(k) => k.public_key().as_ref(),
            Pair::Rsa(k) => k.public_key().as_ref(),
            Pair::Ed(k) => k.public_key().as_ref(),
        };
        // The certificate must certify this very key, or registries would trust
        // a different key than the one that signs.
        if pair_public != x509.public_key().subject_public_key.data.as_ref() {
            return Err(invalid(
                &crt_path,
                format!("certificate does not match {name}.key"),
            ));
        }
        let mut chain = vec![cert_der.clone()];
        if let Some(ca_der) = ca {
            if let Ok((_, ca_x509)) = X509Certificate::from_der(ca_der) {
                let issued_by_ca = x509.issuer() == ca_x509.subject()
                    && x509.verify_signature(Some(ca_x509.public_key())).is_ok();
                if issued_by_ca && x509.subject() != ca_x509.subject() {
                    chain.push(ca_der.to_vec());
                }
            }
        }
        let to_time = |t: x509_parser::time::ASN1Time| t.to_datetime();
        Ok(SigningKey {
            name: name.to_owned(),
            alg,
            kid_libtrust: kid::libtrust(x509.public_key().raw),
            kid_thumbprint: kid::thumbprint(&public),
            cert_pem: pem::encode(&pem::Pem::new("CERTIFICATE", cert_der.clone())),
            not_before: to_time(x509.validity().not_before),
            not_after: to_time(x509.validity().not_after),
            chain,
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

/// Writes `path` through a temporary file and a rename, so a registry starting
/// at that moment reads the old or the new file, never half of one.
/// Replaces `path` atomically through a temporary file of a name no other
/// writer uses (process id and random bytes), so replicas sharing `keys/`
/// never write into each other's temporary file.
pub(crate) fn write_replace(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| KeyError::Generate("no randomness".into()))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{file}.{}.{}.tmp",
        std::process::id(),
        data_encoding::HEXLOWER.encode(&nonce)
    ));
    let result = fs::write(&tmp, data)
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::super::generate::generate;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
