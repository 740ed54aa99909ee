//! Why the registry refused berth's token: clock skew, the key's header form,
//! the `aud` form, or the algorithm, each confirmed by a probe it accepts.

use crate::config::KeyIdMode;
use crate::token::keys::Algorithm;

use super::probe::{mode_name, Prober, Verdict, PROBE_ALGS};
use super::{Level, Report};

pub(super) async fn diagnose(r: &mut Report, p: &Prober<'_>, skew: Option<i64>, ttl: i64) {
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
