//! The rest of the client half of the compatibility matrix: helm (OCI charts),
//! regctl, buildah, containerd's `ctr` and cosign, each logging in, pushing,
//! pulling and being refused, through one registry per flavor configured with
//! exactly what `berth registry-config --flavor …` printed (the stack and the
//! records are those of `compat_clients.rs`). ctr and cosign live in
//! `compat_ctr_cosign.rs`.

use std::path::Path;
use std::time::Instant;

use crate::clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use crate::common::proc::run;
use crate::compat::{parallel, refused, Job, Ops};
use crate::compat_clients::{client_host, isolated, short, ClientsStack};
use crate::compat_ctr_cosign::{cosign, ctr, COSIGN_READER_POLICY};
use crate::components::{tools_available, ALICE_PASSWORD};
use crate::image::{config_digest_in_layout, write_oci_image};
use crate::registries::{go_tool, lowercase_tempdir, Kind, Reg};

/// A chart directory helm can package: `Chart.yaml` and one template whose
/// content is `marker`, so charts of different cells differ.
fn write_chart(dir: &Path, name: &str, version: &str, marker: &str) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir chart");
    std::fs::write(
        dir.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: {name}\nversion: {version}\n\
             description: berth end-to-end test chart\ntype: application\n"
        ),
    )
    .expect("write Chart.yaml");
    std::fs::write(
        dir.join("templates/configmap.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  marker: {marker:?}\n"
        ),
    )
    .expect("write template");
}

pub fn helm(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let bin = go_tool("helm");
    let host = &client_host(reg);
    let helm = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = isolated(&bin, work);
        let home = work.join("home");
        cmd.env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("HELM_REGISTRY_CONFIG");
        run(cmd.args(args), stdin, TRANSFER_TIMEOUT)
    };
    let (name, version) = ("berth-e2e", "0.1.0");
    write_chart(&work.join("chart"), name, version, &format!("helm {host}"));
    let out = helm(&["package", "chart", "-d", "packaged"], None);
    let tgz = work.join(format!("packaged/{name}-{version}.tgz"));
    if !out.success() || !tgz.is_file() {
        ops.check("login", false, || format!("helm package: {}", short(&out)));
        return ops;
    }
    let out = helm(
        &[
            "registry",
            "login",
            host,
            "--plain-http",
            "-u",
            "alice",
            "--password-stdin",
        ],
        Some(ALICE_PASSWORD),
    );
    if !ops.check("login", out.success(), || short(&out)) {
        return ops;
    }
    let chart = tgz.display().to_string();
    let out = helm(
        &[
            "push",
            &chart,
            &format!("oci://{host}/alice"),
            "--plain-http",
        ],
        None,
    );
    ops.check("push", out.success(), || short(&out));
    std::fs::create_dir_all(work.join("pulled")).expect("mkdir pulled");
    let out = helm(
        &[
            "pull",
            &format!("oci://{host}/alice/{name}"),
            "--version",
            version,
            "--plain-http",
            "-d",
            "pulled",
        ],
        None,
    );
    let pulled = std::fs::read(work.join(format!("pulled/{name}-{version}.tgz")));
    let same = pulled.is_ok_and(|p| std::fs::read(&tgz).is_ok_and(|t| t == p));
    ops.check("pull", out.success() && same, || short(&out));
    let out = helm(
        &["push", &chart, &format!("oci://{host}/bob"), "--plain-http"],
        None,
    );
    ops.check("refused", refused(&out), || short(&out));
    ops
}

