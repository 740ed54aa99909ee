//! The compatibility matrix: which registry verifies berth's tokens with which
//! key algorithm and key header form, and which clients work through them.
//!
//! Every cell runs real programs: berth, a registry (distribution 2.8 from
//! Debian, distribution 3.x from `scripts/install-go-tools.sh`) and a client.
//! Each cell's outcome is appended to the results file (see [`results_path`]);
//! `scripts/compat-table.py` renders the table in `docs/compatibility.md` from
//! it. A cell passes when its outcome is the expected one, so a combination
//! that stops working fails the test, and one that starts working too (then
//! the expectation and the page are updated together).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use crate::common::proc::Out;
use crate::components::{tools_available, ADMIN_PASSWORD, ALICE_PASSWORD, REGISTRY_BIN};
use crate::image::{config_digest_in_layout, write_oci_image};
use crate::registries::{
    dist3_bin, BerthOpts, CBerth, Kind, Reg, RegistrySpec, ServiceSpec, Trust,
};

/// Where cells write their outcomes (one JSON object per line).
pub fn results_path() -> PathBuf {
    match std::env::var_os("BERTH_COMPAT_RESULTS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat-results.jsonl"),
    }
}

static RESULTS: Mutex<()> = Mutex::new(());

/// Appends one outcome to the results file.
pub fn record(entry: Value) {
    let _guard = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    let path = results_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "{entry}").expect("write results");
}

/// What one cell did: each operation's outcome, and why the first failed one failed.
#[derive(Default)]
pub struct Ops {
    pub done: Vec<(&'static str, bool)>,
    pub why: Option<String>,
}

impl Ops {
    pub fn check(&mut self, op: &'static str, ok: bool, detail: impl FnOnce() -> String) -> bool {
        self.done.push((op, ok));
        if !ok && self.why.is_none() {
            self.why = Some(format!("{op}: {}", detail()));
        }
        ok
    }

    pub fn works(&self) -> bool {
        !self.done.is_empty() && self.done.iter().all(|(_, ok)| *ok)
    }

    pub fn json(&self) -> Value {
        Value::Object(
            self.done
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::Bool(*v)))
                .collect(),
        )
    }
}

const DENIAL: &[&str] = &[
    "unauthorized",
    "denied",
    "insufficient_scope",
    "authentication required",
    "invalid username/password",
    "http 401",
    "http 403",
    "status code 401",
    "status code 403",
];

/// The client failed because it was refused (not because it broke).
pub fn refused(out: &Out) -> bool {
    let text = out.text().to_lowercase();
    !out.success() && !out.timed_out && DENIAL.iter().any(|m| text.contains(m))
}

fn short(out: &Out) -> String {
    let text = out.text();
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    let line: String = line.chars().take(200).collect();
    format!(
        "`{}` -> {line}",
        out.cmdline.split(' ').take(3).collect::<Vec<_>>().join(" ")
    )
}

/// login, push, pull, refused push (skopeo), catalog (admin) and delete (alice)
/// against `reg`, whose service is `service` on `berth`.
pub fn skopeo_cell(berth: &CBerth, reg: &Reg, service: &str, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let c = ClientEnv::new(&work.join("skopeo"));
    let img = write_oci_image(&work.join("image"), "v1", &format!("compat {service}"));
    let host = reg.host.as_str();
    let af = c.authfile();
    let out = c.skopeo(
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            af,
            "-u",
            "alice",
            "--password-stdin",
            host,
        ],
        Some(&format!("{ALICE_PASSWORD}\n")),
        LOGIN_TIMEOUT,
    );
    if !ops.check("login", out.success(), || short(&out)) {
        return ops;
    }
    let own = format!("docker://{host}/alice/app:v1");
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            af,
            &img.oci_ref(),
            &own,
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    if !ops.check("push", out.success(), || short(&out)) {
        return ops;
    }
    let pulled = work.join("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            af,
            &own,
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    let same = out.success() && config_digest_in_layout(&pulled, "pulled") == img.config_digest;
    ops.check("pull", same, || short(&out));
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            af,
            &img.oci_ref(),
            &format!("docker://{host}/bob/app:v1"),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    ops.check("refused", refused(&out), || short(&out));

    let admin = berth.token(
        service,
        Some(("admin", ADMIN_PASSWORD)),
        &["registry:catalog:*"],
    );
    let (status, body) = reg.request("GET", "/v2/_catalog", &admin);
    ops.check(
        "catalog",
        status == 200 && body.contains("alice/app"),
        || format!("{status} {body}"),
    );

    let alice = berth.token(
        service,
        Some(("alice", ALICE_PASSWORD)),
        &["repository:alice/app:pull,delete"],
    );
    let (status, digest) = reg.request("HEAD", "/v2/alice/app/manifests/v1", &alice);
    let ok = status == 200 && digest.starts_with("sha256:") && {
        let (status, _) = reg.request(
            "DELETE",
            &format!("/v2/alice/app/manifests/{digest}"),
            &alice,
        );
        status == 202
    };
    ops.check("delete", ok, || format!("HEAD {status} {digest}"));
    ops
}

