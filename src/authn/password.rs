//! Password hashing: argon2id for new hashes; bcrypt (`$2y$`/`$2b$`/`$2a$`, from
//! htpasswd files) verified and upgraded. CPU-heavy: callers run these on the
//! blocking pool.
//!
//! Parameters: argon2id, m = 19 MiB (19,456 KiB), t = 2, p = 1: the first of
//! the equivalent argon2id configurations OWASP's Password Storage Cheat Sheet
//! lists (the others trade memory for passes: 46 MiB/t=1, 12 MiB/t=3,
//! 9 MiB/t=4, 7 MiB/t=5). Memory hardness is what makes a stolen database
//! expensive to attack on GPUs, so berth keeps the 19 MiB point rather than a
//! smaller one, and bounds what it costs the server instead: at most
//! `hash_concurrency` hashes run at once (19 MiB each, on the blocking pool),
//! an unknown user costs the same hash (no account enumeration by timing), and
//! warm requests never hash (credential cache).
//!
//! Memory goes back to the operating system after every hash. Each hash works
//! in a buffer of its own that is larger than glibc's largest dynamic mmap
//! threshold (32 MiB on 64-bit), so the allocator always maps it afresh and
//! unmaps it when the hash is done; only the 19 MiB argon2 touches ever become
//! resident. With a plain 19 MiB allocation glibc raises its mmap threshold after
//! the first free, and later buffers stay in per-thread arenas for good (RSS
//! grew by hundreds of MiB with the credential cache off).
//! Stored hashes asking for more than [`MAX_MEMORY_KIB`] never verify, so an
//! imported hash cannot make a sign-in allocate without bound.

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Largest argon2 memory cost a stored hash may ask for, in KiB (256 MiB).
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;

/// Least size of a hashing buffer: above glibc's largest dynamic mmap
/// threshold, so every buffer is a mapping of its own, unmapped when freed.
/// Only the blocks argon2 uses are touched (and resident).
const SCRATCH_FLOOR_BYTES: usize = 33 * 1024 * 1024;

/// A zeroed work area of `blocks` argon2 blocks in a mapping of its own.
fn scratch(blocks: usize) -> Vec<Block> {
    let floor = SCRATCH_FLOOR_BYTES / std::mem::size_of::<Block>();
    let mut memory = Vec::with_capacity(blocks.max(floor));
    memory.resize(blocks, Block::default());
    memory
}

/// Derives the raw argon2 output for `password` and `salt` into `out`.
fn derive(argon: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    let mut memory = scratch(argon.params().block_count());
    argon
        .hash_password_into_with_memory(password, salt, out, &mut memory)
        .is_ok()
}

/// Hash format of a stored password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// PHC-format argon2id.
    Argon2,
    /// bcrypt, from an imported htpasswd file.
    Bcrypt,
    /// Anything else: never verifies.
    Unknown,
}

/// Which format a stored hash is in.
pub fn kind_of(hash: &str) -> HashKind {
    if hash.starts_with("$argon2") {
        HashKind::Argon2
    } else if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        HashKind::Bcrypt
    } else {
        HashKind::Unknown
    }
}

/// Hashes a password with argon2id (19 MiB, 2 passes, 1 lane; see the module doc).
pub fn hash(password: &SecretString) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if !derive(
        &argon,
        password.expose_secret().as_bytes(),
        salt_bytes,
        &mut out,
    ) {
        return Err("argon2 hashing failed".into());
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params()).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Verifies an argon2 PHC string: same algorithm, version and parameters as
/// stored, output compared in constant time.
fn verify_argon2(password: &SecretString, stored: &str) -> Option<bool> {
    let phc = PasswordHash::new(stored).ok()?;
    let (salt, expected) = (phc.salt?, phc.hash?);
    let algorithm = Algorithm::try_from(phc.algorithm).ok()?;
    let version = match phc.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(&phc).ok()?;
    if params.m_cost() > MAX_MEMORY_KIB {
        tracing::warn!(
            m_cost_kib = params.m_cost(),
            "stored argon2 hash asks for more memory than berth allows; it never verifies"
        );
        return Some(false);
    }
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).ok()?;
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params);
    if !derive(
        &argon,
        password.expose_secret().as_bytes(),
        salt_bytes,
        &mut out,
    ) {
        return Some(false);
    }
    Some(out.ct_eq(expected.as_bytes()).into())
}

/// Verifies a password against a stored hash. Comparison of the derived hash is
/// constant-time for both formats.
pub fn verify(password: &SecretString, stored: &str) -> bool {
    match kind_of(stored) {
        HashKind::Argon2 => verify_argon2(password, stored).unwrap_or(false),
        HashKind::Bcrypt => bcrypt::verify(password.expose_secret(), stored).unwrap_or(false),
        HashKind::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let pw = SecretString::from("s3cret");
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&pw, &h));
        assert!(!verify(&SecretString::from("wrong"), &h));
    }

    #[test]
    fn bcrypt_from_htpasswd() {
        // Made with `htpasswd -nbB alice wonderland` style tools ($2y$) and bcrypt ($2b$).
        let h2b = bcrypt::hash("wonderland", 4).unwrap();
        let h2y = h2b.replacen("$2b$", "$2y$", 1);
        for h in [&h2b, &h2y] {
            assert_eq!(kind_of(h), HashKind::Bcrypt);
            assert!(verify(&SecretString::from("wonderland"), h));
            assert!(!verify(&SecretString::from("nope"), h));
        }
    }

    #[test]
    fn unknown_formats_never_verify() {
        assert!(!verify(&SecretString::from(""), ""));
        assert!(!verify(&SecretString::from("x"), "{SHA}abc"));
        assert!(!verify(&SecretString::from("x"), "$argon2id$garbage"));
    }

    #[test]
    fn reads_hashes_of_the_library_defaults_and_other_parameters() {
        use argon2::password_hash::PasswordHasher;
        let pw = SecretString::from("s3cret");
        // What berth wrote before it managed the buffer itself.
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(verify(&pw, &old));
        assert!(!verify(&SecretString::from("s3creT"), &old));
        // Another OWASP point and argon2i: parameters come from the stored hash.
        let other = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(12 * 1024, 3, 1, None).unwrap(),
        )
        .hash_password(b"s3cret", &salt)
        .unwrap()
        .to_string();
        assert!(verify(&pw, &other));
        // Ours reads back with the library, too.
        let ours = hash(&pw).unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2::password_hash::PasswordVerifier::verify_password(
            &Argon2::default(),
            b"s3cret",
            &parsed
        )
        .is_ok());
    }

    #[test]
    fn oversized_memory_cost_never_verifies() {
        let salt = SaltString::generate(&mut OsRng);
        let big = format!(
            "$argon2id$v=19$m={},t=1,p=1${}$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            MAX_MEMORY_KIB + 1,
            salt.as_str()
        );
        assert!(PasswordHash::new(&big).is_ok(), "{big}");
        assert!(!verify(&SecretString::from("x"), &big));
    }
}
