//! The client half of the compatibility matrix: docker, podman, skopeo, crane and
//! oras log in, push, pull, and are refused a push to someone else's repository,
//! through one registry per flavor configured with exactly what
//! `berth registry-config --flavor …` printed. The stack and the recording of
//! cells are shared with the other clients (`compat_clients_more.rs`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use crate::common::proc::{run, Out};
use crate::compat::{parallel, record, refused, Job, Ops};
use crate::components::{tools_available, Dockerd, ALICE_PASSWORD, DOCKER_BIN};
use crate::image::{config_digest_in_layout, write_oci_image};
use crate::registries::{
    go_tool, lowercase_tempdir, BerthOpts, CBerth, Kind, Reg, RegistrySpec, ServiceSpec, Trust,
};

const DOCKER_TIMEOUT: Duration = Duration::from_secs(180);

/// The registry as clients address it: by host name, like berth's realm. oras
/// refuses a realm on a loopback or private address unless its host name is the
/// registry's; crane refuses a realm that is such an IP literal.
pub fn client_host(reg: &Reg) -> String {
    reg.host.replace("127.0.0.1", "localhost")
}

pub fn short(out: &Out) -> String {
    let text = out.text();
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("");
    format!(
        "`{}` -> {}",
        out.cmdline.split(' ').take(3).collect::<Vec<_>>().join(" "),
        line.chars().take(200).collect::<String>()
    )
}

