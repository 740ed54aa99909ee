//! `berth doctor`: finds out why a registry refuses berth's tokens.
//!
//! It reads the registry's challenge (`GET /v2/`), checks that realm and service
//! point at this berth, obtains a token from berth's realm, presents it, and when
//! the registry refuses it, works out why from what the registry can be seen to
//! do: the `Date` headers (clock skew), and probe tokens that doctor signs itself
//! with berth's keys, varying one thing at a time (the key's header form, the
//! `aud` form, the algorithm). Probes with a wrong signature tell whether the
//! registry found the key at all: distribution 3 answers a bad signature from a
//! trusted key without `error="invalid_token"`, and an unknown key or a refused
//! algorithm with it. Doctor never changes anything.

pub mod challenge;

use std::time::Duration;

use data_encoding::{BASE64, BASE64URL_NOPAD};
use ring::rand::SystemRandom;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::{Config, KeyIdMode, ServiceConfig};
use crate::token::jwks::kid_for;
use crate::token::keys::{Algorithm, KeySet, SigningKey};
use crate::token::signer::sign_compact;

use challenge::{parse_challenge, parse_http_date, Challenge};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Checked and fine.
    Ok,
    /// Works, but worth changing.
    Warn,
    /// Why the registry refuses (or would refuse) berth's tokens.
    Problem,
}

/// One result of a check, with a stable code for scripts and tests.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// Stable identifier, e.g. `issuer-mismatch`.
    pub code: &'static str,
    /// Plain-words explanation and what to change.
    pub text: String,
}

/// What doctor found, in the order it checked.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings in order.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, code: &'static str, text: impl Into<String>) {
        self.findings.push(Finding {
            level,
            code,
            text: text.into(),
        });
    }

    /// Whether any finding is a problem.
    pub fn has_problem(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Problem)
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the registry, e.g. `https://registry.example.com`.
    pub registry: String,
    /// Account to obtain a token for (anonymous when `None`).
    pub credentials: Option<(String, String)>,
}

/// An HTTP answer, reduced to what doctor looks at.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: Option<Challenge>,
    date: Option<OffsetDateTime>,
    body: String,
}

async fn fetch(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let resp = req.send().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    })?;
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let challenge = header(reqwest::header::WWW_AUTHENTICATE).and_then(|h| parse_challenge(&h));
    let date = header(reqwest::header::DATE).and_then(|d| parse_http_date(&d));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        challenge,
        date,
        body: body.chars().take(64 * 1024).collect(),
    })
}

#[derive(Serialize)]
#[serde(untagged)]
enum Aud<'a> {
    One(&'a str),
    List([&'a str; 1]),
}

#[derive(Serialize)]
struct ProbeClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Aud<'a>,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    access: [(); 0],
}

/// The JOSE header for `key` under `mode`, with `alg` (normally the key's own).
fn probe_header(key: &SigningKey, mode: KeyIdMode, alg: &str) -> String {
    let json = match mode {
        KeyIdMode::X5c => serde_json::json!({
            "typ": "JWT",
            "alg": alg,
            "x5c": key.chain.iter().map(|c| BASE64.encode(c)).collect::<Vec<_>>(),
        }),
        _ => serde_json::json!({ "typ": "JWT", "alg": alg, "kid": kid_for(key, mode) }),
    };
    BASE64URL_NOPAD.encode(json.to_string().as_bytes())
}

fn mode_name(mode: KeyIdMode) -> &'static str {
    match mode {
        KeyIdMode::Libtrust => "libtrust",
        KeyIdMode::Thumbprint => "thumbprint",
        KeyIdMode::X5c => "x5c",
    }
}

/// Everything a probe needs.
struct Prober<'a> {
    client: &'a reqwest::Client,
    registry: &'a str,
    issuer: &'a str,
    service: &'a ServiceConfig,
    key: &'a SigningKey,
    /// The registry's clock.
    now: OffsetDateTime,
    rng: SystemRandom,
}

