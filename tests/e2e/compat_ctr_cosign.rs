//! Two cells of the client matrix that need more than a command line:
//! containerd's `ctr`, which talks to a containerd the cell starts (own root,
//! state and socket under its temp dir) and stops, and cosign, which signs an
//! image with a local key and no transparency log, verifies it, and is refused
//! a signature by a user who may pull the image but not push to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{ClientEnv, TRANSFER_TIMEOUT};
use crate::common::proc::{run, Daemon, Out};
use crate::compat::{refused, Ops};
use crate::compat_clients::{client_host, isolated, short};
use crate::components::{ALICE_PASSWORD, BOB_PASSWORD};
use crate::image::{sha256, tar, write_oci_image};
use crate::registries::{go_tool, Reg};

/// The extra rule the cosign cell needs: bob may pull `alice/cosign` (cosign
/// reads the image before it signs) but not push a signature to it.
pub const COSIGN_READER_POLICY: &str = r#"# bob reads alice/cosign, so a signature he makes is refused at the push.
[[rule]]
id = "bob-reads-alice-cosign"
account = "bob"
type = "repository"
name = "alice/cosign"
allow = ["pull"]
"#;

/// A containerd of the cell's own, stopped (with its process group) on drop.
struct Containerd {
    _daemon: Daemon,
    sock: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Result<Containerd, String> {
        for d in ["root", "state", "opt"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("mkdir: {e}"))?;
        }
        let sock = dir.join("containerd.sock");
        // No CRI (it would look for CNI and a sandbox image) and no /opt.
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = dir.join("root").display().to_string(),
            state = dir.join("state").display().to_string(),
            sock = sock.display().to_string(),
            opt = dir.join("opt").display().to_string(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_path);
        let mut daemon = Daemon::spawn("containerd", cmd, dir, Duration::from_secs(10));
        let c = |sock: &Path| {
            let mut cmd = Command::new("ctr");
            cmd.arg("--address").arg(sock).arg("version");
            run(&mut cmd, None, Duration::from_secs(10))
        };
        let start = Instant::now();
        loop {
            if let Some(st) = daemon.exited() {
                return Err(format!("containerd exited ({st})\n{}", daemon.log_tail(20)));
            }
            if sock.exists() && c(&sock).success() {
                return Ok(Containerd {
                    _daemon: daemon,
                    sock,
                });
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("containerd not ready\n{}", daemon.log_tail(20)));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn ctr(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "berth-e2e"])
            .args(args);
        run(&mut cmd, None, TRANSFER_TIMEOUT)
    }
}

/// The OCI layout at `dir` as one tar archive, the form `ctr images import` reads.
fn layout_archive(dir: &Path) -> Vec<u8> {
    let mut names = vec!["oci-layout".to_string(), "index.json".to_string()];
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).expect("read blobs") {
        let name = entry.expect("blob").file_name();
        names.push(format!("blobs/sha256/{}", name.to_string_lossy()));
    }
    let contents: Vec<(String, Vec<u8>)> = names
        .into_iter()
        .map(|n| {
            let data = std::fs::read(dir.join(&n)).expect("read layout file");
            (n, data)
        })
        .collect();
    let files: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    tar(&files)
}

/// ctr has no login command: it sends `--user` with every request, so its
/// "login" is berth refusing a wrong password and the push accepting the right one.
pub fn ctr(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let host = &client_host(reg);
    let containerd = match Containerd::start(&work.join("containerd")) {
        Ok(c) => c,
        Err(e) => {
            ops.check("login", false, || e);
            return ops;
        }
    };
    let img = write_oci_image(&work.join("image"), "v1", "compat ctr client");
    let archive = work.join("image.tar");
    std::fs::write(&archive, layout_archive(&img.dir)).expect("write image archive");
    let own = format!("{host}/alice/ctr:v1");
    let out = containerd.ctr(&[
        "images",
        "import",
        "--no-unpack",
        "--base-name",
        &format!("{host}/alice/ctr"),
        &archive.display().to_string(),
    ]);
    if !out.success() {
        ops.check("login", false, || {
            format!("ctr images import: {}", short(&out))
        });
        return ops;
    }
    let user = format!("alice:{ALICE_PASSWORD}");
    let push = |user: &str, remote: &str| {
        containerd.ctr(&[
            "images",
            "push",
            "--plain-http",
            "--user",
            user,
            remote,
            &own,
        ])
    };
    let out = push("alice:wrong-password", &own);
    if !ops.check("login", refused(&out), || short(&out)) {
        return ops;
    }
    let out = push(&user, &own);
    ops.check("push", out.success(), || short(&out));
    let out = containerd.ctr(&["images", "rm", "--sync", &own]);
    let removed = out.success();
    let out = containerd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        "--user",
        &user,
        &own,
    ]);
    let config = containerd.ctr(&["content", "get", &img.config_digest]);
    let same = config.success() && sha256(config.stdout.as_bytes()) == img.config_digest;
    ops.check("pull", removed && out.success() && same, || short(&out));
    let out = push(&user, &format!("{host}/bob/ctr:v1"));
    ops.check("refused", refused(&out), || short(&out));
    ops
}

