//! JSON Web Key Sets of the published signing keys.

use data_encoding::{BASE64, BASE64URL_NOPAD};
use serde_json::{json, Value};

use super::keys::SigningKey;
use super::public::PublicKey;
use crate::types::KeyIdMode;

/// One JWK for `key`, with the given `kid`.
pub fn jwk(key: &SigningKey, kid: &str) -> Value {
    let mut v = match &key.public {
        PublicKey::Ec { crv, x, y } => json!({
            "kty": "EC",
            "crv": crv,
            "x": BASE64URL_NOPAD.encode(x),
            "y": BASE64URL_NOPAD.encode(y),
        }),
        PublicKey::Rsa { n, e } => json!({
            "kty": "RSA",
            "n": BASE64URL_NOPAD.encode(n),
            "e": BASE64URL_NOPAD.encode(e),
        }),
        PublicKey::Okp { crv, x } => json!({
            "kty": "OKP",
            "crv": crv,
            "x": BASE64URL_NOPAD.encode(x),
        }),
    };
    if let Value::Object(map) = &mut v {
        map.insert("kid".into(), kid.into());
        map.insert("use".into(), "sig".into());
        map.insert("alg".into(), key.alg.jose().into());
        let chain: Vec<String> = key.chain.iter().map(|c| BASE64.encode(c)).collect();
        map.insert("x5c".into(), json!(chain));
    }
    v
}

/// The key ID `key` carries under `mode` (x5c headers carry no kid; the
/// thumbprint names the key then).
pub fn kid_for(key: &SigningKey, mode: KeyIdMode) -> &str {
    match mode {
        KeyIdMode::Libtrust => &key.kid_libtrust,
        KeyIdMode::Thumbprint | KeyIdMode::X5c => &key.kid_thumbprint,
    }
}

/// A JWKS holding each key once per distinct key ID form in `modes`, so a verifier
/// can look a token's `kid` up whichever form its service uses.
pub fn jwks<'a>(keys: impl Iterator<Item = &'a SigningKey>, modes: &[KeyIdMode]) -> Value {
    let mut out = Vec::new();
    for key in keys {
        let mut kids: Vec<&str> = vec![&key.kid_thumbprint];
        for mode in modes {
            let kid = kid_for(key, *mode);
            if !kids.contains(&kid) {
                kids.push(kid);
            }
        }
        out.extend(kids.into_iter().map(|kid| jwk(key, kid)));
    }
    json!({ "keys": out })
}