/// How the registry answered a probe.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accepted,
    /// Refused with `error="invalid_token"` (or no challenge at all).
    Invalid,
    /// Refused without an error code: the key was found, the signature failed.
    SignatureOnly,
    Other(u16),
}

impl Prober<'_> {
    async fn send(&self, token: &str) -> Verdict {
        let url = format!("{}/v2/", self.registry);
        match fetch(self.client.get(&url).bearer_auth(token)).await {
            Ok(a) if a.status == 200 => Verdict::Accepted,
            Ok(a) if a.status == 401 => match a.challenge.as_ref().and_then(|c| c.get("error")) {
                Some(_) => Verdict::Invalid,
                None if a.challenge.is_some() => Verdict::SignatureOnly,
                None => Verdict::Invalid,
            },
            Ok(a) => Verdict::Other(a.status),
            Err(_) => Verdict::Other(0),
        }
    }

    /// A correctly signed token like berth's, stamped with the registry's clock.
    async fn valid(
        &self,
        mode: KeyIdMode,
        aud_list: bool,
        alg_override: Option<Algorithm>,
    ) -> Verdict {
        let iat = self.now.unix_timestamp();
        let mut jti = [0u8; 12];
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut jti);
        let claims = ProbeClaims {
            iss: self.issuer,
            sub: "berth-doctor",
            aud: if aud_list {
                Aud::List([&self.service.name])
            } else {
                Aud::One(&self.service.name)
            },
            exp: iat + 120,
            nbf: iat - 30,
            iat,
            jti: BASE64URL_NOPAD.encode(&jti),
            access: [],
        };
        let alg = alg_override.unwrap_or(self.key.alg);
        let header = probe_header(self.key, mode, alg.jose());
        let token = match alg_override {
            Some(other) => sign_as(self.key, other, &header, &claims, &self.rng),
            None => sign_compact(&header, &claims, self.key, &self.rng).ok(),
        };
        match token {
            Some(t) => self.send(&t).await,
            None => Verdict::Other(0),
        }
    }

    /// A token whose header names berth's key with `alg`, and whose signature is junk.
    async fn bad_signature(&self, mode: KeyIdMode, alg: &str) -> Verdict {
        let iat = self.now.unix_timestamp();
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": "berth-doctor", "aud": self.service.name,
            "exp": iat + 120, "nbf": iat - 30, "iat": iat, "access": [],
        });
        let token = format!(
            "{}.{}.{}",
            probe_header(self.key, mode, alg),
            BASE64URL_NOPAD.encode(claims.to_string().as_bytes()),
            BASE64URL_NOPAD.encode(&[7u8; 64]),
        );
        self.send(&token).await
    }
}

/// Signs with the same RSA key under the other RSA algorithm (RS256 <-> PS256).
fn sign_as(
    key: &SigningKey,
    alg: Algorithm,
    header: &str,
    claims: &impl Serialize,
    rng: &SystemRandom,
) -> Option<String> {
    let payload = serde_json::to_vec(claims).ok()?;
    let mut token = format!("{header}.{}", BASE64URL_NOPAD.encode(&payload));
    let sig = key.sign_with(alg, rng, token.as_bytes()).ok()?;
    token.push('.');
    token.push_str(&BASE64URL_NOPAD.encode(&sig));
    Some(token)
}

/// Algorithms tried when looking for one the registry accepts with berth's key.
const PROBE_ALGS: [&str; 11] = [
    "RS256", "ES256", "PS256", "EdDSA", "ES384", "RS384", "RS512", "ES512", "PS384", "PS512",
    "HS256",
];

