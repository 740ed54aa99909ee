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

use super::keys::{
    invalid, io_err, read_pem, write_replace, Algorithm, KeyError, CA_NAME, CERT_BACKDATE,
};
use super::keyset::KeySet;

/// Common name of berth's CA certificate.
const CA_COMMON_NAME: &str = "berth token signing CA";
/// Lifetime of the CA certificate.
const CA_LIFETIME: time::Duration = time::Duration::days(3650);
/// Lifetime of a signing key's certificate. Short, so that a key that leaked
/// and was retired stops verifying at every `x5c` registry within it; berth
/// renews the certificates of the keys it signs with (see [`renew_due`]).
pub const KEY_LIFETIME: time::Duration = time::Duration::days(30);
/// A signing certificate is renewed when it has less than this left.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(10);

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
    if !key_path.exists() && crt_path.exists() {
        // The CA is kept offline: a new CA here would leave every x5c registry
        // trusting the old one.
        return Err(KeyError::Generate(format!(
            "{} is not here (the CA is kept offline); run this command where it is",
            key_path.display()
        )));
    }
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
    write_replace(&crt_path, cert.pem().as_bytes())?;
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
    write_replace(&crt_path, cert.pem().as_bytes())?;
    write_private(&key_path, &key_pair.serialize_pem())?;
    Ok(name)
}

/// With the CA offline, berth warns this long before a certificate it cannot
/// renew expires.
pub const WARN_BEFORE: time::Duration = time::Duration::days(14);

/// Warnings for certificates of signing (or pending) keys that expire within
/// [`WARN_BEFORE`] while the CA key is not here to renew them.
pub fn unrenewable(set: &KeySet, dir: &Path, now: OffsetDateTime) -> Vec<String> {
    if ca_online(dir) {
        return Vec::new();
    }
    let active = set.active_index(now);
    set.keys
        .iter()
        .enumerate()
        .filter(|(i, k)| Some(*i) == active || k.signs_from() > now)
        .filter(|(_, k)| k.not_after - now < WARN_BEFORE)
        .map(|(_, k)| {
            format!(
                "the certificate of signing key {} expires in {} day(s) and berth cannot renew it: {}/{CA_NAME}.key is offline; run `berth key renew` where it is and copy the new {}.crt here",
                k.name,
                (k.not_after - now).whole_days(),
                dir.display(),
                k.name
            )
        })
        .collect()
}

/// An exclusive hold on a keys directory (`.lock` in it), released on drop.
/// Whoever creates or renews keys takes it first, so replicas starting at once
/// on a shared, empty `keys/` make one CA and one first key between them, and
/// a rotation never meets a renewal half-way. Advisory (`flock`): it holds
/// between processes on one host.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] fs::File);

/// Takes the keys directory's lock, waiting for another holder.
pub fn lock(dir: &Path) -> Result<DirLock, KeyError> {
    crate::custody::private_dir(dir).map_err(io_err(dir))?;
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    file.lock().map_err(io_err(&path))?;
    Ok(DirLock(file))
}

/// Whether berth's CA key is in `dir`, so berth can renew certificates itself.
pub fn ca_online(dir: &Path) -> bool {
    dir.join(format!("{CA_NAME}.key")).exists()
}

/// The keys whose certificates should be renewed at `now`: the signing key and
/// keys that sign later, when less than [`RENEW_BEFORE`] is left (every one of
/// them with `force`). Keys a newer one replaced are left to expire: that is how
/// a retired key stops verifying.
pub fn due(set: &KeySet, now: OffsetDateTime, force: bool) -> Vec<String> {
    let active = set.active_index(now);
    set.keys
        .iter()
        .enumerate()
        .filter(|(i, k)| Some(*i) == active || k.signs_from() > now)
        .filter(|(_, k)| force || k.not_after - now < RENEW_BEFORE)
        .map(|(_, k)| k.name.clone())
        .collect()
}

