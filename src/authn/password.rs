//! Password hashing: argon2id for new hashes; bcrypt (`$2y$`/`$2b$`/`$2a$`, from
//! htpasswd files) verified and upgraded. CPU-heavy: callers run these on the
//! blocking pool.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

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

/// Hashes a password with argon2id (default parameters: 19 MiB, 2 passes).
pub fn hash(password: &SecretString) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Verifies a password against a stored hash. Comparison of the derived hash is
/// constant-time in both libraries.
pub fn verify(password: &SecretString, stored: &str) -> bool {
    match kind_of(stored) {
        HashKind::Argon2 => PasswordHash::new(stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.expose_secret().as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false),
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
}