/// The start of a response body, for messages (never a whole token).
fn clip(body: &str) -> String {
    body.chars().take(200).collect()
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let host = match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => hostport,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn private_ip(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

/// Runs every check against the registry in `opts`.
pub async fn run(config: &Config, keys: &KeySet, opts: &Options) -> Report {
    let mut r = Report::default();
    let registry = opts.registry.trim_end_matches('/').to_owned();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            r.push(
                Level::Problem,
                "http-client",
                format!("cannot make an HTTP client: {e}"),
            );
            return r;
        }
    };

    // 1. The challenge.
    let v2 = format!("{registry}/v2/");
    let first = match fetch(client.get(&v2)).await {
        Ok(a) => a,
        Err(e) => {
            r.push(
                Level::Problem,
                "registry-unreachable",
                format!("GET {v2} failed: {e}"),
            );
            return r;
        }
    };
    let challenge = match (first.status, &first.challenge) {
        (401, Some(c)) if c.scheme == "bearer" => c.clone(),
        (401, Some(c)) => {
            r.push(
                Level::Problem,
                "not-token-auth",
                format!(
                    "the registry asks for {} authentication, not a token: its config.yml needs an \
                     `auth: token:` block (`berth registry-config` prints one)",
                    c.scheme
                ),
            );
            return r;
        }
        (200, _) => {
            r.push(
                Level::Problem,
                "no-auth",
                "the registry answers /v2/ without credentials: token authentication is off, so \
                 berth is not consulted (add the `auth: token:` block from `berth registry-config`)",
            );
            return r;
        }
        (status, _) => {
            r.push(
                Level::Problem,
                "no-challenge",
                format!(
                    "GET {v2} answered {status} without a Bearer challenge: {}",
                    clip(&first.body)
                ),
            );
            return r;
        }
    };
    let realm = challenge.get("realm").unwrap_or_default().to_owned();
    let service_name = challenge.get("service").unwrap_or_default().to_owned();
    r.push(
        Level::Ok,
        "challenge",
        format!("the registry asks for a Bearer token from {realm:?} for service {service_name:?}"),
    );

    // 2. The realm.
    let ours = config.realm();
    if realm != ours {
        let reach = fetch(
            client
                .get(&realm)
                .query(&[("service", service_name.as_str())]),
        )
        .await;
        let what = match &reach {
            Err(e) => format!("and nothing answers there ({e})"),
            Ok(a) if a.status == 404 => "and it answers 404 there: no token endpoint".to_owned(),
            Ok(a) => format!("(it answers {} there)", a.status),
        };
        r.push(
            Level::Problem,
            "realm-mismatch",
            format!(
                "wrong realm URL: the registry sends clients to {realm:?} {what}, but berth's realm is \
                 {ours:?}. Set `auth.token.realm: {ours}` in the registry's config.yml (or berth's \
                 `public_url` if berth is reached under that name)."
            ),
        );
    } else {
        r.push(Level::Ok, "realm", format!("the realm is berth's ({ours})"));
    }
    let realm_host = host_of(&realm);
    if private_ip(realm_host) && realm_host != host_of(&registry) {
        r.push(
            Level::Warn,
            "realm-private-ip",
            format!(
                "the realm's host {realm_host} is a private or loopback IP address other than the \
                 registry's: crane and other go-containerregistry clients, and oras, refuse such realms. \
                 Give berth's public_url a host name."
            ),
        );
    }

    // 3. The service (audience).
    let Some(service) = config.service(&service_name) else {
        let known: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        r.push(
            Level::Problem,
            "audience-mismatch",
            format!(
                "audience mismatch: the registry announces service {service_name:?} and accepts only tokens \
                 with that audience, but berth issues tokens for {known:?}. Set `auth.token.service` to one \
                 of those, or add a [[service]] name = {service_name:?} to berth."
            ),
        );
        return r;
    };
    r.push(
        Level::Ok,
        "service",
        format!("berth issues tokens for service {:?}", service.name),
    );

    // 4. A token from berth.
    let mut req = client.get(&ours).query(&[
        ("service", service.name.as_str()),
        ("scope", "registry:catalog:*"),
    ]);
    if let Some((user, password)) = &opts.credentials {
        req = req
            .query(&[("account", user.as_str())])
            .basic_auth(user, Some(password));
    }
    let answer = match fetch(req).await {
        Ok(a) => a,
        Err(e) => {
            r.push(
                Level::Problem,
                "berth-unreachable",
                format!("GET {ours} failed: {e}"),
            );
            return r;
        }
    };
    if answer.status == 401 {
        r.push(
            Level::Problem,
            "credentials",
            "berth refused the username or password given to doctor",
        );
        return r;
    }
    let token = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned));
    let Some(token) = token.filter(|_| answer.status == 200) else {
        r.push(
            Level::Problem,
            "token-request",
            format!(
                "berth's realm answered {}: {}",
                answer.status,
                clip(&answer.body)
            ),
        );
        return r;
    };

    // 5. Present it.
    let presented = match fetch(client.get(&v2).bearer_auth(&token)).await {
        Ok(a) => a,
        Err(e) => {
            r.push(
                Level::Problem,
                "registry-unreachable",
                format!("GET {v2} failed: {e}"),
            );
            return r;
        }
    };
    let skew = match (answer.date, presented.date.or(first.date)) {
        (Some(b), Some(reg)) => Some((b - reg).whole_seconds()),
        _ => None,
    };
    let ttl = i64::try_from(config.token_ttl.as_secs()).unwrap_or(300);
    let skew_breaks = skew.is_some_and(|s| s > 90 || s < -(ttl + 60));
    if let Some(s) = skew {
        if s.abs() > 30 && !skew_breaks {
            r.push(
                Level::Warn,
                "clock-skew",
                format!("berth's clock is {s}s off the registry's (Date headers); fix NTP before it grows"),
            );
        }
    }
    if presented.status == 200 {
        r.push(
            Level::Ok,
            "token-accepted",
            "the registry accepts berth's token",
        );
        if let Ok(cat) = fetch(
            client
                .get(format!("{registry}/v2/_catalog"))
                .bearer_auth(&token),
        )
        .await
        {
            if cat.status == 200 {
                r.push(
                    Level::Ok,
                    "catalog",
                    "the catalog is readable with this account's token",
                );
            }
        }
        return r;
    }

    // 6. Refused: why?
    let Ok(key) = keys.active(OffsetDateTime::now_utc()) else {
        r.push(Level::Problem, "no-key", "berth has no key that signs now");
        return r;
    };
    let prober = Prober {
        client: &client,
        registry: &registry,
        issuer: &config.issuer,
        service,
        key,
        now: presented.date.unwrap_or_else(OffsetDateTime::now_utc),
        rng: SystemRandom::new(),
    };
    diagnose(&mut r, &prober, skew.filter(|_| skew_breaks), ttl).await;
    r
}