/// Whether `kind` with `trust` should accept `alg` tokens whose key is named by `mode`.
fn expected(kind: Kind, trust: &Trust, alg: &str, mode: &str) -> bool {
    match kind {
        // libtrust: RSA and the EC curve's own algorithm; kid is a libtrust ID.
        Kind::Dist2 => matches!(alg, "ES256" | "ES384" | "RS256") && mode != "thumbprint",
        Kind::Dist3 => match trust {
            // Bundle keys are looked up by thumbprint only (and berth keeps
            // Ed25519 certificates out of the bundle); x5c chains to the CA.
            Trust::Bundle(_) => mode == "x5c" || (mode == "thumbprint" && alg != "EdDSA"),
            // A JWKS file gives no roots for x5c; berth's lists both kid forms.
            Trust::Jwks(_) => mode != "x5c",
        },
    }
}

fn compat_tools(test: &str, extra: &[&str]) -> bool {
    let d3 = dist3_bin();
    let mut tools = vec![REGISTRY_BIN, d3.as_str(), "skopeo"];
    tools.extend_from_slice(extra);
    tools_available(test, &tools, false)
}

/// A unit of work for [`parallel`].
pub type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

/// Runs `jobs` on up to `width` threads at a time.
pub fn parallel<T: Send>(width: usize, jobs: Vec<Job<'_, T>>) -> Vec<T> {
    let mut out = Vec::new();
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let batch: Vec<_> = jobs.by_ref().take(width).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = batch.into_iter().map(|j| s.spawn(j)).collect();
            for h in handles {
                out.push(h.join().expect("cell thread panicked"));
            }
        });
    }
    out
}

struct Cell {
    kind: Kind,
    trust: &'static str,
    mode: &'static str,
    aud_list: bool,
}

