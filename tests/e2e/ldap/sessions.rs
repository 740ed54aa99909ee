//! Refresh tokens of directory users re-checked against the directory, and
//! local names that a directory account may not take.

use std::thread;
use std::time::Duration;

use super::slapd::{dir_password, Seed, Slapd, SUFFIX};
use super::{
    dn, example_policies, expect, get_token, granted, refresh, slapd_available, start_berth,
    write_config, LOCAL_PASSWORD, LOCAL_USER,
};

#[test]
fn ldap_refresh_tokens_rechecked_and_name_conflict() {
    if !slapd_available("ldap-refresh", &[]) {
        return;
    }
    let mut dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    let config = write_config(
        &dir,
        &dir.url(),
        "",
        "revalidate = \"2s\"\ncache_ttl = \"1s\"",
    );
    let berth = start_berth(&config, &example_policies());
    let scope = "repository:team-a/app:pull,push";
    let body = expect(
        get_token(&berth, "alice", &dir_password("alice"), &[scope], true),
        200,
        "alice logs in (offline_token)",
        &berth,
    );
    let rt = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    assert!(rt.starts_with("ldap."), "{body}");
    let body = expect(refresh(&berth, &rt, scope), 200, "refresh grant", &berth);
    assert_eq!(granted(&body, "team-a/app"), ["pull", "push"], "{body}");

    // Directory away when the re-check is due: 503, not a revoked token.
    dir.stop();
    thread::sleep(Duration::from_millis(2500));
    let body = expect(
        refresh(&berth, &rt, scope),
        503,
        "refresh due for a re-check while the directory is down",
        &berth,
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("the directory is unavailable"),
        "{body}"
    );
    dir.restart();
    expect(
        refresh(&berth, &rt, scope),
        200,
        "the same refresh token once the directory is back",
        &berth,
    );

    // Removed from team-a in the directory: the next check after the window sees it.
    dir.modify(&format!(
        "dn: cn=team-a,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: {}\n",
        dn("alice")
    ));
    thread::sleep(Duration::from_millis(2500));
    let body = expect(
        refresh(&berth, &rt, scope),
        200,
        "refresh after leaving team-a",
        &berth,
    );
    assert!(
        granted(&body, "team-a/app").is_empty(),
        "group change not seen: {body}"
    );

    // Switched off in the directory: the refresh token stops working.
    dir.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: objectClass\nobjectClass: user\n-\nadd: userAccountControl\nuserAccountControl: 514\n",
        dn("alice")
    ));
    thread::sleep(Duration::from_millis(2500));
    let body = expect(
        refresh(&berth, &rt, scope),
        400,
        "refresh after alice was disabled",
        &berth,
    );
    assert_eq!(body["error"], "invalid_grant", "{body}");
    expect(
        refresh(&berth, &rt, scope),
        400,
        "the revoked refresh token again",
        &berth,
    );
    expect(
        get_token(&berth, "alice", &dir_password("alice"), &[], false),
        401,
        "disabled alice's password",
        &berth,
    );

    // A directory account named like a local one is refused (name_conflict =
    // "refuse", the default); the local password still works.
    expect(
        get_token(&berth, LOCAL_USER, &dir_password(LOCAL_USER), &[], false),
        401,
        "directory user with a local account's name",
        &berth,
    );
    expect(
        get_token(&berth, LOCAL_USER, LOCAL_PASSWORD, &[], false),
        200,
        "the local account",
        &berth,
    );
    assert_eq!(
        dir.binds_for(&dn(LOCAL_USER)),
        0,
        "a local name's password was sent to the directory"
    );
    assert!(dir.binds_for(&dn("alice")) >= 1, "binds are not counted");
}
