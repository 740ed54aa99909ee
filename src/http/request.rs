//! Parsing token requests: GET query strings, POST OAuth2 forms and `Authorization`
//! headers, into a [`TokenRequest`]. Total functions: hostile input gives an
//! [`ApiError`], never a panic. Query and form parameters go through [`decode`],
//! the same serde_html_form rules the sign-in pages' extractors apply.

use axum::http::HeaderValue;
use data_encoding::BASE64;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Deserialize;

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

/// The parameters of a token request, GET query or POST form alike.
///
/// Decoded by [`decode`], the rules every berth page and endpoint share: a
/// `Vec` field collects a repeated key, any other field given twice is refused,
/// and unknown keys are ignored.
#[derive(Deserialize, Default)]
struct Params {
    #[serde(default)]
    scope: Vec<String>,
    service: Option<String>,
    offline_token: Option<String>,
    account: Option<String>,
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    access_type: Option<String>,
}

/// Decodes URL-encoded parameters (a query string or a form body) into `T` by
/// serde_html_form, the deserializer behind axum-extra's `Form` and `Query`
/// that the sign-in pages extract with: one set of rules everywhere. Input
/// longer than [`MAX_PARAMS_LEN`] is refused unread; a non-`Vec` key given
/// twice is refused with its name.
pub fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    if raw.len() > MAX_PARAMS_LEN {
        return Err(ApiError::invalid_request("request parameters too long"));
    }
    let de = serde_html_form::Deserializer::from_bytes(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key: String = e.path().to_string().chars().take(40).collect();
        ApiError::invalid_request(format!("parameter {key} given twice"))
    })
}

/// Every scope token of every `scope` parameter, GET and POST alike.
///
/// A `scope` value is a list of tokens separated by spaces (RFC 6749 §3.3), and
/// clients send it both ways: repeated parameters (skopeo, podman), or one
/// parameter holding several tokens, which is what a registry's challenge for a
/// cross-repository mount carries and what some clients echo back verbatim on
/// GET. A token can never contain a space, so splitting is always safe. Only the
/// space (U+0020) separates: a tab or other white space stays inside the token
/// and makes it an invalid scope, on both methods. Empty tokens (leading,
/// trailing or doubled spaces, or an empty `scope=`) are skipped. Tokens are
/// produced lazily, so the `max_scopes` bound stops a huge value early.
fn scope_tokens(scopes: &[String]) -> impl Iterator<Item = &str> {
    scopes
        .iter()
        .flat_map(|v| v.split(' '))
        .filter(|s| !s.is_empty())
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
    let params: Params = decode(query.as_bytes())?;
    let scopes = parse_scopes(scope_tokens(&params.scope), max_scopes)?;
    let credentials = match auth {
        None => Credentials::Anonymous,
        Some(h) => {
            let (username, password) = basic_credentials(h)?;
            Credentials::Password { username, password }
        }
    };
    Ok(TokenRequest {
        service: params.service,
        scopes,
        offline: params.offline_token.as_deref() == Some("true"),
        account: params.account.filter(|a| !a.is_empty()),
        credentials,
        grant: Grant::Get,
    })
}

