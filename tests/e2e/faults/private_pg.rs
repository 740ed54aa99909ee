//! A PostgreSQL cluster of one test's own (initdb in a temp dir, its own port,
//! run as `postgres`), so that stopping and starting it disturbs no other
//! test; the shared test server cannot be stopped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::skip;
use crate::common::proc::{restart_port, run, Out};
use crate::components::tools_available;

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL cluster of this test's own, run as `postgres` from a temp dir.
pub struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `postgres://postgres@127.0.0.1:PORT/berth`.
    pub url: String,
}

impl PrivatePg {
    /// `None` when a tool is missing (a failure under `BERTH_E2E=require`).
    pub fn start(test: &str) -> Option<PrivatePg> {
        if !tools_available(test, &["runuser", "chown"], true) {
            return None;
        }
        let Some(bin) = postgres_bin() else {
            skip(
                test,
                "no PostgreSQL under /usr/lib/postgresql/*/bin (apt-get install postgresql)",
            );
            return None;
        };
        // Short path: the socket lives here too.
        let dir = tempfile::Builder::new()
            .prefix("berth-pg.")
            .tempdir_in("/tmp")
            .unwrap();
        let out = run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
            None,
            Duration::from_secs(10),
        );
        assert!(out.success(), "{out}");
        let pg = PrivatePg {
            url: String::new(),
            // The cluster restarts on this port.
            port: restart_port(),
            bin,
            dir,
        };
        let data = pg.dir.path().join("data");
        let out = pg.as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.success(), "initdb failed:\n{out}");
        pg.up();
        let port = pg.port.to_string();
        let out = pg.as_postgres(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE berth",
            ],
        );
        assert!(out.success(), "{out}");
        let mut pg = pg;
        pg.url = format!("postgres://postgres@127.0.0.1:{port}/berth");
        Some(pg)
    }

    fn as_postgres(&self, prog: &str, args: &[&str]) -> Out {
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join(prog))
                .args(args)
                .current_dir(self.dir.path()),
            None,
            Duration::from_secs(60),
        )
    }

    fn pg_ctl(&self, args: &[&str]) -> Out {
        let data = self.dir.path().join("data");
        let mut all = vec!["-D", data.to_str().unwrap()];
        all.extend(args);
        self.as_postgres("pg_ctl", &all)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = self.pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "start",
        ]);
        assert!(
            out.success(),
            "pg_ctl start failed:\n{out}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn down(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(out.success(), "pg_ctl stop failed:\n{out}");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}
