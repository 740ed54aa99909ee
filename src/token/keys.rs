//! One signing key on disk: its algorithm, loading a key and its certificate,
//! signing, and when it signs. The set of keys, the bundle and the JWKS file
//! are in `keyset`; public key material in `public`.
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

use super::kid;
use super::public::public_key_of;
pub use super::public::PublicKey;

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
