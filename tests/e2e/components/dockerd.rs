//! A private dockerd (its own data root and socket, no networking changes)
//! and the docker client run against it with a config directory of the
//! test's choice.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{which, DOCKER_BIN, START_TIMEOUT};
use crate::common::proc::{run, Daemon, Out};

/// A running dockerd of the test's own; stopped on drop.
pub struct Dockerd {
    daemon: Daemon,
    /// `unix://…/docker.sock`
    pub host: String,
    pub dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        // Short path: the socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let host = format!("unix://{}", d.join("docker.sock").display());
        let mut cmd = Command::new(which("dockerd").expect("dockerd"));
        cmd.args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
        ])
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .arg("-H")
        .arg(&host)
        .env_remove("DOCKER_HOST");
        let daemon = Daemon::spawn("dockerd", cmd, d, Duration::from_secs(20));
        let mut dockerd = Dockerd { daemon, host, dir };
        dockerd.wait_ready();
        dockerd
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        let cfg = self.dir.path().join("probe-config");
        loop {
            if let Some(st) = self.daemon.exited() {
                panic!(
                    "dockerd exited during start-up ({st})\n{}",
                    self.log_tail(60)
                );
            }
            let out = self.docker(&cfg, &["info"], None, Duration::from_secs(10));
            if out.success() {
                break;
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "dockerd not ready after {START_TIMEOUT:?}:\n{out}\n{}",
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs the docker client against this daemon with its own `DOCKER_CONFIG`.
    pub fn docker(
        &self,
        config_dir: &Path,
        args: &[&str],
        stdin: Option<&str>,
        timeout: Duration,
    ) -> Out {
        let mut cmd = Command::new(DOCKER_BIN);
        cmd.args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", config_dir)
            .env("HOME", config_dir)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        run(&mut cmd, stdin, timeout)
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }
}
