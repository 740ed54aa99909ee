//! The OCI distribution-spec conformance suite (built by
//! `scripts/install-go-tools.sh`) against distribution 3 with berth as its
//! realm, configured with exactly what `berth registry-config` prints.
//!
//! The suite runs three times, each in its own directory: through berth as
//! alice, who owns both test repositories; against the same registry binary
//! without auth; and through berth as bob, who has no rights on them. berth
//! must cost no spec: every spec that passes without auth passes through
//! berth. And berth must refuse: bob's run fails every push spec.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::proc::{run, Out};
use crate::compat_clients::printed_block;
use crate::components::{tools_available, ALICE_PASSWORD, BOB_PASSWORD};
use crate::registries::{
    dist3_bin, go_tool, BerthOpts, CBerth, Kind, Reg, RegistrySpec, ServiceSpec, Trust,
};

/// Both repositories are alice's under the shipped policy (`${account}/**`).
const REPO1: &str = "alice/conformance/one";
const REPO2: &str = "alice/conformance/two";
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// One spec's outcome in one run, as its junit.xml gives it.
struct Spec {
    /// The full `a/b/c` name; several specs may share one (a blob-get per
    /// blob of an image), in an order that differs between runs.
    name: String,
    /// `passed`, `failure`, `error` or `skipped`.
    status: String,
    /// The errors the suite gives when it did not pass.
    why: String,
}

struct Run {
    label: &'static str,
    specs: Vec<Spec>,
    out: Out,
}

impl Run {
    fn count(&self, status: &str) -> usize {
        self.specs.iter().filter(|s| s.status == status).count()
    }

    /// How many specs named `name` passed.
    fn passes(&self, name: &str) -> usize {
        self.specs
            .iter()
            .filter(|s| s.name == name && s.status == "passed")
            .count()
    }

    /// Why the first spec named `name` that did not pass failed.
    fn why(&self, name: &str) -> String {
        let spec = self
            .specs
            .iter()
            .find(|s| s.name == name && s.status != "passed");
        spec.map_or_else(
            || "not run".to_string(),
            |s| {
                let first = s.why.lines().next().unwrap_or_default();
                format!(
                    "{}: {}",
                    s.status,
                    first.chars().take(300).collect::<String>()
                )
            },
        )
    }

    fn summary(&self) -> String {
        format!(
            "{}: {} specs, {} passed, {} failed, {} errors, {} skipped",
            self.label,
            self.specs.len(),
            self.count("passed"),
            self.count("failure"),
            self.count("error"),
            self.count("skipped"),
        )
    }
}

fn parse_junit(xml: &str) -> Result<Vec<Spec>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let mut specs = Vec::new();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let name = case.attribute("name").ok_or("a testcase without name")?;
        let status = case
            .attribute("status")
            .ok_or("a testcase without status")?;
        let why = case
            .children()
            .find(|c| c.has_tag_name("system-out"))
            .and_then(|c| c.text())
            .unwrap_or_default();
        specs.push(Spec {
            name: name.to_string(),
            status: status.to_string(),
            why: why.to_string(),
        });
    }
    if specs.is_empty() {
        return Err("no testcase".to_string());
    }
    Ok(specs)
}

