//! The names every layer shares, parsed once at the edge: local account names
//! ([`Username`]), group names, who is asking as policy sees it ([`Identity`],
//! [`Kind`]) and how a service's key is named in a token header
//! ([`KeyIdMode`]). `store`, `config`, `authn`, `policy` and `token` import
//! them from here, so none of them imports another for a name.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A valid local account name: 1-64 of `[a-z0-9._-]`, starting and ending with a
/// letter or digit (so `${account}/**` is always a valid repository prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local account a federated or typed name would clash with: local
    /// names are lowercase, and providers (or people typing) may capitalise, so
    /// `Admin` from a provider is the local `admin` for the clash rule, and a
    /// password typed for `Admin` is never sent to a provider while `admin`
    /// is local. `None` when no local account could have this name.
    pub fn clash_form(name: &str) -> Option<Username> {
        Username::from_str(&name.to_ascii_lowercase()).ok()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Username {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-');
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.is_empty()
            || s.len() > 64
            || !s.chars().all(ok_char)
            || !edge(s.chars().next())
            || !edge(s.chars().last())
        {
            return Err(format!(
                "invalid username {:?}: use 1-64 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
                s.chars().take(64).collect::<String>()
            ));
        }
        Ok(Username(s.to_owned()))
    }
}

/// Validates a group name: 1-128 printable characters without spaces or commas.
pub fn parse_group(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 128
        || s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ',')
    {
        return Err(format!("invalid group name {s:?}"));
    }
    Ok(s.to_owned())
}

/// What kind of principal an identity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A local user.
    User,
    /// A machine account.
    Robot,
    /// No credentials.
    Anonymous,
    /// A user from an external identity provider.
    Federated,
    /// A user from an LDAP or Active Directory directory (`[[ldap]]`).
    Directory,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::User => "user",
            Kind::Robot => "robot",
            Kind::Anonymous => "anonymous",
            Kind::Federated => "federated",
            Kind::Directory => "directory",
        })
    }
}

/// Who is asking, as far as policy is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Account name; empty for anonymous.
    pub subject: String,
    /// Principal kind.
    pub kind: Kind,
    /// Group names.
    pub groups: Vec<String>,
    /// Which backend authenticated it (`local`, `refresh`, `anonymous`, …).
    pub via: &'static str,
}

impl Identity {
    /// The anonymous identity.
    pub fn anonymous() -> Self {
        Identity {
            subject: String::new(),
            kind: Kind::Anonymous,
            groups: Vec::new(),
            via: "anonymous",
        }
    }

    /// The account policy sees: the subject, except for anonymous identities
    /// and an empty subject, which have none.
    pub fn account(&self) -> Option<&str> {
        (self.kind != Kind::Anonymous && !self.subject.is_empty()).then_some(self.subject.as_str())
    }
}

/// How the signing key is named in the JWT header for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyIdMode {
    /// `kid` is the libtrust key ID (distribution 2.x).
    #[default]
    Libtrust,
    /// `kid` is the RFC 7638 JWK thumbprint (distribution 3.x with a JWKS file).
    Thumbprint,
    /// The header carries the certificate chain in `x5c`.
    X5c,
}

impl KeyIdMode {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Libtrust => "libtrust",
            Self::Thumbprint => "thumbprint",
            Self::X5c => "x5c",
        }
    }
}

impl std::str::FromStr for KeyIdMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "libtrust" => Ok(Self::Libtrust),
            "thumbprint" => Ok(Self::Thumbprint),
            "x5c" => Ok(Self::X5c),
            other => Err(format!(
                "unknown key id mode {other:?} (expected libtrust, thumbprint or x5c)"
            )),
        }
    }
}
