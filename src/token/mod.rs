//! Access tokens: keys on disk, key identifiers, JWKS, and the JWT signer.
//!
//! This module turns a decision (who, which service, which access) into a signed
//! JWT. It does not decide access (see `policy`) and does no network I/O.

pub mod generate;
pub mod jwks;
pub mod keys;
pub mod keyset;
pub mod kid;
pub mod public;
pub mod registry;
pub mod reuse;
pub mod signer;

pub use keys::{Algorithm, KeyError, SigningKey};
pub use keyset::KeySet;
pub use reuse::Tokens;
pub use signer::{Access, Signer, TokenError};
