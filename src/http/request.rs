//! Parsing token requests: GET query strings, POST OAuth2 forms and `Authorization`
//! headers, into a [`TokenRequest`]. Total functions: hostile input gives an
//! [`ApiError`], never a panic.

use axum::http::HeaderValue;
use data_encoding::BASE64;
use secrecy::SecretString;

use super::error::ApiError;
use crate::scope::{self, Scope};

/// Longest username accepted in credentials.
pub const MAX_USERNAME_LEN: usize = 256;
/// Longest password accepted in credentials.
pub const MAX_PASSWORD_LEN: usize = 4096;
/// Longest query string or form body accepted.
pub const MAX_PARAMS_LEN: usize = 64 * 1024;

/// The credentials a request carries.
pub enum Credentials {
    /// None: anonymous.
    Anonymous,
    /// Username and password (Basic auth, or the password grant).
    Password {
        /// Username as sent.
        username: String,
        /// Password as sent.
        password: SecretString,
    },
    /// A refresh token (refresh grant).
    Refresh(SecretString),
}

/// Which grant a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// GET with Basic auth or anonymous.
    Get,
    /// POST `grant_type=password`.
    Password,
    /// POST `grant_type=refresh_token`.
    RefreshToken,
}

/// A parsed token request.
pub struct TokenRequest {
    /// Requested service (audience), if given.
    pub service: Option<String>,
    /// Requested scopes, merged per resource.
    pub scopes: Vec<Scope>,
    /// Whether a refresh token is asked for.
    pub offline: bool,
    /// The `account` parameter, if given.
    pub account: Option<String>,
    /// Credentials.
    pub credentials: Credentials,
    /// Grant used.
    pub grant: Grant,
}

fn pairs(raw: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    if raw.len() > MAX_PARAMS_LEN {
        return Err(ApiError::invalid_request("request parameters too long"));
    }
    Ok(form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

fn parse_scopes<'a>(
    values: impl Iterator<Item = &'a str>,
    max: usize,
) -> Result<Vec<Scope>, ApiError> {
    let mut scopes = Vec::new();
    for value in values {
        if scopes.len() > max {
            break;
        }
        let parsed: Scope = value.parse().map_err(|e: scope::ScopeError| {
            ApiError::invalid_scope(format!("{e} in scope {:?}", truncate(value)))
        })?;
        scopes.push(parsed);
    }
    if scopes.len() > max {
        return Err(ApiError::invalid_scope(format!(
            "too many scopes (at most {max})"
        )));
    }
    Ok(scope::merge(scopes))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn single<'a>(params: &'a [(String, String)], key: &str) -> Result<Option<&'a str>, ApiError> {
    let mut it = params.iter().filter(|(k, _)| k == key);
    let first = it.next().map(|(_, v)| v.as_str());
    if it.next().is_some() {
        return Err(ApiError::invalid_request(format!(
            "parameter {key} given twice"
        )));
    }
    Ok(first)
}

