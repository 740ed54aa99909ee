//! The checks in the order doctor runs them: the registry's challenge, the
//! realm, the service, a token from berth, and presenting it. Each step adds its
//! findings and returns `None` when a problem makes the later steps pointless.

use std::time::Duration;

use ring::rand::SystemRandom;
use time::OffsetDateTime;

use crate::config::{Config, ServiceConfig};
use crate::token::keyset::KeySet;

use super::challenge::Challenge;
use super::diagnose::diagnose;
use super::fetch::{clip, fetch, host_of, private_ip, Answer};
use super::probe::Prober;
use super::{Level, Options, Report};

/// Runs the steps; `None` once one stopped.
pub(super) async fn run(
    r: &mut Report,
    config: &Config,
    keys: &KeySet,
    opts: &Options,
) -> Option<()> {
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
            return None;
        }
    };
    let v2 = format!("{registry}/v2/");
    let (first, challenge) = challenge(r, &client, &v2).await?;
    let realm = challenge.get("realm").unwrap_or_default().to_owned();
    let service_name = challenge.get("service").unwrap_or_default().to_owned();
    r.push(
        Level::Ok,
        "challenge",
        format!("the registry asks for a Bearer token from {realm:?} for service {service_name:?}"),
    );
    check_realm(r, &client, config, &realm, &service_name, &registry).await;
    let service = check_service(r, config, &service_name)?;
    let (answer, token) = token_from_berth(r, &client, config, service, opts).await?;

    // Present it.
    let presented = match fetch(client.get(&v2).bearer_auth(&token)).await {
        Ok(a) => a,
        Err(e) => {
            r.push(
                Level::Problem,
                "registry-unreachable",
                format!("GET {v2} failed: {e}"),
            );
            return None;
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
        accepted(r, &client, &registry, &token).await;
        return Some(());
    }

    // Refused: why?
    let Ok(key) = keys.active(OffsetDateTime::now_utc()) else {
        r.push(Level::Problem, "no-key", "berth has no key that signs now");
        return None;
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
    diagnose(r, &prober, skew.filter(|_| skew_breaks), ttl).await;
    Some(())
}

/// `GET /v2/` must answer 401 with a Bearer challenge.
async fn challenge(
    r: &mut Report,
    client: &reqwest::Client,
    v2: &str,
) -> Option<(Answer, Challenge)> {
    let first = match fetch(client.get(v2)).await {
        Ok(a) => a,
        Err(e) => {
            r.push(
                Level::Problem,
                "registry-unreachable",
                format!("GET {v2} failed: {e}"),
            );
            return None;
        }
    };
    match (first.status, &first.challenge) {
        (401, Some(c)) if c.scheme == "bearer" => {
            let c = c.clone();
            Some((first, c))
        }
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
            None
        }
        (200, _) => {
            r.push(
                Level::Problem,
                "no-auth",
                "the registry answers /v2/ without credentials: token authentication is off, so \
                 berth is not consulted (add the `auth: token:` block from `berth registry-config`)",
            );
            None
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
            None
        }
    }
}

/// The realm must be berth's, and reachable by name.
async fn check_realm(
    r: &mut Report,
    client: &reqwest::Client,
    config: &Config,
    realm: &str,
    service_name: &str,
    registry: &str,
) {
    let ours = config.realm();
    if realm != ours {
        let reach = fetch(client.get(realm).query(&[("service", service_name)])).await;
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
    let realm_host = host_of(realm);
    if private_ip(realm_host) && realm_host != host_of(registry) {
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
}

/// The service the registry announces must be one berth issues tokens for.
fn check_service<'c>(
    r: &mut Report,
    config: &'c Config,
    service_name: &str,
) -> Option<&'c ServiceConfig> {
    let Some(service) = config.service(service_name) else {
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
        return None;
    };
    r.push(
        Level::Ok,
        "service",
        format!("berth issues tokens for service {:?}", service.name),
    );
    Some(service)
}

/// A token from berth's realm, as a client would get it.
async fn token_from_berth(
    r: &mut Report,
    client: &reqwest::Client,
    config: &Config,
    service: &ServiceConfig,
    opts: &Options,
) -> Option<(Answer, String)> {
    let ours = config.realm();
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
            return None;
        }
    };
    if answer.status == 401 {
        r.push(
            Level::Problem,
            "credentials",
            "berth refused the username or password given to doctor",
        );
        return None;
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
        return None;
    };
    Some((answer, token))
}

/// The registry took the token: say so, and whether the catalog is readable.
async fn accepted(r: &mut Report, client: &reqwest::Client, registry: &str, token: &str) {
    r.push(
        Level::Ok,
        "token-accepted",
        "the registry accepts berth's token",
    );
    if let Ok(cat) = fetch(
        client
            .get(format!("{registry}/v2/_catalog"))
            .bearer_auth(token),
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
}