/// One berth with key `alg` and a service per key mode; a registry per
/// (implementation, trust, mode); skopeo through each.
fn key_matrix(alg_flag: &'static str, alg: &'static str, with_aud_list: bool) {
    if !compat_tools(&format!("compat keys {alg}"), &[]) {
        return;
    }
    let started = Instant::now();
    let mut cells = Vec::new();
    for (kind, trusts) in [
        (Kind::Dist2, &["rootcertbundle"][..]),
        (Kind::Dist3, &["rootcertbundle", "jwks"][..]),
    ] {
        for trust in trusts {
            for mode in ["libtrust", "thumbprint", "x5c"] {
                cells.push(Cell {
                    kind,
                    trust,
                    mode,
                    aud_list: false,
                });
            }
        }
    }
    if with_aud_list {
        for (kind, mode) in [(Kind::Dist2, "libtrust"), (Kind::Dist3, "thumbprint")] {
            cells.push(Cell {
                kind,
                trust: "rootcertbundle",
                mode,
                aud_list: true,
            });
        }
    }
    let service_name = |mode: &str, aud_list: bool| {
        format!(
            "{mode}{}.compat.test",
            if aud_list { "-audlist" } else { "" }
        )
    };
    let mut services: Vec<ServiceSpec> = Vec::new();
    for c in &cells {
        let name = service_name(c.mode, c.aud_list);
        if !services.iter().any(|s| s.name == name) {
            let mut s = ServiceSpec::new(&name, c.mode);
            s.audience_list = c.aud_list;
            services.push(s);
        }
    }
    let berth = CBerth::start(BerthOpts {
        alg: alg_flag,
        services,
        ..BerthOpts::default()
    });
    let berth = &berth;
    let jobs: Vec<Job<'_, (String, bool, bool)>> = cells
        .into_iter()
        .map(|c| {
            Box::new(move || {
                let service = service_name(c.mode, c.aud_list);
                let trust = match c.trust {
                    "jwks" => Trust::Jwks(berth.jwks_path()),
                    _ => Trust::Bundle(berth.bundle_path()),
                };
                let expect =
                    expected(c.kind, &trust, alg, c.mode) && !(c.aud_list && c.kind == Kind::Dist2);
                let reg = Reg::start(RegistrySpec::for_berth(c.kind, berth, &service, trust));
                let work = tempfile::Builder::new()
                    .prefix("berth-compat-cell.")
                    .tempdir()
                    .expect("tempdir");
                let ops = skopeo_cell(berth, &reg, &service, work.path());
                let mode_label = if c.aud_list {
                    format!("{} + aud list", c.mode)
                } else {
                    c.mode.to_string()
                };
                let label = format!("{} ({}) {alg} {mode_label}", c.kind.label(), c.trust);
                let works = ops.works();
                record(json!({
                    "table": "keys",
                    "registry": c.kind.label(),
                    "trust": c.trust,
                    "alg": alg,
                    "mode": mode_label,
                    "client": "skopeo",
                    "ops": ops.json(),
                    "works": works,
                    "expected": expect,
                    "why": ops.why,
                }));
                let detail = if works == expect {
                    String::new()
                } else {
                    format!(
                        "{}\n{}",
                        ops.why.clone().unwrap_or_default(),
                        reg.log_tail(15)
                    )
                };
                eprintln!(
                    "cell {label}: {} (expected {}) {}",
                    if works { "works" } else { "fails" },
                    if expect { "works" } else { "fails" },
                    ops.why.as_deref().unwrap_or("")
                );
                (format!("{label}{detail}"), works, expect)
            }) as Job<'_, (String, bool, bool)>
        })
        .collect();
    let results = parallel(3, jobs);
    eprintln!(
        "compat keys {alg}: {} cells in {:?}",
        results.len(),
        started.elapsed()
    );
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, w, e)| w != e)
        .map(|(l, w, _)| {
            format!(
                "{l}: {}",
                if *w {
                    "works but expected to fail"
                } else {
                    "FAILS"
                }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}\n{}",
        wrong.join("\n---\n"),
        berth.log_tail(20)
    );
}

#[test]
fn compat_keys_es256() {
    key_matrix("es256", "ES256", true);
}

#[test]
fn compat_keys_rs256() {
    key_matrix("rs256", "RS256", false);
}

#[test]
fn compat_keys_es384() {
    key_matrix("es384", "ES384", false);
}

#[test]
fn compat_keys_ps256() {
    key_matrix("ps256", "PS256", false);
}

#[test]
fn compat_keys_eddsa() {
    key_matrix("eddsa", "EdDSA", false);
}

