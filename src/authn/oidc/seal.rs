//! Sealing provider refresh tokens at rest, with a key derived from berth's own
//! token for that row, and sealing what berth hands a browser to keep (a sign-in
//! in progress) under a key derived from a secret every replica shares.
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

/// An AES-256-GCM key: HMAC-SHA256 of `message` under `key`.
fn derive(key: &[u8], message: &[u8]) -> Option<LessSafeKey> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, message);
    UnboundKey::new(&AES_256_GCM, tag.as_ref())
        .ok()
        .map(LessSafeKey::new)
}

fn key_for(token: &str) -> Option<LessSafeKey> {
    derive(LABEL, token.as_bytes())
}

/// A sealing key derived from `secret` (a secret every replica has, such as a
/// provider's client secret) for the purpose `label`: different labels give
/// unrelated keys, and the key tells nothing about the secret.
pub fn shared_key(secret: &SecretString, label: &[u8]) -> Option<LessSafeKey> {
    derive(secret.expose_secret().as_bytes(), label)
}

/// Seals `plain` under `key`, authenticating `aad` too: nonce ‖ ciphertext ‖ tag.
pub fn seal_with(
    rng: &SystemRandom,
    key: &LessSafeKey,
    aad: &[u8],
    plain: &[u8],
) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).ok()?;
    let mut data = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut data,
    )
    .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Some(out)
}

/// Opens what [`seal_with`] made with the same key and `aad`; `None` when it was
/// sealed otherwise or changed in any bit.
pub fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = rest.to_vec();
    let plain = key.open_in_place(nonce, Aad::from(aad), &mut data).ok()?;
    Some(plain.to_vec())
}

/// Seals `secret` under `token`: nonce ‖ ciphertext ‖ tag.
pub fn seal(rng: &SystemRandom, token: &str, secret: &SecretString) -> Option<Vec<u8>> {
    seal_with(
        rng,
        &key_for(token)?,
        LABEL,
        secret.expose_secret().as_bytes(),
    )
}

/// Opens what [`seal`] made with the same token.
pub fn open(token: &str, sealed: &[u8]) -> Option<SecretString> {
    let plain = open_with(&key_for(token)?, LABEL, sealed)?;
    String::from_utf8(plain).ok().map(SecretString::from)
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

        let shared = SecretString::from("client-secret");
        let k = shared_key(&shared, b"purpose a").unwrap();
        let sealed = seal_with(&rng, &k, b"aad", b"state").unwrap();
        assert_eq!(open_with(&k, b"aad", &sealed).unwrap(), b"state");
        assert!(open_with(&k, b"other aad", &sealed).is_none());
        let other = shared_key(&shared, b"purpose b").unwrap();
        assert!(open_with(&other, b"aad", &sealed).is_none());
        let replica = shared_key(&SecretString::from("client-secret"), b"purpose a").unwrap();
        assert_eq!(open_with(&replica, b"aad", &sealed).unwrap(), b"state");
        assert_ne!(
            crate::authn::machine::secret_hash("a"),
            crate::authn::machine::secret_hash("b")
        );
    }
}