/// Runs the suite against `host` in a fresh directory under `dir`.
fn run_suite(
    label: &'static str,
    host: &str,
    creds: Option<(&str, &str)>,
    dir: &Path,
) -> Result<Run, String> {
    let dir = dir.join(label.replace(' ', "-"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(go_tool("conformance"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env("OCI_REGISTRY", host)
        .env("OCI_TLS", "disabled")
        .env("OCI_REPO1", REPO1)
        .env("OCI_REPO2", REPO2)
        .env("OCI_RESULTS_DIR", dir.join("results"))
        // pull, push, content discovery and content management
        .env("OCI_API_PULL", "true")
        .env("OCI_API_PUSH", "true")
        .env("OCI_API_TAGS_LIST", "true")
        .env("OCI_API_REFERRER", "true")
        .env("OCI_API_TAGS_DELETE", "true")
        .env("OCI_API_MANIFESTS_DELETE", "true")
        .env("OCI_API_BLOBS_DELETE", "true")
        .current_dir(&dir);
    if let Some((user, password)) = creds {
        cmd.env("OCI_USERNAME", user).env("OCI_PASSWORD", password);
    }
    let out = run(&mut cmd, None, SUITE_TIMEOUT);
    if out.timed_out {
        return Err(format!("{label}: the suite timed out\n{out}"));
    }
    let junit = dir.join("results/junit.xml");
    let xml = std::fs::read_to_string(&junit)
        .map_err(|e| format!("{label}: {}: {e}\n{out}", junit.display()))?;
    let specs = parse_junit(&xml).map_err(|e| format!("{label}: {}: {e}", junit.display()))?;
    Ok(Run { label, specs, out })
}

/// A spec that writes to the registry: uploads, mounts and manifest puts.
fn is_push_spec(name: &str) -> bool {
    let leaf = name.rsplit('/').next().unwrap_or(name);
    name.split('/').any(|part| part == "push")
        || ["blob-post", "blob-patch", "blob-mount", "manifest-put"]
            .iter()
            .any(|p| leaf.starts_with(p))
}

#[test]
fn conformance_through_berth_matches_no_auth() {
    let suite = go_tool("conformance");
    let registry = dist3_bin();
    if !tools_available("conformance", &[registry.as_str(), suite.as_str()], false) {
        return;
    }
    let started = Instant::now();
    let service = "conformance.test";
    let berth = CBerth::start(BerthOpts {
        services: vec![ServiceSpec::new(service, "thumbprint")],
        public_host: "localhost",
        ..BerthOpts::default()
    });
    let mut spec = RegistrySpec::for_berth(
        Kind::Dist3,
        &berth,
        service,
        Trust::Bundle(berth.bundle_path()),
    );
    spec.auth_block = Some(printed_block(&berth, "distribution3", service));
    let through = Reg::start(spec.clone());
    spec.auth_block = Some(String::new());
    let open = Reg::start(spec);
    let work = tempfile::Builder::new()
        .prefix("berth-conformance.")
        .tempdir()
        .expect("tempdir");

    let host = through.host.replace("127.0.0.1", "localhost");
    let runs = std::thread::scope(|s| {
        let alice = s.spawn(|| {
            run_suite(
                "through berth",
                &host,
                Some(("alice", ALICE_PASSWORD)),
                work.path(),
            )
        });
        let no_auth = s.spawn(|| run_suite("without auth", &open.host, None, work.path()));
        [alice, no_auth].map(|h| h.join().expect("suite thread"))
    });
    // After alice's run, on the same registry and repositories.
    let bob = run_suite("no rights", &host, Some(("bob", BOB_PASSWORD)), work.path());
    let [alice, no_auth] = runs;
    let (alice, no_auth, bob) = match (alice, no_auth, bob) {
        (Ok(a), Ok(n), Ok(b)) => (a, n, b),
        (a, n, b) => {
            let errs: Vec<String> = [a, n, b].into_iter().filter_map(Result::err).collect();
            panic!("the conformance suite did not run:\n{}", errs.join("\n"));
        }
    };
    for r in [&alice, &no_auth, &bob] {
        eprintln!("conformance {}", r.summary());
    }
    eprintln!("conformance: {:?}", started.elapsed());

    // Sanity: the suite ran its specs and the open registry passes most.
    assert!(
        no_auth.count("passed") > no_auth.specs.len() / 2,
        "the run without auth passed too little to compare with:\n{}\n{}",
        no_auth.summary(),
        no_auth.out
    );

    // Specs that share a name are compared by how many of them passed.
    let names: BTreeSet<&str> = no_auth.specs.iter().map(|s| s.name.as_str()).collect();
    let lost: Vec<String> = names
        .into_iter()
        .filter(|name| alice.passes(name) < no_auth.passes(name))
        .map(|name| {
            format!(
                "  {name}: {} passed through berth, {} without auth; {}",
                alice.passes(name),
                no_auth.passes(name),
                alice.why(name)
            )
        })
        .collect();

    // A push spec the suite skips without auth too (an API its configuration
    // leaves out, or the registry lacks) cannot fail; every other must.
    let skipped_anyway = |name: &str| {
        no_auth
            .specs
            .iter()
            .any(|s| s.name == name && s.status == "skipped")
    };
    let push_specs: Vec<&Spec> = bob.specs.iter().filter(|s| is_push_spec(&s.name)).collect();
    let not_failed: Vec<String> = push_specs
        .iter()
        .filter(|s| s.status != "failure" && s.status != "error")
        .filter(|s| s.status == "passed" || !skipped_anyway(&s.name))
        .map(|s| format!("  {} ({})", s.name, s.status))
        .collect();

    let mut problems = Vec::new();
    if push_specs.is_empty() || !not_failed.is_empty() {
        problems.push(format!(
            "as bob, with no rights on {REPO1} and {REPO2}, every push spec must fail; \
             of {} push specs these did not:\n{}",
            push_specs.len(),
            not_failed.join("\n")
        ));
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} specs pass without auth but not through berth:\n{}",
            lost.len(),
            lost.join("\n")
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}\n{}\n{}\n{}\n{}",
        problems.join("\n"),
        alice.summary(),
        no_auth.summary(),
        bob.summary(),
        through.log_tail(20),
        berth.log_tail(20)
    );
}