async fn diagnose(r: &mut Report, p: &Prober<'_>, skew: Option<i64>, ttl: i64) {
    let mode = p.service.key_id;
    let same = p.valid(mode, p.service.audience_list, None).await;
    if let Some(s) = skew {
        let direction = if s > 0 { "ahead of" } else { "behind" };
        let confirmed = if same == Verdict::Accepted {
            " The same token stamped with the registry's time is accepted, so the clock is the only problem."
        } else {
            ""
        };
        r.push(
            Level::Problem,
            "clock-skew",
            format!(
                "clock skew: berth's clock is {}s {direction} the registry's (from their Date headers). \
                 Tokens are valid from 30s before to {ttl}s after they are issued, and the registry allows \
                 60s either way, so it sees them as not yet valid or expired. Synchronise both clocks (NTP).{confirmed}",
                s.abs()
            ),
        );
        return;
    }
    if same == Verdict::Accepted {
        r.push(
            Level::Problem,
            "refused-once",
            "the registry refused berth's token, but accepts a fresh one signed the same way; \
             try again, and compare the registry's log",
        );
        return;
    }
    // Another header form?
    for other in [KeyIdMode::Libtrust, KeyIdMode::Thumbprint, KeyIdMode::X5c] {
        if other != mode && p.valid(other, p.service.audience_list, None).await == Verdict::Accepted
        {
            r.push(
                Level::Problem,
                "kid-form",
                format!(
                    "key not found by its header: service {:?} names the key as {} (key_id = {:?}), \
                     which this registry does not understand, but it accepts the same key as {}. Set \
                     key_id = {:?} for the service (distribution 2.x looks kids up as libtrust IDs, 3.x as \
                     thumbprints or JWKS kids; x5c needs berth's CA in rootcertbundle).",
                    p.service.name,
                    mode_name(mode),
                    mode_name(mode),
                    mode_name(other),
                    mode_name(other)
                ),
            );
            return;
        }
    }
    // The other aud form?
    if p.valid(mode, !p.service.audience_list, None).await == Verdict::Accepted {
        let (now, want) = if p.service.audience_list {
            ("a list", "audience_list = false")
        } else {
            ("a string", "audience_list = true")
        };
        r.push(
            Level::Problem,
            "audience-format",
            format!(
                "the registry refuses `aud` as {now}; set {want} for service {:?}",
                p.service.name
            ),
        );
        return;
    }
    // The other RSA padding?
    let alt = match p.key.alg {
        Algorithm::Rs256 => Some(Algorithm::Ps256),
        Algorithm::Ps256 => Some(Algorithm::Rs256),
        _ => None,
    };
    if let Some(alt) = alt {
        if p.valid(mode, p.service.audience_list, Some(alt)).await == Verdict::Accepted {
            r.push(
                Level::Problem,
                "algorithm-not-allowed",
                format!(
                    "algorithm not allowed: the registry refuses {} but accepts {} with the same key. \
                     Add {} to the registry's auth.token.signingalgorithms, or give berth a {} key \
                     (`berth key rotate --alg {}`).",
                    p.key.alg.jose(),
                    alt.jose(),
                    p.key.alg.jose(),
                    alt.jose(),
                    alt.file_prefix()
                ),
            );
            return;
        }
    }
    // Nothing signed with berth's key passes. Does the registry find the key at all?
    let own_alg = p.bad_signature(mode, p.key.alg.jose()).await;
    let mut trusted = own_alg == Verdict::SignatureOnly;
    if !trusted {
        for alg in PROBE_ALGS.iter().filter(|a| **a != p.key.alg.jose()) {
            if p.bad_signature(mode, alg).await == Verdict::SignatureOnly {
                trusted = true;
                break;
            }
        }
    }
    match (trusted, own_alg == Verdict::SignatureOnly) {
        (true, true) => r.push(
            Level::Problem,
            "issuer-mismatch",
            format!(
                "issuer mismatch: the registry trusts berth's key and accepts {}, the audience and the \
                 time are right, yet it refuses the token: its `auth.token.issuer` is not berth's issuer \
                 {:?}. Set `issuer: {}` in the registry's config.yml (or berth's `issuer` to the registry's).",
                p.key.alg.jose(),
                p.issuer,
                p.issuer
            ),
        ),
        (true, false) => r.push(
            Level::Problem,
            "algorithm-not-allowed",
            format!(
                "algorithm not allowed: the registry finds berth's key but refuses tokens signed with {}. \
                 Add {} to `auth.token.signingalgorithms` in its config.yml (or drop that list), or rotate \
                 berth to an algorithm it allows.",
                p.key.alg.jose(),
                p.key.alg.jose()
            ),
        ),
        _ => r.push(
            Level::Problem,
            "key-not-trusted",
            format!(
                "key not trusted: the registry does not know berth's signing key {} ({}) in any header form. \
                 Point its `rootcertbundle` at berth's {} (and, for distribution 3, `jwks` at {}), then \
                 restart it. (A registry that checks the issuer before the key, like distribution 2.x, \
                 looks the same when only its `issuer` differs from berth's {:?}.)",
                p.key.name,
                p.key.alg.jose(),
                "keys/bundle.pem",
                "keys/jwks.json",
                p.issuer
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn hosts_and_private_addresses() {
        assert_eq!(host_of("http://127.0.0.1:5001/token"), "127.0.0.1");
        assert_eq!(host_of("https://auth.example/token"), "auth.example");
        assert_eq!(host_of("http://[::1]:80/x"), "::1");
        assert!(private_ip("127.0.0.1") && private_ip("10.1.2.3") && private_ip("::1"));
        assert!(!private_ip("auth.example") && !private_ip("8.8.8.8"));
    }
}
