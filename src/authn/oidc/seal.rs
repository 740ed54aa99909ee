//! Sealing provider refresh tokens at rest, with a key derived from berth's own
//! token for that row, and hashing berth's tokens for lookup.
//!
//! berth's token is stored only as SHA-256; the sealing key is HMAC-SHA256 of the
//! token under a fixed label, a different function, so the stored hash does not
//! give the key. A copy of the database alone therefore opens no provider token.

use data_encoding::BASE64URL_NOPAD;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

const LABEL: &[u8] = b"berth oidc seal v1";

/// A fresh random token: `prefix` + 43 base64url characters (256 bits).
pub fn new_token(rng: &SystemRandom, prefix: &str) -> Option<SecretString> {
    let mut raw = [0u8; 32];
    rng.fill(&mut raw).ok()?;
    Some(SecretString::from(format!(
        "{prefix}{}",
        BASE64URL_NOPAD.encode(&raw)
    )))
}

/// Random URL-safe string of `bytes` random bytes (state, nonce, PKCE verifier).
pub fn random_string(rng: &SystemRandom, bytes: usize) -> Option<String> {
    let mut raw = vec![0u8; bytes];
    rng.fill(&mut raw).ok()?;
    Some(BASE64URL_NOPAD.encode(&raw))
}

fn key_for(token: &str) -> Option<LessSafeKey> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, LABEL);
    let tag = hmac::sign(&k, token.as_bytes());
    UnboundKey::new(&AES_256_GCM, tag.as_ref())
        .ok()
        .map(LessSafeKey::new)
}

/// Seals `secret` under `token`: nonce ‖ ciphertext ‖ tag.
pub fn seal(rng: &SystemRandom, token: &str, secret: &SecretString) -> Option<Vec<u8>> {
    let key = key_for(token)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).ok()?;
    let mut data = secret.expose_secret().as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(LABEL),
        &mut data,
    )
    .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Some(out)
}

/// Opens what [`seal`] made with the same token.
pub fn open(token: &str, sealed: &[u8]) -> Option<SecretString> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let key = key_for(token)?;
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = rest.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(LABEL), &mut data).ok()?;
    String::from_utf8(plain.to_vec())
        .ok()
        .map(SecretString::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_wrong_token() {
        let rng = SystemRandom::new();
        let t = new_token(&rng, "x.").unwrap();
        assert!(t.expose_secret().starts_with("x.") && t.expose_secret().len() == 45);
        let secret = SecretString::from("idp-refresh-token");
        let sealed = seal(&rng, t.expose_secret(), &secret).unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"refresh"),
            "plaintext visible"
        );
        assert_eq!(
            open(t.expose_secret(), &sealed).unwrap().expose_secret(),
            "idp-refresh-token"
        );
        assert!(open("another", &sealed).is_none());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(open(t.expose_secret(), &bad).is_none());
        assert!(open(t.expose_secret(), &[1, 2]).is_none());
        assert_ne!(
            crate::authn::machine::secret_hash("a"),
            crate::authn::machine::secret_hash("b")
        );
    }
}