/// The `alg` and first `x5c` certificate of a token's header.
fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap_or_default();
    data_encoding::BASE64URL_NOPAD
        .decode(h.as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Key rotation: with x5c the registries keep their configuration and keep
/// running; with kid modes they are restarted (same configuration) while the new
/// key is published but not yet signing. Tokens of the old key keep working.
#[test]
fn compat_key_rotation() {
    if !compat_tools("compat rotation", &[]) {
        return;
    }
    let started = Instant::now();
    let x5c = "x5c.rotate.test";
    let kid = "kid.rotate.test";
    let berth = CBerth::start(BerthOpts {
        services: vec![
            ServiceSpec::new(x5c, "x5c"),
            ServiceSpec::new(kid, "thumbprint"),
        ],
        ..BerthOpts::default()
    });
    // x5c: distribution 2.8 and 3.x trust only what the bundle held at start (the CA).
    let regs_x5c = [
        Reg::start(RegistrySpec::for_berth(
            Kind::Dist2,
            &berth,
            x5c,
            Trust::Bundle(berth.bundle_path()),
        )),
        Reg::start(RegistrySpec::for_berth(
            Kind::Dist3,
            &berth,
            x5c,
            Trust::Bundle(berth.bundle_path()),
        )),
    ];
    let mut reg_kid = Reg::start(RegistrySpec::for_berth(
        Kind::Dist3,
        &berth,
        kid,
        Trust::Jwks(berth.jwks_path()),
    ));
    let configs: Vec<String> = regs_x5c
        .iter()
        .chain([&reg_kid])
        .map(|r| std::fs::read_to_string(&r.config_path).unwrap())
        .collect();

    let work = tempfile::tempdir().unwrap();
    let mut before = Vec::new();
    for (i, (reg, svc)) in regs_x5c
        .iter()
        .map(|r| (r, x5c))
        .chain([(&reg_kid, kid)])
        .enumerate()
    {
        let ops = skopeo_cell(&berth, reg, svc, &work.path().join(format!("before{i}")));
        assert!(
            ops.works(),
            "before rotation: {:?}\n{}",
            ops.why,
            reg.log_tail(20)
        );
        // A token of the old key, to present after the switch.
        before.push(berth.token(
            svc,
            Some(("alice", ALICE_PASSWORD)),
            &["repository:alice/app:pull"],
        ));
    }
    let old_cert = header_of(&before[0])["x5c"][0].clone();

    let delay = 12;
    let out = berth.cli_ok(
        &["key", "rotate", "--publish-delay", &format!("{delay}s")],
        None,
    );
    let rotated_at = Instant::now();
    eprintln!("{}", out.stdout.trim());
    // Still signing with the old key while the new one is only published.
    let t = berth.token(x5c, None, &[]);
    assert_eq!(
        header_of(&t)["x5c"][0],
        old_cert,
        "new key signs before its time"
    );
    // The kid-mode registry reads jwks.json at start: restart it now, same config.
    reg_kid.restart();
    let remaining = Duration::from_secs(delay + 3).saturating_sub(rotated_at.elapsed());
    std::thread::sleep(remaining);
    let t = berth.token(x5c, None, &[]);
    assert_ne!(
        header_of(&t)["x5c"][0],
        old_cert,
        "berth still signs with the old key after the publish delay\n{}",
        berth.log_tail(20)
    );

    let mut all = true;
    for (i, (reg, svc)) in regs_x5c
        .iter()
        .map(|r| (r, x5c))
        .chain([(&reg_kid, kid)])
        .enumerate()
    {
        let mut ops = skopeo_cell(&berth, reg, svc, &work.path().join(format!("after{i}")));
        // Old tokens still verify (the old key stays published).
        let (status, body) = reg.request("GET", "/v2/alice/app/tags/list", &before[i]);
        ops.check("old token", status == 200 || status == 404, || {
            format!("{status} {body}")
        });
        let unchanged = std::fs::read_to_string(&reg.config_path).unwrap() == configs[i];
        ops.check("config unchanged", unchanged, || {
            "config.yml changed".into()
        });
        let (mode, restart) = if svc == x5c {
            ("x5c", "no restart")
        } else {
            ("thumbprint", "restart, same config")
        };
        let trust = if svc == x5c { "rootcertbundle" } else { "jwks" };
        record(json!({
            "table": "rotation",
            "registry": reg.spec.kind.label(),
            "trust": trust,
            "alg": "ES256",
            "mode": mode,
            "client": "skopeo",
            "restart": restart,
            "ops": ops.json(),
            "works": ops.works(),
            "expected": true,
            "why": ops.why,
        }));
        if !ops.works() {
            all = false;
            eprintln!(
                "rotation on {} ({mode}): {:?}\n{}",
                reg.spec.kind.label(),
                ops.why,
                reg.log_tail(20)
            );
        }
    }
    // The old key signed tokens that are still valid: prune must keep it.
    let out = berth.cli_ok(&["key", "prune", "--dry-run"], None);
    assert!(
        out.stdout.contains("no key to remove"),
        "key prune would remove a key right after rotation:\n{out}"
    );
    eprintln!("compat rotation in {:?}", started.elapsed());
    assert!(
        all,
        "rotation failed somewhere (see above)\n{}",
        berth.log_tail(30)
    );
}
