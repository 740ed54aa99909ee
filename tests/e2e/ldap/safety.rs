//! Bad input against the directory backend: filter and DN injection, empty,
//! long and 1 MB passwords, 10,000 groups, a referral, and secrets kept out of
//! logs and command output. Each rule is a test of its own on a fresh slapd
//! and berth; every one also checks that the service password stayed out of
//! berth's log.

use std::time::Instant;

use super::slapd::{self, dir_password, Seed, Slapd, SERVICE_PW, SUFFIX};
use super::{
    dn, example_policies, expect, get_token, refresh, send, slapd_available, start_berth,
    write_config,
};
use crate::components::{Berth, SERVICE};

/// slapd seeded with `seed`, and berth on it over ldaps with the settings
/// these tests share (no lockout, at most 50 groups, no group cache); alice's
/// sign-in is checked first, so that a refusal later means something.
fn start(test: &str, seed: &Seed) -> Option<(Slapd, Berth)> {
    if !slapd_available(test, &[]) {
        return None;
    }
    let dir = Slapd::start(seed, &["127.0.0.1"]);
    let config = write_config(
        &dir,
        &dir.ldaps_url(),
        "login_failure_limit = 100000",
        "max_groups = 50\ncache_ttl = \"0s\"",
    );
    let berth = start_berth(&config, &example_policies());
    expect(
        get_token(&berth, "alice", &dir_password("alice"), &[], false),
        200,
        "alice over ldaps",
        &berth,
    );
    Some((dir, berth))
}

/// The directory's service password never shows in berth's log.
#[track_caller]
fn no_service_password_logged(berth: &Berth) {
    assert!(
        !berth.log().contains(SERVICE_PW),
        "service password in berth's log"
    );
}

#[test]
fn ldap_revoke_user_ends_refresh_tokens() {
    let Some((_dir, berth)) = start("ldap-revoke", &Seed::default()) else {
        return;
    };
    let body = expect(
        get_token(&berth, "alice", &dir_password("alice"), &[], true),
        200,
        "alice over ldaps, with a refresh token",
        &berth,
    );
    let rt = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    expect(
        refresh(&berth, &rt, "repository:alice/a:pull"),
        200,
        "alice's refresh token",
        &berth,
    );
    let out = berth.cli_ok(&["ldap", "revoke-user", "Alice"], None);
    assert!(out.stdout.contains("revoked 1 docker login"), "{out}");
    expect(
        refresh(&berth, &rt, "repository:alice/a:pull"),
        400,
        "alice's refresh token after berth ldap revoke-user",
        &berth,
    );
    no_service_password_logged(&berth);
}

#[test]
fn ldap_filter_and_dn_syntax_in_the_username_is_literal() {
    let Some((_dir, berth)) = start("ldap-injection", &Seed::default()) else {
        return;
    };
    let alice_pw = dir_password("alice");
    // With alice's real password: a widened filter would find alice and bind.
    for name in [
        "*",
        "al*",
        "alice)(|(uid=*",
        "*)(uid=alice",
        "alice)(objectClass=*",
        "\\00",
        "alice\\00",
        "alice\0",
        "alice,ou=people,dc=berth,dc=test",
        "uid=alice,ou=people,dc=berth,dc=test",
        "alice+cn=alice",
        " alice",
    ] {
        expect(
            get_token(&berth, name, &alice_pw, &[], false),
            401,
            &format!("username {name:?} with alice's password"),
            &berth,
        );
    }
    // A name with a comma exists, and is matched literally; berth then refuses
    // it because it cannot be an account name in policy.
    expect(
        get_token(&berth, "smith, john", &dir_password("smith"), &[], false),
        401,
        "directory user \"smith, john\"",
        &berth,
    );
    assert!(
        berth.log().contains("not usable as a berth account name"),
        "the refusal of \"smith, john\" should be logged\n{}",
        berth.log_tail(20)
    );
    no_service_password_logged(&berth);
}

