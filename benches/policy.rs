//! Policy evaluation cost: one scope against a 1,000-rule policy.
//!
//! `cargo bench --bench policy` prints the mean time per evaluated scope for
//! 1,000-rule policies the index narrows down (a literal path component in the
//! first positions) and, for 1,000 rules it cannot (a leading `**`), which one regex-set pass filters.

use std::hint::black_box;
use std::time::Instant;

use berth::policy::load::parse_file;
use berth::policy::{evaluate, Identity, Kind, Policy, Request};
use berth::scope::Scope;

fn build(rules: usize, shape: fn(usize) -> String) -> Policy {
    let mut text = String::from(include_str!("../policies/default.toml"));
    for i in 0..rules {
        let name = shape(i);
        text.push_str(&format!(
            "[[rule]]\nid = \"team-{i}\"\ngroup = \"team-{i}\"\nname = \"{name}\"\nallow = [\"pull\", \"push\"]\n[[rule]]\nid = \"team-{i}-no-delete\"\nname = \"{name}\"\ndeny = [\"delete\"]\n"
        ));
    }
    match parse_file("bench.toml", &text) {
        Ok(l) => l.policy,
        Err(e) => {
            eprintln!("bench policy invalid: {e}");
            std::process::exit(1)
        }
    }
}

fn measure(label: &str, policy: &Policy, scope: &Scope, identity: &Identity) {
    let req = Request {
        identity,
        service: "registry",
        ip: None,
    };
    // Warm up, then pick an iteration count that runs for about a second.
    let mut n = 1_000u32;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            black_box(evaluate(black_box(policy), &req, black_box(scope)));
        }
        let elapsed = start.elapsed();
        if elapsed.as_millis() >= 1_000 || n >= 10_000_000 {
            let per = elapsed.as_secs_f64() * 1e6 / f64::from(n);
            let granted = evaluate(policy, &req, scope).granted;
            println!(
                "{label:<44} {:>5} rules  {per:>8.2} µs/scope  ({n} iterations, granted {granted:?})",
                policy.rules().len()
            );
            return;
        }
        n = n.saturating_mul(4);
    }
}

fn main() {
    let identity = Identity {
        subject: "alice".into(),
        kind: Kind::User,
        groups: vec!["team-5".into(), "team-500".into()],
        via: "bench",
    };
    let push: Scope = match "repository:team-500/app:pull,push,delete".parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    let nested: Scope = match "repository:org/team-500/app:pull".parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    measure(
        "team-N/** (indexed by first component)",
        &build(500, |i| format!("team-{i}/**")),
        &push,
        &identity,
    );
    measure(
        "*/team-N/** (indexed by second component)",
        &build(500, |i| format!("*/team-{i}/**")),
        &nested,
        &identity,
    );
    measure(
        "**/team-N/* (not indexable: one regex-set pass)",
        &build(500, |i| format!("**/team-{i}/*")),
        &nested,
        &identity,
    );
    measure(
        "default policy only",
        &build(0, |i| format!("team-{i}/**")),
        &push,
        &identity,
    );
}