/// Parses a POST (OAuth2 form) token request.
pub fn parse_post(body: &[u8], max_scopes: usize) -> Result<TokenRequest, ApiError> {
    let mut params: Params = decode(body)?;
    fn required(value: Option<String>, key: &str) -> Result<String, ApiError> {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::invalid_request(format!("missing parameter {key}")))
    }
    let grant_type = required(params.grant_type.take(), "grant_type")?;
    let (grant, credentials, account) = match grant_type.as_str() {
        "password" => {
            let username = required(params.username.take(), "username")?;
            let password = params.password.take().unwrap_or_default();
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
            Credentials::Refresh(SecretString::from(required(
                params.refresh_token.take(),
                "refresh_token",
            )?)),
            None,
        ),
        other => return Err(ApiError::unsupported_grant(other)),
    };
    let scopes = parse_scopes(scope_tokens(&params.scope), max_scopes)?;
    required(params.client_id, "client_id")?;
    Ok(TokenRequest {
        service: Some(required(params.service, "service")?),
        scopes,
        offline: params.access_type.as_deref() == Some("offline"),
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

    const POST_PREFIX: &str =
        "grant_type=refresh_token&refresh_token=abc&client_id=docker&service=reg&";

    /// The same `scope` query string parsed as a GET and as a POST body.
    fn both(scope_params: &str, max: usize) -> [Result<TokenRequest, ApiError>; 2] {
        [
            parse_get(scope_params, None, max),
            parse_post(format!("{POST_PREFIX}{scope_params}").as_bytes(), max),
        ]
    }

    fn names(r: &TokenRequest) -> Vec<String> {
        r.scopes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn get_splits_one_scope_value_on_spaces_like_post() {
        // What a registry's challenge for a cross-repository mount holds, sent back
        // as one value, spaces encoded as `%20` or `+`.
        for q in [
            "scope=repository%3Aa%2Fx%3Apull%2Cpush%20repository%3Aa%2Fy%3Apull",
            "scope=repository:a/x:pull,push+repository:a/y:pull",
        ] {
            for r in both(q, 32) {
                let r = r.unwrap();
                assert_eq!(
                    names(&r),
                    ["repository:a/x:pull,push", "repository:a/y:pull"],
                    "{q}"
                );
            }
        }
    }

    #[test]
    fn extra_spaces_are_skipped_the_same_on_get_and_post() {
        for q in [
            "scope=%20%20repository:a/x:pull%20%20%20repository:a/y:push%20",
            "scope=repository:a/x:pull&scope=%20repository:a/y:push",
            "scope=repository:a/x:pull+&scope=+&scope=repository:a/y:push",
        ] {
            for r in both(q, 32) {
                assert_eq!(
                    names(&r.unwrap()),
                    ["repository:a/x:pull", "repository:a/y:push"],
                    "{q}"
                );
            }
        }
        // An empty or all-space value asks for nothing (docker's POST sends `scope=`
        // at login), on both methods.
        for q in ["scope=", "scope=%20%20"] {
            for r in both(q, 32) {
                assert!(r.unwrap().scopes.is_empty(), "{q}");
            }
        }
    }

    #[test]
    fn tabs_and_spaces_inside_names_are_refused_on_get_and_post() {
        for q in [
            // A tab is not a separator: it stays in the token and is invalid.
            "scope=repository:a/x:pull%09repository:a/y:pull",
            "scope=%09repository:a/x:pull",
            "scope=repository:a/x:pull%09",
            "scope=repository:a/x:pull%0Arepository:a/y:pull",
            // A space inside a name splits it into two invalid tokens.
            "scope=repository:team/my%20app:pull",
        ] {
            for r in both(q, 32) {
                let e = r.err().unwrap_or_else(|| panic!("accepted {q}"));
                assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{q}");
                assert_eq!(e.code(), "invalid_scope", "{q}: {e:?}");
            }
        }
    }

    #[test]
    fn scopes_in_one_value_count_against_max_scopes_like_repeated_ones() {
        let tokens: Vec<String> = (0..33).map(|i| format!("repository:r/n{i}:pull")).collect();
        let one_value = format!("scope={}", tokens.join("+"));
        let repeated = tokens
            .iter()
            .map(|t| format!("scope={t}"))
            .collect::<Vec<_>>()
            .join("&");
        for q in [&one_value, &repeated] {
            for r in both(q, 32) {
                let e = r.err().unwrap();
                assert!(e.description().contains("too many scopes"), "{e:?}");
            }
            for r in both(q, 33) {
                assert_eq!(r.unwrap().scopes.len(), 33);
            }
        }
        // 3,000 tokens in one value (just under the parameter length limit) are
        // refused as too many, without parsing them all.
        let huge = format!("scope={}", "repository:a/b:pull+".repeat(3_000));
        for r in both(&huge, 32) {
            let e = r.err().unwrap();
            assert!(e.description().contains("too many scopes"), "{e:?}");
        }
    }

    #[test]
    fn bad_inputs_are_4xx() {
        let cases: Vec<Result<TokenRequest, ApiError>> = vec![
            parse_get("scope=a:b:c:d:e:f", None, 32),
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

    #[test]
    fn a_single_valued_parameter_given_twice_is_named() {
        for e in [
            parse_get("service=a&service=b", None, 32).err().unwrap(),
            parse_post(
                b"grant_type=password&username=a&username=b&client_id=x&service=s",
                32,
            )
            .err()
            .unwrap(),
        ] {
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(e.description().contains("given twice"), "{e:?}");
        }
        let e = parse_get("service=a&service=b", None, 32).err().unwrap();
        assert_eq!(e.description(), "parameter service given twice");
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
