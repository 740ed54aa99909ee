//! `berth doctor` against real registries, each misconfigured one way: doctor
//! must name the misconfiguration (its `FAIL [code]`) and exit non-zero, and pass
//! a registry that is set up right.

use std::path::Path;

use crate::common::proc::Out;
use crate::components::{tools_available, ALICE_PASSWORD, REGISTRY_BIN};
use crate::registries::{
    dist3_bin, BerthOpts, CBerth, Kind, Reg, RegistrySpec, ServiceSpec, Trust,
};

const SERVICE: &str = "doctor.test";
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn doctor(berth: &CBerth, reg: &Reg) -> Out {
    berth.cli(
        &[
            "doctor",
            "--registry",
            &reg.url(),
            "--username",
            "alice",
            "--password-stdin",
        ],
        Some(&format!("{ALICE_PASSWORD}\n")),
    )
}

fn berth_with(mode: &'static str, alg: &'static str) -> CBerth {
    CBerth::start(BerthOpts {
        alg,
        services: vec![ServiceSpec::new(SERVICE, mode)],
        ..BerthOpts::default()
    })
}

/// Runs doctor and checks it names `code` as the problem (or passes for `None`).
#[track_caller]
fn expect(berth: &CBerth, reg: &Reg, code: Option<&str>) {
    let out = doctor(berth, reg);
    eprintln!("{}", out.stdout.trim_end());
    match code {
        None => assert!(
            out.success() && !out.stdout.contains("FAIL"),
            "doctor should pass a working registry:\n{out}\n{}",
            reg.log_tail(20)
        ),
        Some(code) => {
            let fails: Vec<&str> = out
                .stdout
                .lines()
                .filter(|l| l.starts_with("FAIL"))
                .collect();
            assert!(
                !out.success() && fails.len() == 1 && fails[0].contains(&format!("[{code}]")),
                "doctor should name exactly `{code}`:\n{out}\n{}\n{}",
                reg.log_tail(20),
                berth.log_tail(10)
            );
        }
    }
}

fn spec(kind: Kind, berth: &CBerth) -> RegistrySpec {
    RegistrySpec::for_berth(kind, berth, SERVICE, Trust::Bundle(berth.bundle_path()))
}

fn tools(test: &str) -> bool {
    let d3 = dist3_bin();
    tools_available(test, &[REGISTRY_BIN, d3.as_str()], false)
}

#[test]
fn doctor_passes_a_working_registry() {
    if !tools("doctor ok") {
        return;
    }
    let berth = berth_with("thumbprint", "es256");
    expect(&berth, &Reg::start(spec(Kind::Dist3, &berth)), None);
    let berth = berth_with("libtrust", "es256");
    expect(&berth, &Reg::start(spec(Kind::Dist2, &berth)), None);
}

#[test]
fn doctor_names_issuer_mismatch() {
    if !tools("doctor issuer") {
        return;
    }
    let berth = berth_with("thumbprint", "es256");
    let mut s = spec(Kind::Dist3, &berth);
    s.issuer = "someone-else".into();
    expect(&berth, &Reg::start(s), Some("issuer-mismatch"));
}

#[test]
fn doctor_names_audience_mismatch() {
    if !tools("doctor audience") {
        return;
    }
    let berth = berth_with("thumbprint", "es256");
    let mut s = spec(Kind::Dist3, &berth);
    s.service = "other.registry.test".into();
    expect(&berth, &Reg::start(s), Some("audience-mismatch"));
}

#[test]
fn doctor_names_untrusted_key() {
    if !tools("doctor key") {
        return;
    }
    let berth = berth_with("thumbprint", "es256");
    // The registry trusts another key set's bundle.
    let other = tempfile::tempdir().unwrap();
    berth
        .command(["key", "generate"])
        .env("BERTH_KEYS_DIR", other.path())
        .ok();
    let mut s = spec(Kind::Dist3, &berth);
    s.trust = Trust::Bundle(other.path().join("bundle.pem"));
    expect(&berth, &Reg::start(s), Some("key-not-trusted"));
}

#[test]
fn doctor_names_kid_form() {
    if !tools("doctor kid form") {
        return;
    }
    // distribution 3 with a bundle knows thumbprints, not libtrust IDs.
    let berth = berth_with("libtrust", "es256");
    expect(
        &berth,
        &Reg::start(spec(Kind::Dist3, &berth)),
        Some("kid-form"),
    );
    // distribution 2.8 knows libtrust IDs, not thumbprints.
    let berth = berth_with("thumbprint", "es256");
    expect(
        &berth,
        &Reg::start(spec(Kind::Dist2, &berth)),
        Some("kid-form"),
    );
}

#[test]
fn doctor_names_algorithm_not_allowed() {
    if !tools("doctor algorithm") {
        return;
    }
    let berth = berth_with("thumbprint", "es256");
    let mut s = spec(Kind::Dist3, &berth);
    s.signing_algorithms = Some(vec!["RS256".into(), "PS256".into()]);
    expect(&berth, &Reg::start(s), Some("algorithm-not-allowed"));
    // An RSA key: doctor finds the padding the registry takes.
    let berth = berth_with("thumbprint", "ps256");
    let mut s = spec(Kind::Dist3, &berth);
    s.signing_algorithms = Some(vec!["RS256".into()]);
    expect(&berth, &Reg::start(s), Some("algorithm-not-allowed"));
}

#[test]
fn doctor_names_clock_skew() {
    if !tools("doctor clock") {
        return;
    }
    if !Path::new(FAKETIME).exists() {
        assert!(
            std::env::var("BERTH_E2E").as_deref() != Ok("require"),
            "BERTH_E2E=require but {FAKETIME} is missing (apt-get install faketime)"
        );
        eprintln!("SKIPPED doctor clock: {FAKETIME} missing");
        return;
    }
    // berth's clock runs 10 minutes behind: its tokens have expired on arrival.
    let env = [
        ("LD_PRELOAD", FAKETIME),
        ("FAKETIME", "-600"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let berth = CBerth::start(BerthOpts {
        services: vec![ServiceSpec::new(SERVICE, "thumbprint")],
        serve_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BerthOpts::default()
    });
    expect(
        &berth,
        &Reg::start(spec(Kind::Dist3, &berth)),
        Some("clock-skew"),
    );
}

#[test]
fn doctor_names_wrong_realm() {
    if !tools("doctor realm") {
        return;
    }
    let berth = berth_with("thumbprint", "es256");
    let mut s = spec(Kind::Dist3, &berth);
    s.realm = format!("{}/auth/token", berth.url);
    expect(&berth, &Reg::start(s), Some("realm-mismatch"));
}

#[test]
fn doctor_names_audience_format() {
    if !tools("doctor aud format") {
        return;
    }
    // distribution 2.8 takes `aud` only as a string.
    let mut service = ServiceSpec::new(SERVICE, "libtrust");
    service.audience_list = true;
    let berth = CBerth::start(BerthOpts {
        services: vec![service],
        ..BerthOpts::default()
    });
    expect(
        &berth,
        &Reg::start(spec(Kind::Dist2, &berth)),
        Some("audience-format"),
    );
}
