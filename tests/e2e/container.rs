//! berth's container image, built by the recipe users run
//! (`scripts/build-image.sh` over the repository's `Dockerfile`, no base image
//! pulled) and run as a registry's realm: as a non-root user, with a read-only
//! root filesystem, its keys, database and default policy created on first start
//! in a volume. A real registry verifies its tokens and skopeo pushes and pulls
//! through it; a push to someone else's repository is refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{ClientEnv, LOGIN_TIMEOUT, TRANSFER_TIMEOUT};
use crate::common::cli::BERTH;
use crate::common::proc::{free_port, run, Out};
use crate::components::{
    http_get, tools_available, Dockerd, ALICE_PASSWORD, DOCKER_BIN, REGISTRY_BIN,
};
use crate::image::write_oci_image;
use crate::registries::{Kind, Reg, RegistrySpec, Trust};

const IMAGE_UID: u32 = 10001;
const ADMIN_PASSWORD: &str = "container-admin-password";
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// A container started from the image, removed with its volume on drop.
struct Container<'a> {
    dockerd: &'a Dockerd,
    cfg: PathBuf,
    name: String,
    volume: String,
}

impl Container<'_> {
    fn docker(&self, args: &[&str], stdin: Option<&str>) -> Out {
        self.dockerd
            .docker(&self.cfg, args, stdin, Duration::from_secs(60))
    }

    fn inspect(&self, format: &str) -> String {
        let out = self.docker(&["inspect", "-f", format, &self.name], None);
        assert!(out.success(), "docker inspect: {out}");
        out.stdout.trim().to_string()
    }

    fn logs(&self) -> String {
        self.docker(&["logs", "--tail", "40", &self.name], None)
            .text()
    }

    /// The volume's directory on this host.
    fn volume_dir(&self) -> PathBuf {
        let out = self.docker(
            &["volume", "inspect", "-f", "{{.Mountpoint}}", &self.volume],
            None,
        );
        assert!(out.success(), "docker volume inspect: {out}");
        PathBuf::from(out.stdout.trim())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", &self.name], None);
        let _ = self.docker(&["volume", "rm", "-f", &self.volume], None);
    }
}

fn build_image(dockerd: &Dockerd, tag: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh");
    let mut cmd = Command::new(script);
    cmd.args(["--binary", BERTH, "--tag", tag])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DOCKER", DOCKER_BIN)
        .env("DOCKER_HOST", &dockerd.host)
        .env("DOCKER_CONFIG", dockerd.dir.path().join("build-config"));
    let out = run(&mut cmd, None, BUILD_TIMEOUT);
    assert!(out.success(), "scripts/build-image.sh failed:\n{out}");
}

