//! Creating keys: berth's certificate authority and signing keys it certifies.
//!
//! The CA (`ca.key`/`ca.crt`, ES256, ten years) is what a registry trusts when its
//! service uses `x5c` headers: signing keys can then be replaced without touching
//! the registry. Every signing key gets a certificate from the CA whose `notBefore`
//! is [`CERT_BACKDATE`] before the key starts to sign (see `keys`).
//!
//! Private key files are created with mode 0600 before any key byte is written, and
//! after the certificate, so a reader never sees a key without its certificate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::SystemRandom;
use time::OffsetDateTime;

use super::keys::{invalid, io_err, read_pem, Algorithm, KeyError, CA_NAME, CERT_BACKDATE};

/// Common name of berth's CA certificate.
const CA_COMMON_NAME: &str = "berth token signing CA";
/// Lifetime of the CA certificate.
const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// Lifetime of a signing key's certificate.
const KEY_LIFETIME: time::Duration = time::Duration::days(730);

fn gen_err(e: impl std::fmt::Display) -> KeyError {
    KeyError::Generate(e.to_string())
}

fn serial() -> Result<rcgen::SerialNumber, KeyError> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut serial)
        .map_err(|_| KeyError::Generate("no randomness".into()))?;
    serial[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

/// Writes a private key file: mode 0600 from creation, never overwriting.
fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(pem.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(io_err(path))
}

/// Whether an EC public key (uncompressed point) has a coordinate starting with a
/// zero byte. Some verifiers compute thumbprints from such keys without the
/// leading zero (and so a different key ID); berth never generates them.
fn has_short_coordinate(point: &[u8]) -> bool {
    if point.len() < 3 || point[0] != 4 {
        return false;
    }
    let half = (point.len() - 1) / 2;
    point[1] == 0 || point[1 + half] == 0
}

fn new_key_pair(alg: Algorithm) -> Result<rcgen::KeyPair, KeyError> {
    let ec = match alg {
        Algorithm::Es256 => Some(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::Es384 => Some(&rcgen::PKCS_ECDSA_P384_SHA384),
        _ => None,
    };
    if let Some(sig_alg) = ec {
        for _ in 0..64 {
            let pair = rcgen::KeyPair::generate_for(sig_alg).map_err(gen_err)?;
            if !has_short_coordinate(pair.public_key_raw()) {
                return Ok(pair);
            }
        }
        return Err(KeyError::Generate(
            "no EC key with full-width coordinates".into(),
        ));
    }
    match alg {
        Algorithm::EdDsa => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(gen_err),
        _ => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(gen_err)?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(gen_err)?;
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(gen_err)
        }
    }
}

/// berth's CA: its key pair and a certificate object to issue with.
struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

/// Creates `ca.key`/`ca.crt` in `dir` unless they exist.
pub fn ensure_ca(dir: &Path, now: OffsetDateTime) -> Result<(), KeyError> {
    load_or_create_ca(dir, now).map(|_| ())
}

fn load_or_create_ca(dir: &Path, now: OffsetDateTime) -> Result<Ca, KeyError> {
    crate::custody::private_dir(dir).map_err(io_err(dir))?;
    let key_path = dir.join(format!("{CA_NAME}.key"));
    let crt_path = dir.join(format!("{CA_NAME}.crt"));
    if key_path.exists() {
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(&key_path, format!("not a usable CA key: {e}")))?;
        let der = read_pem(&crt_path, "CERTIFICATE")?;
        let params = rcgen::CertificateParams::from_ca_cert_der(&der.into())
            .map_err(|e| invalid(&crt_path, format!("not a usable CA certificate: {e}")))?;
        // Only the subject and key of this object are used, to issue certificates.
        let cert = params.self_signed(&key).map_err(gen_err)?;
        return Ok(Ca { key, cert });
    }
    let key = new_key_pair(Algorithm::Es256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CERT_BACKDATE;
    params.not_after = now + CA_LIFETIME;
    params.serial_number = Some(serial()?);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    fs::write(&crt_path, cert.pem()).map_err(io_err(&crt_path))?;
    write_private(&key_path, &key.serialize_pem())?;
    Ok(Ca { key, cert })
}

/// Generates a signing key in `dir` that signs from `signs_from` (at or after
/// `now`), with a certificate from berth's CA (created if absent). Returns its name.
pub fn generate(
    dir: &Path,
    alg: Algorithm,
    now: OffsetDateTime,
    signs_from: OffsetDateTime,
) -> Result<String, KeyError> {
    let ca = load_or_create_ca(dir, now)?;
    let key_pair = new_key_pair(alg)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth token signing key");
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = signs_from - CERT_BACKDATE;
    params.not_after = signs_from.max(now) + KEY_LIFETIME;
    params.serial_number = Some(serial()?);
    let cert = params
        .signed_by(&key_pair, &ca.cert, &ca.key)
        .map_err(gen_err)?;

    let name = format!("{}-{}", alg.file_prefix(), signs_from.unix_timestamp());
    let key_path = dir.join(format!("{name}.key"));
    if key_path.exists() {
        return Err(KeyError::Generate(format!(
            "{} exists; wait a second and retry",
            key_path.display()
        )));
    }
    let crt_path = dir.join(format!("{name}.crt"));
    fs::write(&crt_path, cert.pem()).map_err(io_err(&crt_path))?;
    write_private(&key_path, &key_pair.serialize_pem())?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    #[test]
    fn signing_certificates_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let name = generate(dir.path(), Algorithm::Es256, now, now).unwrap();
        // A second key reuses the CA on disk.
        let later = now + time::Duration::seconds(5);
        let second = generate(dir.path(), Algorithm::Rs256, now, later).unwrap();
        let ca_der = read_pem(&dir.path().join("ca.crt"), "CERTIFICATE").unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert!(ca.is_ca());
        for n in [name, second] {
            let der = read_pem(&dir.path().join(format!("{n}.crt")), "CERTIFICATE").unwrap();
            let (_, leaf) = X509Certificate::from_der(&der).unwrap();
            assert_eq!(leaf.issuer(), ca.subject());
            assert!(!leaf.is_ca());
            leaf.verify_signature(Some(ca.public_key())).unwrap();
        }
    }

    #[test]
    fn short_coordinates_are_detected() {
        let mut p = vec![4u8; 65];
        assert!(!has_short_coordinate(&p));
        p[1] = 0;
        assert!(has_short_coordinate(&p));
        p[1] = 1;
        p[33] = 0;
        assert!(has_short_coordinate(&p));
    }
}
