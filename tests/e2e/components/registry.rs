//! Debian's `docker-registry` (distribution 2.8) with `auth.token` pointing
//! at a [`Berth`]: its realm, service, issuer and key bundle.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{http_get, Berth, ISSUER, REGISTRY_BIN, SERVICE, START_TIMEOUT};
use crate::common::proc::{free_port, Daemon};

/// A running `docker-registry` that trusts one berth; stopped on drop.
pub struct Registry {
    daemon: Daemon,
    /// `127.0.0.1:PORT`, as used in image references.
    pub host: String,
    /// Holds config and storage; removed on drop.
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry` with token auth delegated to `berth`.
    pub fn start(berth: &Berth) -> Registry {
        Registry::start_in(berth, None)
    }

    /// Like [`Registry::start`], storing blobs and manifests under `storage`
    /// (several registries may share one storage root).
    pub fn start_with_storage(berth: &Berth, storage: &Path) -> Registry {
        Registry::start_in(berth, Some(storage))
    }

    fn start_in(berth: &Berth, storage: Option<&Path>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-registry.")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let storage_dir = storage.map_or_else(|| dir.path().join("storage"), Path::to_path_buf);
        let config = format!(
            r#"version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}
  secret: berth-e2e-not-secret
auth:
  token:
    realm: {realm}
    service: {service}
    issuer: {issuer}
    rootcertbundle: {bundle}
"#,
            storage = storage_dir.display(),
            realm = berth.realm(),
            service = SERVICE,
            issuer = ISSUER,
            bundle = berth.bundle_path().display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config_path);
        let daemon = Daemon::spawn("docker-registry", cmd, dir.path(), Duration::from_secs(5));
        let mut reg = Registry {
            daemon,
            host,
            _dir: dir,
        };
        reg.wait_ready(berth);
        reg
    }

    fn wait_ready(&mut self, berth: &Berth) {
        let start = Instant::now();
        let url = format!("http://{}/v2/", self.host);
        loop {
            if let Some(st) = self.daemon.exited() {
                panic!(
                    "docker-registry exited during start-up ({st})\n{}",
                    self.log_tail(60)
                );
            }
            match http_get(&url, None) {
                Some((401, _)) => break,
                Some((status, body)) => panic!(
                    "GET {url} without credentials should be 401 (token auth), got {status}: {body}\n{}",
                    self.log_tail(60)
                ),
                None => {}
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "docker-registry did not answer on {url}\n{}\n{}",
                    self.log_tail(60),
                    berth.log_tail(20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }
}