#[test]
fn ldap_empty_long_and_huge_passwords_never_reach_a_bind() {
    let Some((dir, berth)) = start("ldap-passwords", &Seed::default()) else {
        return;
    };
    // Nothing reaches a bind: empty and over-long passwords.
    let binds = dir.binds_for(&dn("alice"));
    assert!(
        binds >= 1,
        "alice's sign-in should show as a bind in slapd's log"
    );
    expect(
        get_token(&berth, "alice", "", &[], false),
        401,
        "alice, empty password",
        &berth,
    );
    expect(
        get_token(&berth, "alice", &"x".repeat(2048), &[], false),
        401,
        "alice, 2 KB password",
        &berth,
    );
    assert_eq!(
        dir.binds_for(&dn("alice")),
        binds,
        "an empty or over-long password reached a bind\n{}",
        dir.log_tail(20)
    );
    let big = "p".repeat(1 << 20);
    let (status, _) = send(&berth, |c, url| {
        c.post(url).form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", big.as_str()),
            ("service", SERVICE),
        ])
    });
    assert_eq!(status, 413, "1 MB password in a POST");
    let (status, _) = send(&berth, |c, url| c.get(url).basic_auth("alice", Some(&big)));
    assert!(
        status == 431 || status == 400,
        "1 MB password in Basic auth: {status}"
    );
    expect(
        get_token(&berth, "alice", &dir_password("alice"), &[], false),
        200,
        "alice after the 1 MB passwords",
        &berth,
    );
    no_service_password_logged(&berth);
}

#[test]
fn ldap_referral_is_not_followed() {
    // Something listening where the referral points: it must never be contacted.
    let bait = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    bait.set_nonblocking(true).unwrap();
    let seed = Seed {
        referral_to: Some(bait.local_addr().unwrap().to_string()),
        ..Seed::default()
    };
    let Some((_dir, berth)) = start("ldap-referral", &seed) else {
        return;
    };
    expect(
        get_token(&berth, "referred", "whatever-1", &[], false),
        401,
        "user behind a referral",
        &berth,
    );
    assert!(
        bait.accept().is_err(),
        "berth followed the directory's referral to another server"
    );
    no_service_password_logged(&berth);
}

#[test]
fn ldap_ten_thousand_groups_are_bounded_to_max_groups() {
    let seed = Seed {
        bulk_groups: 10_000,
        ..Seed::default()
    };
    let Some((_dir, berth)) = start("ldap-many-groups", &seed) else {
        return;
    };
    // 10,000 groups: bounded to max_groups, and the sign-in still works.
    let started = Instant::now();
    expect(
        get_token(&berth, "many", &dir_password("many"), &[], false),
        200,
        "user with 10,000 groups",
        &berth,
    );
    eprintln!(
        "sign-in of the user with 10,000 groups: {:?}",
        started.elapsed()
    );
    let out = berth.cli(
        &["ldap", "check", "--user", "many", "--password-stdin"],
        Some(&format!("{}\n", dir_password("many"))),
    );
    assert!(out.success(), "{out}");
    let groups_line = out
        .stdout
        .lines()
        .find(|l| l.contains("groups"))
        .unwrap_or_default();
    assert_eq!(groups_line.matches("ldap:bulk-").count(), 50, "{out}");
    assert!(out.stdout.contains("more than max_groups = 50"), "{out}");

    let plain = berth.cli(&["ldap", "check"], None);
    assert!(plain.success(), "{plain}");
    assert!(
        plain
            .stdout
            .contains(&format!("service bind as {}: ok", slapd::SERVICE_DN)),
        "{plain}"
    );
    no_service_password_logged(&berth);
    assert!(
        !out.text().contains(SERVICE_PW) && !plain.text().contains(SERVICE_PW),
        "service password in ldap check output"
    );
}

#[test]
fn ldap_user_dn_template_escapes_the_name() {
    if !slapd_available("ldap-user-dn", &[]) {
        return;
    }
    let dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    let config = write_config(&dir, &dir.url(), "login_failure_limit = 100000", "");
    // The DN built from a template instead of a search.
    let text: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("user_filter"))
        .map(|l| {
            if l.starts_with("user_base") {
                format!("user_dn = \"uid={{username}},ou=people,{SUFFIX}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&config, text).unwrap();
    let berth = start_berth(&config, &example_policies());
    let pw = dir_password("alice");
    expect(
        get_token(&berth, "alice", &pw, &[], false),
        200,
        "alice by DN template",
        &berth,
    );
    // Unescaped, these would name alice's entry (or another one) by DN syntax.
    for name in [
        "alice,ou=people",
        "alice+cn=alice",
        "alice\\,x",
        "*",
        "alice\0",
        " alice",
    ] {
        expect(
            get_token(&berth, name, &pw, &[], false),
            401,
            &format!("username {name:?} in a DN template, alice's password"),
            &berth,
        );
    }
    // A name with a comma is one RDN value, matched literally.
    let out = berth.cli(
        &["ldap", "check", "--user", "smith, john", "--password-stdin"],
        Some(&format!("{}\n", dir_password("smith"))),
    );
    assert!(
        out.text().contains("not usable as a berth account name"),
        "\"smith, john\" should be found by its escaped DN and then refused by name:\n{out}"
    );
}
