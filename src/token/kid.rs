//! Key identifiers: the libtrust key ID distribution 2.x matches against its
//! certificate bundle, and the RFC 7638 JWK thumbprint used with JWKS files.
//!
//! Pure functions over public key material; no I/O.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use ring::digest::{digest, SHA256};

use super::public::PublicKey;

/// The libtrust key ID of a DER SubjectPublicKeyInfo: SHA-256, first 30 bytes,
/// base32 without padding, in twelve groups of four joined by `:`.
pub fn libtrust(spki_der: &[u8]) -> String {
    let hash = digest(&SHA256, spki_der);
    let encoded = BASE32_NOPAD.encode(&hash.as_ref()[..30]);
    let mut out = String::with_capacity(59);
    for (i, chunk) in encoded.as_bytes().chunks(4).enumerate() {
        if i > 0 {
            out.push(':');
        }
        // base32 output is ASCII, so each chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
    }
    out
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public key.
pub fn thumbprint(key: &PublicKey) -> String {
    // Required members only, in lexicographic order, no whitespace.
    let canonical = match key {
        PublicKey::Ec { crv, x, y } => format!(
            r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
            BASE64URL_NOPAD.encode(x),
            BASE64URL_NOPAD.encode(y)
        ),
        PublicKey::Rsa { n, e } => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            BASE64URL_NOPAD.encode(e),
            BASE64URL_NOPAD.encode(n)
        ),
        PublicKey::Okp { crv, x } => format!(
            r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#,
            BASE64URL_NOPAD.encode(x)
        ),
    };
    BASE64URL_NOPAD.encode(digest(&SHA256, canonical.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    // SPKI of a P-256 key, and its libtrust ID computed independently with
    // `openssl pkey -pubin -outform DER | sha256sum`, base32 of the first 30 bytes.
    const SPKI_HEX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200\
        04f8a6c9e05f7e6f5e1aa1c1f1d6e2c53a6fd9b0ad1bb7b0a4a5a8d9b3f2f0d1c2\
        8e2a6f3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn libtrust_shape() {
        let kid = libtrust(&hex(SPKI_HEX));
        assert_eq!(kid.len(), 59);
        assert_eq!(kid.split(':').count(), 12);
        assert!(kid.split(':').all(|g| g.len() == 4));
    }

    #[test]
    fn libtrust_known_vector() {
        // sha256 of the SPKI above, first 30 bytes, base32: computed with coreutils
        // and python's base64.b32encode, independently of this code.
        assert_eq!(libtrust(&hex(SPKI_HEX)), LIBTRUST_VECTOR);
    }

    const LIBTRUST_VECTOR: &str = include_str!("testdata/libtrust_vector.txt");

    #[test]
    fn thumbprint_rfc7638_example() {
        // The RSA example key of RFC 7638 section 3.1 and its published thumbprint.
        let n = BASE64URL_NOPAD
            .decode(include_str!("testdata/rfc7638_n.txt").trim().as_bytes())
            .unwrap();
        let e = BASE64URL_NOPAD.decode(b"AQAB").unwrap();
        assert_eq!(
            thumbprint(&PublicKey::Rsa { n, e }),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn thumbprint_rfc8037_ed25519_example() {
        // RFC 8037 appendix A.3: the Ed25519 example key and its thumbprint.
        let x = BASE64URL_NOPAD
            .decode(b"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(&PublicKey::Okp { crv: "Ed25519", x }),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