fn skopeo(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let c = ClientEnv::new(&work.join("env"));
    let img = write_oci_image(&work.join("image"), "v1", "compat skopeo client");
    let af = c.authfile();
    let host = &client_host(reg);
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
    let own = format!("docker://{host}/alice/skopeo:v1");
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
    ops.check("push", out.success(), || short(&out));
    let pulled = work.join("pulled");
    let out = c.skopeo(
        &[
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            af,
            &own,
            &format!("oci:{}:p", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    let ok = out.success() && config_digest_in_layout(&pulled, "p") == img.config_digest;
    ops.check("pull", ok, || short(&out));
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            af,
            &img.oci_ref(),
            &format!("docker://{host}/bob/skopeo:v1"),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    ops.check("refused", refused(&out), || short(&out));
    ops
}

fn podman(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let c = ClientEnv::new(&work.join("env"));
    let img = write_oci_image(&work.join("image"), "v1", "compat podman client");
    let af = c.authfile();
    let host = &client_host(reg);
    let out = c.podman(
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
    let out = c.podman(&["pull", &img.oci_ref()], None, TRANSFER_TIMEOUT);
    let id = out
        .stdout
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if !out.success() || id.is_empty() {
        ops.check("push", false, || {
            format!("loading the image: {}", short(&out))
        });
        return ops;
    }
    let own = format!("{host}/alice/podman:v1");
    let out = c.podman(
        &[
            "push",
            "--tls-verify=false",
            "--authfile",
            af,
            &id,
            &format!("docker://{own}"),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    ops.check("push", out.success(), || short(&out));
    let _ = c.podman(&["rmi", "--all", "--force"], None, TRANSFER_TIMEOUT);
    let out = c.podman(
        &["pull", "--tls-verify=false", "--authfile", af, &own],
        None,
        TRANSFER_TIMEOUT,
    );
    let pulled = out.stdout.lines().last().unwrap_or_default().trim() == id;
    ops.check("pull", out.success() && pulled, || short(&out));
    let out = c.podman(
        &[
            "push",
            "--tls-verify=false",
            "--authfile",
            af,
            &id,
            &format!("docker://{host}/bob/podman:v1"),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    ops.check("refused", refused(&out), || short(&out));
    ops
}

/// A command with HOME and DOCKER_CONFIG inside `work`.
pub fn isolated(program: &str, work: &Path) -> Command {
    let home = work.join("home");
    std::fs::create_dir_all(home.join(".docker")).expect("mkdir home");
    let mut cmd = Command::new(program);
    cmd.env("HOME", &home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env_remove("REGISTRY_AUTH_FILE")
        .current_dir(work);
    cmd
}

fn crane(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let bin = go_tool("crane");
    let img = write_oci_image(&work.join("image"), "v1", "compat crane client");
    let host = &client_host(reg);
    let crane = |args: &[&str], stdin: Option<&str>| {
        run(isolated(&bin, work).args(args), stdin, TRANSFER_TIMEOUT)
    };
    // `crane auth login` stores credentials; the registry sees them on push.
    let out = crane(
        &["auth", "login", host, "-u", "alice", "--password-stdin"],
        Some(ALICE_PASSWORD),
    );
    if !ops.check("login", out.success(), || short(&out)) {
        return ops;
    }
    let own = format!("{host}/alice/crane:v1");
    let layout = img.dir.display().to_string();
    let out = crane(&["push", "--insecure", &layout, &own], None);
    ops.check("push", out.success(), || short(&out));
    let out = crane(&["config", "--insecure", &own], None);
    let digest = crate::image::sha256(out.stdout.as_bytes());
    ops.check("pull", out.success() && digest == img.config_digest, || {
        short(&out)
    });
    let out = crane(
        &[
            "push",
            "--insecure",
            &layout,
            &format!("{host}/bob/crane:v1"),
        ],
        None,
    );
    ops.check("refused", refused(&out), || short(&out));
    ops
}

fn oras(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let bin = go_tool("oras");
    let host = &client_host(reg);
    let content = "compat oras client\n";
    std::fs::write(work.join("hello.txt"), content).expect("write artifact");
    let oras = |args: &[&str], stdin: Option<&str>| {
        run(isolated(&bin, work).args(args), stdin, TRANSFER_TIMEOUT)
    };
    let out = oras(
        &[
            "login",
            "--plain-http",
            "-u",
            "alice",
            "--password-stdin",
            host,
        ],
        Some(ALICE_PASSWORD),
    );
    if !ops.check("login", out.success(), || short(&out)) {
        return ops;
    }
    let own = format!("{host}/alice/oras:v1");
    let out = oras(&["push", "--plain-http", &own, "hello.txt"], None);
    ops.check("push", out.success(), || short(&out));
    let out = oras(&["pull", "--plain-http", &own, "-o", "pulled"], None);
    let got = std::fs::read_to_string(work.join("pulled/hello.txt")).unwrap_or_default();
    ops.check("pull", out.success() && got == content, || short(&out));
    let out = oras(
        &[
            "push",
            "--plain-http",
            &format!("{host}/bob/oras:v1"),
            "hello.txt",
        ],
        None,
    );
    ops.check("refused", refused(&out), || short(&out));
    ops
}

fn docker(reg: &Reg, d: &Dockerd, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let cfg = work.join("docker-config");
    std::fs::create_dir_all(&cfg).expect("mkdir docker config");
    let host = &client_host(reg);
    let img = write_oci_image(&work.join("image"), "v1", "compat docker client");
    let archive = work.join("image.tar");
    let c = ClientEnv::new(&work.join("skopeo"));
    let local = format!("compat/{}:v1", host.replace([':', '.'], "-"));
    let out = c.skopeo(
        &[
            "copy",
            &img.oci_ref(),
            &format!("docker-archive:{}:{local}", archive.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    let loaded = out.success()
        && d.docker(
            &cfg,
            &["load", "-i", &archive.display().to_string()],
            None,
            DOCKER_TIMEOUT,
        )
        .success();
    let out = d.docker(
        &cfg,
        &["login", "-u", "alice", "--password-stdin", host],
        Some(&format!("{ALICE_PASSWORD}\n")),
        LOGIN_TIMEOUT,
    );
    if !ops.check("login", loaded && out.success(), || short(&out)) {
        return ops;
    }
    let own = format!("{host}/alice/docker:v1");
    let other = format!("{host}/bob/docker:v1");
    for t in [&own, &other] {
        d.docker(&cfg, &["tag", &local, t], None, DOCKER_TIMEOUT);
    }
    let out = d.docker(&cfg, &["push", &own], None, DOCKER_TIMEOUT);
    ops.check("push", out.success(), || short(&out));
    d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT);
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    ops.check("pull", out.success(), || short(&out));
    let out = d.docker(&cfg, &["push", &other], None, DOCKER_TIMEOUT);
    ops.check("refused", refused(&out), || short(&out));
    ops
}

/// The registry block `berth registry-config` prints, used verbatim.
pub fn printed_block(berth: &CBerth, flavor: &str, service: &str) -> String {
    let out = berth.cli_ok(
        &["registry-config", "--flavor", flavor, "--service", service],
        None,
    );
    assert!(
        !out.stdout.contains("# berth:"),
        "registry-config warns for a service set up for {flavor}:\n{}",
        out.stdout
    );
    out.stdout
}

/// berth and one registry of `kind` configured with exactly what
/// `berth registry-config --flavor …` prints: what every client cell goes through.
pub struct ClientsStack {
    pub kind: Kind,
    pub flavor: &'static str,
    pub mode: &'static str,
    pub berth: CBerth,
    pub reg: Reg,
}

impl ClientsStack {
    /// `extra_policy` adds rules to the shipped policy (see [`BerthOpts`]).
    pub fn start(kind: Kind, extra_policy: Option<String>) -> ClientsStack {
        let (flavor, mode, service) = match kind {
            Kind::Dist2 => ("distribution2", "libtrust", "d2.clients.test"),
            Kind::Dist3 => ("distribution3", "thumbprint", "d3.clients.test"),
        };
        let berth = CBerth::start(BerthOpts {
            services: vec![ServiceSpec::new(service, mode)],
            public_host: "localhost",
            extra_policy,
            ..BerthOpts::default()
        });
        let mut spec =
            RegistrySpec::for_berth(kind, &berth, service, Trust::Bundle(berth.bundle_path()));
        spec.auth_block = Some(printed_block(&berth, flavor, service));
        let reg = Reg::start(spec);
        ClientsStack {
            kind,
            flavor,
            mode,
            berth,
            reg,
        }
    }

    /// Records each client's cell in the matrix and fails the test when one
    /// does not work, naming the clients and why.
    pub fn report(&self, test: &str, started: Instant, results: &[(&'static str, Ops)]) {
        let kind = self.kind;
        let mut failed = Vec::new();
        for (client, ops) in results {
            eprintln!(
                "client {client} on {}: {} {}",
                kind.label(),
                if ops.works() { "works" } else { "FAILS" },
                ops.why.as_deref().unwrap_or("")
            );
            record(json!({
                "table": "clients",
                "registry": kind.label(),
                "trust": "registry-config --flavor ".to_string() + self.flavor,
                "alg": "ES256",
                "mode": self.mode,
                "client": client,
                "ops": ops.json(),
                "works": ops.works(),
                "expected": true,
                "why": ops.why,
            }));
            if !ops.works() {
                failed.push(format!("{client}: {}", ops.why.clone().unwrap_or_default()));
            }
        }
        eprintln!("{test}: {:?}", started.elapsed());
        assert!(
            failed.is_empty(),
            "clients failing on {}:\n{}\n{}\n{}",
            kind.label(),
            failed.join("\n"),
            self.reg.log_tail(30),
            self.berth.log_tail(20)
        );
    }
}

fn client_matrix(kind: Kind) {
    let crane_bin = go_tool("crane");
    let oras_bin = go_tool("oras");
    let registry = kind.bin();
    let test = format!("compat clients {}", kind.label());
    let tools = [
        registry.as_str(),
        "skopeo",
        "podman",
        "dockerd",
        DOCKER_BIN,
        crane_bin.as_str(),
        oras_bin.as_str(),
    ];
    if !tools_available(&test, &tools, true) {
        return;
    }
    let started = Instant::now();
    let stack = ClientsStack::start(kind, None);
    let dockerd = Dockerd::start();
    let work = lowercase_tempdir("berth-compat-clients-");
    let w = |name: &str| {
        let p = work.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    };
    let (reg, d) = (&stack.reg, &dockerd);
    let jobs: Vec<Job<'_, (&'static str, Ops)>> = vec![
        Box::new(move || ("docker", docker(reg, d, &w("docker")))),
        Box::new(move || ("podman", podman(reg, &w("podman")))),
        Box::new(move || ("skopeo", skopeo(reg, &w("skopeo")))),
        Box::new(move || ("crane", crane(reg, &w("crane")))),
        Box::new(move || ("oras", oras(reg, &w("oras")))),
    ];
    let results = parallel(5, jobs);
    stack.report(&test, started, &results);
}

#[test]
fn compat_clients_distribution2() {
    client_matrix(Kind::Dist2);
}

#[test]
fn compat_clients_distribution3() {
    client_matrix(Kind::Dist3);
}