/// Renews the certificates [`due`] names, with berth's CA: the same key and the
/// same `notBefore` (so when each key signs does not change), a new `notAfter`
/// [`KEY_LIFETIME`] from now. Rewrites the bundle when anything changed.
/// Returns the renewed names.
pub fn renew_due(dir: &Path, now: OffsetDateTime, force: bool) -> Result<Vec<String>, KeyError> {
    let _lock = lock(dir)?;
    let set = KeySet::load(dir)?;
    let names = due(&set, now, force);
    if names.is_empty() {
        return Ok(names);
    }
    let ca = load_or_create_ca(dir, now)?;
    for key in set.keys.iter().filter(|k| names.contains(&k.name)) {
        let key_path = dir.join(format!("{}.key", key.name));
        let pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let pair = match key.alg {
            Algorithm::Es256 | Algorithm::Es384 | Algorithm::EdDsa => {
                rcgen::KeyPair::from_pem(&pem)
            }
            _ => rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256),
        }
        .map_err(|e| invalid(&key_path, format!("cannot read the key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth token signing key");
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = key.not_before;
        params.not_after = now + KEY_LIFETIME;
        params.serial_number = Some(serial()?);
        let cert = params
            .signed_by(&pair, &ca.cert, &ca.key)
            .map_err(gen_err)?;
        let crt_path = dir.join(format!("{}.crt", key.name));
        write_replace(&crt_path, cert.pem().as_bytes())?;
    }
    KeySet::load(dir)?.write_bundle(now)?;
    Ok(names)
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

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    #[test]
    fn renewal_extends_the_signing_and_pending_keys_only_and_keeps_when_they_sign() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t0 = OffsetDateTime::now_utc() - days(25);
        let retired = generate(d, Algorithm::Es256, t0, t0).unwrap();
        let active = generate(d, Algorithm::Rs256, t0, t0 + days(1)).unwrap();
        let now = t0 + days(25);
        let pending = generate(d, Algorithm::Es256, now, now + days(1)).unwrap();
        let before = KeySet::load(d).unwrap();
        fn key<'a>(set: &'a KeySet, n: &str) -> &'a crate::token::keys::SigningKey {
            set.keys.iter().find(|k| k.name == n).unwrap()
        }
        assert_eq!(before.active(now).unwrap().name, active);
        // The active key has 6 days left: due. The pending one was just made: not
        // due unless forced. The retired one is never renewed.
        assert_eq!(due(&before, now, false), std::slice::from_ref(&active));
        let mut forced = due(&before, now, true);
        forced.sort();
        let mut expect = vec![active.clone(), pending.clone()];
        expect.sort();
        assert_eq!(forced, expect);
        assert_eq!(
            renew_due(d, now, false).unwrap(),
            std::slice::from_ref(&active)
        );
        let after = KeySet::load(d).unwrap();
        let (a0, a1) = (key(&before, &active), key(&after, &active));
        assert_eq!(
            a1.signs_from(),
            a0.signs_from(),
            "renewal moved when the key signs"
        );
        assert!(a1.not_after > a0.not_after + days(20));
        assert_eq!(a1.kid_libtrust, a0.kid_libtrust, "same key, same key id");
        assert_eq!(
            key(&after, &retired).not_after,
            key(&before, &retired).not_after
        );
        assert_eq!(after.active(now).unwrap().name, active);
        // Still chained to the CA, and in the rewritten bundle.
        let ca_der = read_pem(&d.join("ca.crt"), "CERTIFICATE").unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        let der = read_pem(&d.join(format!("{active}.crt")), "CERTIFICATE").unwrap();
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        let bundle = fs::read_to_string(d.join("bundle.pem")).unwrap();
        assert!(bundle.contains(a1.cert_pem.trim()));
        // Nothing is due any more.
        assert!(renew_due(d, now, false).unwrap().is_empty());
        assert!(unrenewable(&after, d, now).is_empty());
    }

    #[test]
    fn an_offline_ca_is_never_replaced_and_its_expiries_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let t0 = OffsetDateTime::now_utc() - days(20);
        let name = generate(d, Algorithm::Es256, t0, t0).unwrap();
        let ca_crt = fs::read_to_string(d.join("ca.crt")).unwrap();
        fs::rename(d.join("ca.key"), d.join("ca.key.offline")).unwrap();
        assert!(!ca_online(d));
        let now = t0 + days(20);
        let e = generate(d, Algorithm::Es256, now, now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("offline"), "{e}");
        assert!(renew_due(d, now, false).is_err());
        assert_eq!(fs::read_to_string(d.join("ca.crt")).unwrap(), ca_crt);
        assert!(!d.join("ca.key").exists());
        let set = KeySet::load(d).unwrap();
        let warnings = unrenewable(&set, d, now);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&name) && warnings[0].contains("berth key renew"));
        // Far from expiry, no warning.
        assert!(unrenewable(&set, d, t0 + days(1)).is_empty());
    }

    #[test]
    fn concurrent_replacements_leave_one_whole_file_and_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_replace(&path, &vec![b'a' + i; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let data = fs::read(&path).unwrap();
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|b| *b == data[0]), "interleaved writes");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
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