/// Decodes a `Basic` Authorization header into username and password.
pub fn basic_credentials(header: &HeaderValue) -> Result<(String, SecretString), ApiError> {
    let bad = |m: &str| ApiError::invalid_request(format!("malformed Authorization header: {m}"));
    let value = header.to_str().map_err(|_| bad("not ASCII"))?;
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| bad("expected `Basic <base64>`"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad("only the Basic scheme is accepted here"));
    }
    let decoded = BASE64
        .decode(rest.trim().as_bytes())
        .map_err(|_| bad("invalid base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| bad("credentials are not UTF-8"))?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| bad("expected user:password"))?;
    check_lengths(user, pass)?;
    Ok((user.to_owned(), SecretString::from(pass.to_owned())))
}

fn check_lengths(user: &str, pass: &str) -> Result<(), ApiError> {
    if user.is_empty() || user.len() > MAX_USERNAME_LEN {
        return Err(ApiError::invalid_request("username must be 1-256 bytes"));
    }
    if pass.len() > MAX_PASSWORD_LEN {
        return Err(ApiError::invalid_request("password longer than 4096 bytes"));
    }
    Ok(())
}

/// Parses a GET token request.
pub fn parse_get(
    query: &str,
    auth: Option<&HeaderValue>,
    max_scopes: usize,
) -> Result<TokenRequest, ApiError> {
    let params = pairs(query.as_bytes())?;
    let scopes = parse_scopes(
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
        max_scopes,
    )?;
    let credentials = match auth {
        None => Credentials::Anonymous,
        Some(h) => {
            let (username, password) = basic_credentials(h)?;
            Credentials::Password { username, password }
        }
    };
    Ok(TokenRequest {
        service: single(&params, "service")?.map(str::to_owned),
        scopes,
        offline: single(&params, "offline_token")? == Some("true"),
        account: single(&params, "account")?
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        credentials,
        grant: Grant::Get,
    })
}

/// Parses a POST (OAuth2 form) token request.
pub fn parse_post(body: &[u8], max_scopes: usize) -> Result<TokenRequest, ApiError> {
    let params = pairs(body)?;
    let required = |key: &str| -> Result<String, ApiError> {
        single(&params, key)?
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::invalid_request(format!("missing parameter {key}")))
    };
    let grant_type = required("grant_type")?;
    let (grant, credentials, account) = match grant_type.as_str() {
        "password" => {
            let username = required("username")?;
            let password = single(&params, "password")?.unwrap_or("").to_owned();
            check_lengths(&username, &password)?;
            (
                Grant::Password,
                Credentials::Password {
                    username: username.clone(),
                    password: SecretString::from(password),
                },
                Some(username),
            )
        }
        "refresh_token" => (
            Grant::RefreshToken,
            Credentials::Refresh(SecretString::from(required("refresh_token")?)),
            None,
        ),
        other => return Err(ApiError::unsupported_grant(other)),
    };
    let scopes = parse_scopes(
        params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty()),
        max_scopes,
    )?;
    required("client_id")?;
    Ok(TokenRequest {
        service: Some(required("service")?),
        scopes,
        offline: single(&params, "access_type")? == Some("offline"),
        account,
        credentials,
        grant,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn basic(s: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Basic {}", BASE64.encode(s.as_bytes()))).unwrap()
    }

    #[test]
    fn get_with_repeated_scopes() {
        let r = parse_get(
            "account=alice&scope=repository:a/b:pull&scope=repository:c/d:pull,push&service=reg&offline_token=true",
            Some(&basic("alice:pw")),
            32,
        )
        .unwrap();
        assert_eq!(r.scopes.len(), 2);
        assert!(r.offline);
        assert_eq!(r.account.as_deref(), Some("alice"));
        assert!(
            matches!(r.credentials, Credentials::Password { ref username, .. } if username == "alice")
        );
    }

    #[test]
    fn post_refresh_with_space_separated_scopes() {
        let r = parse_post(
            b"grant_type=refresh_token&refresh_token=abc&client_id=docker&service=reg&scope=repository%3Aa%2Fb%3Apull+repository%3Ac%3Apush",
            32,
        )
        .unwrap();
        assert_eq!(r.grant, Grant::RefreshToken);
        assert_eq!(r.scopes.len(), 2);
    }

    #[test]
    fn bad_inputs_are_4xx() {
        let cases: Vec<Result<TokenRequest, ApiError>> = vec![
            parse_get("scope=a:b:c:d:e:f", None, 32),
            parse_get("scope=", None, 32),
            parse_get(&"scope=repository:a:pull&".repeat(1000), None, 32),
            parse_get("", Some(&HeaderValue::from_static("Basic !!!")), 32),
            parse_get("", Some(&HeaderValue::from_static("Bearer abc")), 32),
            parse_get(
                "",
                Some(&HeaderValue::from_bytes(b"Basic /w==").unwrap()),
                32,
            ),
            parse_get("service=a&service=b", None, 32),
            parse_post(b"grant_type=implicit&client_id=x&service=s", 32),
            parse_post(b"grant_type=password&client_id=x&service=s", 32),
            parse_post(b"grant_type=refresh_token&service=s&client_id=x", 32),
            parse_post(b"client_id=x", 32),
        ];
        for c in cases {
            let e = c.err().unwrap();
            assert!(e.status().is_client_error(), "{e:?}");
        }
    }

    proptest! {
        #[test]
        fn get_parser_never_panics(q in "\\PC{0,200}", auth in proptest::collection::vec(any::<u8>(), 0..64)) {
            let header = HeaderValue::from_bytes(&[b"Basic ".as_slice(), &auth].concat()).ok();
            let _ = parse_get(&q, header.as_ref(), 32);
        }

        #[test]
        fn post_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_post(&body, 32);
        }

        #[test]
        fn basic_round_trips(user in "[a-z]{1,10}", pass in "\\PC{0,20}") {
            use secrecy::ExposeSecret;
            let (u, p) = basic_credentials(&basic(&format!("{user}:{pass}"))).unwrap();
            prop_assert_eq!(u, user);
            prop_assert_eq!(p.expose_secret(), pass.as_str());
        }
    }
}
