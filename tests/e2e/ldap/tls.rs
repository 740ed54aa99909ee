//! TLS to the directory: StartTLS and ldaps with a test CA, a certificate for
//! another host, and an unknown CA.

use std::path::Path;

use super::slapd::{dir_password, Seed, Slapd, SERVICE_PW};
use super::{
    dn, example_policies, expect, get_token, slapd_available, start_berth, write_config,
    LOCAL_PASSWORD, LOCAL_USER,
};
use crate::common::cli::berth;

#[test]
fn ldap_tls_ldaps_and_certificate_for_another_host() {
    if !slapd_available("ldap-tls", &[]) {
        return;
    }
    let good = Slapd::start(&Seed::default(), &["127.0.0.1", "localhost"]);
    let wrong = Slapd::start(&Seed::default(), &["ldap.other.test"]);
    let check = |config: &Path| {
        berth(["ldap", "check", "--user", "alice", "--password-stdin"])
            .env("BERTH_CONFIG", config)
            .database(&config.with_file_name("berth.db").display().to_string())
            .stdin(&format!("{}\n", dir_password("alice")))
            .run()
    };
    for (what, url) in [("StartTLS", good.url()), ("ldaps", good.ldaps_url())] {
        let out = check(&write_config(&good, &url, "", ""));
        assert!(out.success(), "ldap check over {what}:\n{out}");
        assert!(
            out.stdout.contains(&format!("dn       {}", dn("alice"))),
            "{out}"
        );
        assert!(out.stdout.contains("(kind directory)"), "{out}");
        assert!(out.stdout.contains("groups   ldap:team-a"), "{out}");
    }
    // Same CA file, but the certificate names another host.
    for url in [wrong.url(), wrong.ldaps_url()] {
        let config = write_config(&wrong, &url, "", "");
        let out = check(&config);
        assert!(
            !out.success(),
            "certificate for another host accepted:\n{out}"
        );
        assert!(
            out.text().to_lowercase().contains("certificate"),
            "the refusal should name the certificate:\n{out}"
        );
        assert!(!out.text().contains(SERVICE_PW), "{out}");
        let berth = start_berth(&config, &example_policies());
        let body = expect(
            get_token(&berth, "alice", &dir_password("alice"), &[], false),
            503,
            &format!("alice over {url} with a certificate for another host"),
            &berth,
        );
        assert!(
            body["error_description"]
                .as_str()
                .unwrap_or_default()
                .contains("the directory is unavailable"),
            "{body}"
        );
        expect(
            get_token(&berth, LOCAL_USER, LOCAL_PASSWORD, &[], false),
            200,
            "local user meanwhile",
            &berth,
        );
    }
    // Without the test CA the system's roots do not know the certificate.
    let config = write_config(&good, &good.ldaps_url(), "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    let no_ca: String = text
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, no_ca).unwrap();
    let out = check(&config);
    assert!(!out.success(), "unknown CA accepted:\n{out}");
}
