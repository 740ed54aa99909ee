//! berth's SQLite database on a full disk (a small tmpfs): reads keep working,
//! a write that fails is a clear 503 and a log line, and the audit rows kept
//! in memory are written once there is space again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use super::{missing_rows, skip};
use crate::common::proc::run;
use crate::components::{
    repo_policies, rt, tools_available, Berth, ALICE_PASSWORD, BOB_PASSWORD, SERVICE,
};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        if !tools_available(test, &["mount", "umount"], true) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-full.")
            .tempdir()
            .unwrap();
        let out = run(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(dir.path()),
            None,
            Duration::from_secs(10),
        );
        if !out.success() {
            skip(test, &format!("cannot mount a tmpfs here:\n{out}"));
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = run(
            Command::new("umount").arg(self.dir.path()),
            None,
            Duration::from_secs(10),
        );
        if !out.success() {
            let _ = run(
                Command::new("umount").arg("-l").arg(self.dir.path()),
                None,
                Duration::from_secs(10),
            );
        }
    }
}

#[test]
fn sqlite_disk_full() {
    let test = "sqlite-disk-full";
    let Some(fs) = Tmpfs::mount(test, "8m") else {
        return;
    };
    let mut berth = Berth::start_with_env(
        &repo_policies(),
        &[
            (
                "BERTH_DATABASE",
                fs.path().join("berth.db").display().to_string(),
            ),
            ("BERTH_LOG_FORMAT", "json".to_string()),
        ],
    );
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    berth.add_user("bob", BOB_PASSWORD, &[]);
    let alice = Some(("alice", ALICE_PASSWORD));
    let scope = "repository:alice/app:pull";
    assert_eq!(berth.get_token(alice, &[scope]).0, 200);
    let login = |b: &Berth| {
        let url = format!(
            "{}?service={SERVICE}&account=alice&offline_token=true&client_id=docker",
            b.realm()
        );
        rt().block_on(async {
            let r = reqwest::Client::new()
                .get(&url)
                .basic_auth("alice", Some(ALICE_PASSWORD))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let (status, body) = login(&berth);
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    let filler = fs.fill();
    eprintln!(
        "tmpfs full: {}",
        run(
            Command::new("df").arg(fs.path()),
            None,
            Duration::from_secs(5)
        )
        .stdout
    );
    // Reads still work: a cached and an uncached password, anonymous, a refresh grant.
    assert_eq!(
        berth.get_token(alice, &[scope]).0,
        200,
        "{}",
        berth.log_tail(20)
    );
    let (status, body) = berth.get_token(Some(("bob", BOB_PASSWORD)), &["repository:bob/x:pull"]);
    assert_eq!(status, 200, "uncached password with the disk full: {body}");
    assert_eq!(berth.get_token(None, &[scope]).0, 200);
    let (status, body) = rt().block_on(async {
        let r = reqwest::Client::new()
            .post(berth.realm())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", SERVICE),
                ("client_id", "docker"),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    assert_eq!(status, 200, "refresh grant with the disk full: {body}");
    // A wrong password is still a 401 (counting it fails, and is logged).
    assert_eq!(
        berth.get_token(Some(("alice", "wrong")), &[scope]).0,
        401,
        "{}",
        berth.log_tail(20)
    );
    // A new refresh token must be written. SQLite may still fit one row into
    // pages it already holds, so success is allowed; a failed write must be a
    // clear 503, never a 500.
    let (status, body) = login(&berth);
    assert!(
        status == 200 || status == 503,
        "docker login needing a write on a full disk: {status} {body}\n{}",
        berth.log_tail(20)
    );
    if status == 503 {
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    }
    let (status, _) = berth.healthz().expect("/healthz");
    assert_eq!(status, 200);
    assert!(berth.running(), "berth exited\n{}", berth.log_tail(30));
    thread::sleep(Duration::from_millis(500));
    let log = berth.log();
    assert!(
        log.contains("disk is full"),
        "no log line names the full disk\n{}",
        berth.log_tail(30)
    );
    assert!(!log.contains("panicked"), "{}", berth.log_tail(30));

    // Space again: the audit rows kept in memory are written, logins work.
    std::fs::remove_file(&filler).unwrap();
    let missing = missing_rows(&berth, Duration::from_secs(20));
    assert!(
        missing.is_empty(),
        "decisions without audit rows after the disk had space again: {missing:?}\n{}",
        berth.log_tail(30)
    );
    let (status, body) = login(&berth);
    assert_eq!(status, 200, "docker login after space was freed: {body}");
}