pub fn regctl(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let bin = go_tool("regctl");
    let host = &client_host(reg);
    let img = write_oci_image(&work.join("image"), "v1", "compat regctl client");
    let regctl = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = isolated(&bin, work);
        cmd.env_remove("REGCTL_CONFIG");
        run(cmd.args(args), stdin, TRANSFER_TIMEOUT)
    };
    let out = regctl(&["registry", "set", host, "--tls", "disabled"], None);
    let out = if out.success() {
        regctl(
            &["registry", "login", host, "-u", "alice", "--pass-stdin"],
            Some(ALICE_PASSWORD),
        )
    } else {
        out
    };
    if !ops.check("login", out.success(), || short(&out)) {
        return ops;
    }
    let layout = format!("ocidir://{}:{}", img.dir.display(), img.tag);
    let own = format!("{host}/alice/regctl:v1");
    let out = regctl(&["image", "copy", &layout, &own], None);
    ops.check("push", out.success(), || short(&out));
    let pulled = work.join("pulled");
    let out = regctl(
        &[
            "image",
            "copy",
            &own,
            &format!("ocidir://{}:p", pulled.display()),
        ],
        None,
    );
    let same = out.success()
        && pulled.join("index.json").is_file()
        && config_digest_in_layout(&pulled, "p") == img.config_digest;
    ops.check("pull", same, || short(&out));
    let out = regctl(
        &["image", "copy", &layout, &format!("{host}/bob/regctl:v1")],
        None,
    );
    ops.check("refused", refused(&out), || short(&out));
    ops
}

pub fn buildah(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let c = ClientEnv::new(&work.join("env"));
    let img = write_oci_image(&work.join("image"), "v1", "compat buildah client");
    let af = c.authfile();
    let host = &client_host(reg);
    let login = c.buildah(
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
    if !ops.check("login", login.success(), || short(&login)) {
        return ops;
    }
    // Into buildah's private storage; no registry involved.
    let out = c.buildah(&["pull", "--quiet", &img.oci_ref()], None, TRANSFER_TIMEOUT);
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
    let own = format!("{host}/alice/buildah:v1");
    let push = |target: &str| {
        c.buildah(
            &[
                "push",
                "--tls-verify=false",
                "--authfile",
                af,
                &id,
                &format!("docker://{target}"),
            ],
            None,
            TRANSFER_TIMEOUT,
        )
    };
    let out = push(&own);
    ops.check("push", out.success(), || short(&out));
    let _ = c.buildah(&["rmi", "--all", "--force"], None, TRANSFER_TIMEOUT);
    let pull = || {
        c.buildah(
            &[
                "pull",
                "--quiet",
                "--policy",
                "always",
                "--tls-verify=false",
                "--authfile",
                af,
                &own,
            ],
            None,
            TRANSFER_TIMEOUT,
        )
    };
    let out = pull();
    let same = out.stdout.lines().last().unwrap_or_default().trim() == id;
    ops.check("pull", out.success() && same, || short(&out));
    let out = push(&format!("{host}/bob/buildah:v1"));
    ops.check("refused", refused(&out), || short(&out));
    // The image is in local storage now: buildah's default pull policy
    // (`missing`) would not ask the registry at all, so `always` it is.
    let out = c.buildah(&["logout", "--authfile", af, host], None, LOGIN_TIMEOUT);
    let anon = pull();
    ops.check("refused-pull", out.success() && refused(&anon), || {
        short(&anon)
    });
    ops
}

fn more_clients(kind: Kind) {
    let registry = kind.bin();
    let bins = ["helm", "regctl", "cosign"].map(go_tool);
    let test = format!("compat clients (more) {}", kind.label());
    let mut tools = vec![registry.as_str(), "skopeo", "buildah", "containerd", "ctr"];
    tools.extend(bins.iter().map(String::as_str));
    if !tools_available(&test, &tools, true) {
        return;
    }
    let started = Instant::now();
    let stack = ClientsStack::start(kind, Some(COSIGN_READER_POLICY.to_string()));
    let work = lowercase_tempdir("berth-compat-more-");
    let w = |name: &str| {
        let p = work.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    };
    let reg = &stack.reg;
    let jobs: Vec<Job<'_, (&'static str, Ops)>> = vec![
        Box::new(move || ("helm", helm(reg, &w("helm")))),
        Box::new(move || ("buildah", buildah(reg, &w("buildah")))),
        Box::new(move || ("ctr", ctr(reg, &w("ctr")))),
        Box::new(move || ("regctl", regctl(reg, &w("regctl")))),
        Box::new(move || ("cosign", cosign(reg, &w("cosign")))),
    ];
    let results = parallel(5, jobs);
    stack.report(&test, started, &results);
}

#[test]
fn compat_clients_more_distribution2() {
    more_clients(Kind::Dist2);
}

#[test]
fn compat_clients_more_distribution3() {
    more_clients(Kind::Dist3);
}
