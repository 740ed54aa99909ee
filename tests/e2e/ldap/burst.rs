//! Figures for the closing note: sign-in latency with the success cache cold and
//! warm, and a 64-request burst of wrong passwords.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::slapd::{dir_password, Seed, Slapd};
use super::{dn, example_policies, expect, get_token, slapd_available, start_berth, write_config};

/// Figures for the closing note (printed, not asserted): sign-in latency with the
/// success cache cold and warm, and a 64-request burst of wrong passwords.
#[test]
fn ldap_sign_in_latency_and_wrong_password_burst() {
    if !slapd_available("ldap-latency", &[]) {
        return;
    }
    let dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let samples = 300;
    let mut figures = Vec::new();
    let sample = |berth: &crate::components::Berth, user: &str, pw: &str, want: u16, n: usize| {
        let mut times = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            let (status, _) = get_token(berth, user, pw, &[], false);
            times.push(t.elapsed());
            assert_eq!(status, want, "{user}");
        }
        median(times)
    };
    for (label, ttl, top) in [
        ("cold (cache_ttl = 0), auth_order local, ldap", "0s", ""),
        ("warm (cache_ttl = 30s), auth_order local, ldap", "30s", ""),
        (
            "cold (cache_ttl = 0), auth_order ldap, local",
            "0s",
            "auth_order = [\"ldap\", \"local\"]",
        ),
    ] {
        let top = format!("{top}\nlogin_failure_limit = 100000");
        let config = write_config(&dir, &dir.url(), &top, &format!("cache_ttl = \"{ttl}\""));
        let berth = start_berth(&config, &example_policies());
        expect(
            get_token(&berth, "alice", &dir_password("alice"), &[], false),
            200,
            "first sign-in",
            &berth,
        );
        let mut times = Vec::new();
        for _ in 0..samples {
            let t = Instant::now();
            let (status, _) = get_token(&berth, "alice", &dir_password("alice"), &[], false);
            times.push(t.elapsed());
            assert_eq!(status, 200);
        }
        figures.push(format!(
            "{label}: median {:?} over {samples}",
            median(times)
        ));
        if ttl == "0s" {
            let wrong = sample(&berth, "alice", "wrong-password", 401, 100);
            let unknown = sample(&berth, "nobody", "wrong-password", 401, 100);
            figures.push(format!(
                "{label}: wrong password median {wrong:?}, unknown name median {unknown:?} (100 each)"
            ));
        }
    }

    let config = write_config(&dir, &dir.url(), "", "");
    let berth = Arc::new(start_berth(&config, &example_policies()));
    let before = dir.binds_for(&dn("bob"));
    let started = Instant::now();
    let answers: Vec<u16> = (0..64)
        .map(|i| {
            let berth = berth.clone();
            thread::spawn(move || get_token(&berth, "bob", &format!("wrong-{i}"), &[], false).0)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let took = started.elapsed();
    let binds = dir.binds_for(&dn("bob")) - before;
    let n = |s: u16| answers.iter().filter(|a| **a == s).count();
    figures.push(format!(
        "64 parallel wrong passwords for bob: {} x 401, {} x 429, {} other, {binds} binds reached slapd, {took:?}",
        n(401),
        n(429),
        64 - n(401) - n(429)
    ));
    assert_eq!(
        n(401) + n(429),
        64,
        "every wrong password is a 401 or 429: {answers:?}"
    );
    // Attempts are taken in the database before any bind, so the failure
    // limit (10 by default) holds for the directory even within one burst.
    assert!(
        binds <= 10,
        "a burst of wrong passwords reached the directory {binds} times; login_failure_limit is 10"
    );
    // After the burst the account is locked out for the window.
    expect(
        get_token(&berth, "bob", &dir_password("bob"), &[], false),
        429,
        "bob after the burst",
        &berth,
    );
    for f in figures {
        eprintln!("FIGURE {f}");
    }
}