const COSIGN_KEY_PASSWORD: &str = "berth-e2e-cosign-key";

/// cosign as one user: own HOME and docker config under `work`, the key
/// password in its environment, and a proxy that goes nowhere for anything
/// but loopback, so a stray request for a transparency log or a trust root
/// cannot leave the machine.
fn cosign_as(bin: &str, work: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = isolated(bin, work);
    cmd.env("COSIGN_PASSWORD", COSIGN_KEY_PASSWORD)
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("TUF_ROOT", work.join("tuf"))
        .env_remove("COSIGN_EXPERIMENTAL")
        .env_remove("SIGSTORE_ROOT_FILE");
    run(cmd.args(args), stdin, TRANSFER_TIMEOUT)
}

pub fn cosign(reg: &Reg, work: &Path) -> Ops {
    let mut ops = Ops::default();
    let bin = go_tool("cosign");
    let host = &client_host(reg);
    let image = format!("{host}/alice/cosign:v1");
    // The image to sign, pushed by alice with skopeo.
    let img = write_oci_image(&work.join("image"), "v1", "compat cosign client");
    let c = ClientEnv::new(&work.join("skopeo"));
    let out = c.skopeo(
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("alice:{ALICE_PASSWORD}"),
            &img.oci_ref(),
            &format!("docker://{image}"),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    if !out.success() {
        ops.check("login", false, || {
            format!("pushing the image: {}", short(&out))
        });
        return ops;
    }
    let (alice, bob) = (work.join("alice"), work.join("bob"));
    for d in [&alice, &bob] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let login = |dir: &Path, user: &str, password: &str| {
        cosign_as(
            &bin,
            dir,
            &["login", host, "-u", user, "--password-stdin"],
            Some(password),
        )
    };
    let out = login(&alice, "alice", ALICE_PASSWORD);
    if !ops.check("login", out.success(), || short(&out)) {
        return ops;
    }
    // Each signs with a key of their own: cosign does not push a second
    // signature by a key that has already signed the image.
    for dir in [&alice, &bob] {
        let out = cosign_as(&bin, dir, &["generate-key-pair"], None);
        if !out.success() || !dir.join("cosign.key").is_file() {
            ops.check("push", false, || {
                format!("generate-key-pair: {}", short(&out))
            });
            return ops;
        }
    }
    let sign = |dir: &Path| {
        let key = dir.join("cosign.key").display().to_string();
        cosign_as(
            &bin,
            dir,
            &[
                "sign",
                "--key",
                &key,
                "--tlog-upload=false",
                "--allow-insecure-registry",
                "--yes",
                &image,
            ],
            None,
        )
    };
    // As the user of `dir`, verifies the signature made with `signer`'s key.
    let verify = |dir: &Path, signer: &Path| {
        let public = signer.join("cosign.pub").display().to_string();
        cosign_as(
            &bin,
            dir,
            &[
                "verify",
                "--key",
                &public,
                "--insecure-ignore-tlog",
                "--allow-insecure-registry",
                &image,
            ],
            None,
        )
    };
    let out = sign(&alice);
    ops.check("push", out.success(), || short(&out));
    let out = verify(&alice, &alice);
    ops.check("pull", out.success(), || short(&out));
    // bob may pull the image (he verifies alice's signature) but not push his.
    let out = login(&bob, "bob", BOB_PASSWORD);
    let reads = if out.success() {
        verify(&bob, &alice)
    } else {
        out
    };
    let signed = sign(&bob);
    let unsigned = verify(&bob, &bob);
    ops.check(
        "refused",
        reads.success() && refused(&signed) && !unsigned.success(),
        || {
            if !reads.success() {
                format!("bob cannot read alice/cosign: {}", short(&reads))
            } else if unsigned.success() {
                format!("bob's signature is in the registry: {}", short(&unsigned))
            } else {
                short(&signed)
            }
        },
    );
    ops
}
