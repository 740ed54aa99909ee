//! skopeo, podman and buildah invocations isolated from the machine's global state:
//! own auth file, own HOME/XDG dirs, own podman/buildah storage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::proc::{run, Out};

pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

/// Per-client private directories (HOME, XDG, empty registries.conf).
pub struct ClientEnv {
    pub root: PathBuf,
    pub authfile: PathBuf,
}

impl ClientEnv {
    pub fn new(root: &Path) -> ClientEnv {
        for d in ["home", "xdg-runtime", "xdg-config", "tmp"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir client dir");
        }
        // Empty: no search registries, mirrors or blocks from the host.
        std::fs::write(root.join("registries.conf"), "").expect("registries.conf");
        ClientEnv {
            root: root.to_path_buf(),
            authfile: root.join("auth.json"),
        }
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", self.root.join("home"))
            .env("XDG_RUNTIME_DIR", self.root.join("xdg-runtime"))
            .env("XDG_CONFIG_HOME", self.root.join("xdg-config"))
            .env("TMPDIR", self.root.join("tmp"))
            .env("REGISTRY_AUTH_FILE", &self.authfile)
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.root.join("registries.conf"),
            )
            .env_remove("DOCKER_CONFIG");
    }

    pub fn skopeo(&self, args: &[&str], stdin: Option<&str>, timeout: Duration) -> Out {
        let mut cmd = Command::new("skopeo");
        self.apply(&mut cmd);
        cmd.args(args);
        run(&mut cmd, stdin, timeout)
    }

    pub fn podman(&self, args: &[&str], stdin: Option<&str>, timeout: Duration) -> Out {
        let mut cmd = Command::new("podman");
        self.apply(&mut cmd);
        cmd.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "file",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .arg("--tmpdir")
            .arg(self.root.join("tmp"))
            .args(args);
        run(&mut cmd, stdin, timeout)
    }

    /// buildah with the same private storage layout as [`ClientEnv::podman`].
    pub fn buildah(&self, args: &[&str], stdin: Option<&str>, timeout: Duration) -> Out {
        let mut cmd = Command::new("buildah");
        self.apply(&mut cmd);
        cmd.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        run(&mut cmd, stdin, timeout)
    }

    pub fn authfile(&self) -> &str {
        self.authfile.to_str().expect("utf-8 path")
    }
}