fn wait_healthy(url: &str, c: &Container<'_>) {
    let start = Instant::now();
    loop {
        if let Some((200, _)) = http_get(&format!("{url}/healthz"), None) {
            return;
        }
        let running = c.inspect("{{.State.Running}}");
        assert!(
            running == "true" && start.elapsed() < Duration::from_secs(60),
            "berth in the container did not become healthy (running: {running})\n{}",
            c.logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn mode(path: &Path) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.permissions().mode() & 0o777)
}

#[test]
fn container_image_serves_tokens_as_non_root_on_a_read_only_root() {
    let test = "container image";
    if !tools_available(
        test,
        &[
            "dockerd",
            DOCKER_BIN,
            REGISTRY_BIN,
            "skopeo",
            "objcopy",
            "ldd",
        ],
        true,
    ) {
        return;
    }
    let dockerd = Dockerd::start();
    let tag = format!("berth-e2e:{}", std::process::id());
    build_image(&dockerd, &tag);

    let cfg = dockerd.dir.path().join("client-config");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let c = Container {
        dockerd: &dockerd,
        cfg,
        name: format!("berth-e2e-{}", std::process::id()),
        volume: format!("berth-e2e-data-{}", std::process::id()),
    };
    let listen = format!("BERTH_LISTEN=127.0.0.1:{port}");
    let public = format!("BERTH_PUBLIC_URL={url}");
    let admin = format!("BERTH_ADMIN_PASSWORD={ADMIN_PASSWORD}");
    let mount = format!("{}:/var/lib/berth", c.volume);
    // No `serve` argument and no user: the image's defaults are under test.
    let out = c.docker(
        &[
            "run",
            "-d",
            "--name",
            &c.name,
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &mount,
            "-e",
            &listen,
            "-e",
            &public,
            "-e",
            &admin,
            &tag,
        ],
        None,
    );
    assert!(out.success(), "docker run: {out}");
    wait_healthy(&url, &c);

    // Non-root, read-only root filesystem, no base image.
    assert_eq!(c.inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(c.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "10001"),
        "berth in the container runs as {uid_line:?}"
    );
    // The health check the compose example uses, from inside the image.
    let probe = c.docker(&["exec", &c.name, "/usr/local/bin/berth", "probe"], None);
    assert!(probe.success(), "berth probe in the container: {probe}");
    let shell = c.docker(&["exec", &c.name, "/bin/sh", "-c", "true"], None);
    assert!(!shell.success(), "the image has a shell: {shell}");

    // First start wrote keys, database and the default policy into the volume,
    // owned by berth's user, private keys and database readable by it alone.
    let vol = c.volume_dir();
    let keys: Vec<PathBuf> = std::fs::read_dir(vol.join("keys"))
        .expect("keys/ in the volume")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    assert!(!keys.is_empty(), "no private key in {}", vol.display());
    for k in &keys {
        assert_eq!(mode(k), (IMAGE_UID, 0o600), "{}", k.display());
    }
    assert_eq!(mode(&vol.join("data/berth.db")).0, IMAGE_UID);
    assert_eq!(
        std::fs::read_to_string(vol.join("policies/default.toml")).expect("default policy"),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.toml")
        )
        .expect("shipped policy"),
        "the default policy written on first start is the shipped one"
    );

    // The CLI in the same image, against the same volume.
    let add = c.docker(
        &[
            "exec",
            "-i",
            &c.name,
            "/usr/local/bin/berth",
            "user",
            "add",
            "alice",
            "--password-stdin",
        ],
        Some(&format!("{ALICE_PASSWORD}\n")),
    );
    assert!(add.success(), "berth user add in the container: {add}");

    // A registry on this host trusts the bundle the container wrote.
    let reg = Reg::start(RegistrySpec {
        kind: Kind::Dist2,
        realm: format!("{url}/token"),
        service: "registry".into(),
        issuer: "berth".into(),
        trust: Trust::Bundle(vol.join("keys/bundle.pem")),
        signing_algorithms: None,
        auth_block: None,
    });
    let work = tempfile::tempdir().expect("tempdir");
    let client = ClientEnv::new(&work.path().join("skopeo"));
    let img = write_oci_image(&work.path().join("image"), "v1", "container e2e image");
    let af = client.authfile();
    let login = client.skopeo(
        &[
            "login",
            "--tls-verify=false",
            "--authfile",
            af,
            "-u",
            "alice",
            "--password-stdin",
            &reg.host,
        ],
        Some(&format!("{ALICE_PASSWORD}\n")),
        LOGIN_TIMEOUT,
    );
    assert!(login.success(), "skopeo login: {login}\n{}", c.logs());
    let copy = |src: &str, dst: &str| {
        client.skopeo(
            &[
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--authfile",
                af,
                src,
                dst,
            ],
            None,
            TRANSFER_TIMEOUT,
        )
    };
    let own = format!("docker://{}/alice/app:1", reg.host);
    let push = copy(&img.oci_ref(), &own);
    assert!(
        push.success(),
        "push through the container's berth: {push}\n{}",
        reg.log_tail(20)
    );
    let pulled = work.path().join("pulled");
    let pull = copy(&own, &format!("oci:{}:p", pulled.display()));
    assert!(pull.success(), "pull: {pull}");
    let other = format!("docker://{}/admin/app:1", reg.host);
    let refused = copy(&img.oci_ref(), &other);
    assert!(
        !refused.success(),
        "alice pushed to admin/app through the container's berth"
    );
    let text = refused.text().to_lowercase();
    assert!(
        text.contains("denied")
            || text.contains("unauthorized")
            || text.contains("authentication required"),
        "refused push says why: {refused}"
    );
}
