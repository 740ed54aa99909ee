//! Public key material of a signing key, read from its certificate, as JWKs,
//! key ids and thumbprints need it.

use x509_parser::prelude::X509Certificate;
use x509_parser::public_key::PublicKey as X509PublicKey;

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

/// The public key of a certificate, or why berth cannot use it.
pub(super) fn public_key_of(x509: &X509Certificate<'_>) -> Result<PublicKey, String> {
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

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}
