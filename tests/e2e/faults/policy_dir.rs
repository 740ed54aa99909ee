//! The policy directory taken away, replaced by a file, and swapped the way
//! Kubernetes updates a ConfigMap: the last good policy keeps deciding,
//! `/healthz` says `degraded` with the cause, and a good directory is picked
//! up again without a restart.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PUBLIC;
use crate::components::{jwt_claims, repo_policies, Berth, ALICE_PASSWORD};

fn alice_actions(berth: &Berth, scope: &str) -> Vec<String> {
    let (status, body) = berth.get_token(Some(("alice", ALICE_PASSWORD)), &[scope]);
    assert_eq!(status, 200, "{body}\n{}", berth.log_tail(20));
    let claims = jwt_claims(body["token"].as_str().unwrap());
    claims["access"][0]["actions"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Polls `/healthz` until `done`, at most 5 s; returns the body.
fn wait_health(berth: &Berth, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, h) = berth
            .healthz()
            .unwrap_or_else(|| panic!("/healthz unreachable\n{}", berth.log_tail(20)));
        assert_eq!(status, 200, "/healthz: {h}");
        if done(&h) {
            eprintln!("ok: {what} after {:?}: {h}", start.elapsed());
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not seen within 5 s; last /healthz {h}\n{}",
            berth.log_tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn policy_directory_gone_keeps_the_last_good_policy() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        repo_policies().join("default.toml"),
        dir.join("default.toml"),
    )
    .unwrap();
    let mut berth = Berth::start_with_policies(&dir);
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let scope = "repository:alice/app:pull,push";
    assert_eq!(alice_actions(&berth, scope), ["pull", "push"]);
    let first = wait_health(&berth, "policy loaded", |h| h["status"] == "ok");
    let generation = first["policy"]["generation"].as_u64().unwrap();

    // Root reads any mode, so "unreadable" is made by taking the directory away,
    // then by putting a file where it was.
    let moved = root.path().join("policies.moved");
    std::fs::rename(&dir, &moved).unwrap();
    let h = wait_health(&berth, "directory renamed away", |h| {
        h["status"] == "degraded"
    });
    assert_eq!(h["policy"]["stale"], true, "{h}");
    let error = h["policy"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("cannot read policy directory") && error.contains("policies"),
        "the error should name the directory and the problem: {h}"
    );
    assert_eq!(
        alice_actions(&berth, scope),
        ["pull", "push"],
        "the last good policy keeps serving"
    );
    std::fs::write(&dir, "not a directory").unwrap();
    thread::sleep(Duration::from_millis(1500));
    let h = wait_health(&berth, "a file in its place", |h| h["status"] == "degraded");
    assert_eq!(h["policy"]["generation"].as_u64(), Some(generation), "{h}");
    assert_eq!(alice_actions(&berth, scope), ["pull", "push"]);
    assert!(berth.running(), "berth exited\n{}", berth.log_tail(30));
    assert!(
        berth.log().contains("policy reload failed"),
        "no log line says the reload failed\n{}",
        berth.log_tail(30)
    );

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let h = wait_health(&berth, "directory back", |h| h["status"] == "ok");
    assert_eq!(h["policy"]["stale"], false, "{h}");
    assert!(h["policy"]["generation"].as_u64() > Some(generation), "{h}");
    assert_eq!(alice_actions(&berth, scope), ["pull", "push"]);
}

/// Kubernetes mounts a ConfigMap as `NAME -> ..data/NAME` symlinks and updates
/// it by swapping the `..data` symlink: the files' own links never change.
#[test]
fn policy_directory_updated_like_a_configmap_reloads() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    for (version, extra) in [("..v1", ""), ("..v2", PUBLIC)] {
        let d = dir.join(version);
        std::fs::create_dir_all(&d).unwrap();
        let default = std::fs::read_to_string(repo_policies().join("default.toml")).unwrap();
        std::fs::write(d.join("default.toml"), format!("{default}\n{extra}")).unwrap();
    }
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/default.toml", dir.join("default.toml")).unwrap();
    let berth = Berth::start_with_policies(&dir);
    let first = wait_health(&berth, "policy loaded", |h| h["status"] == "ok");
    let public = |b: &Berth| {
        let (_, body) = b.get_token(None, &["repository:public/app:pull"]);
        jwt_claims(body["token"].as_str().unwrap())["access"][0]["actions"].clone()
    };
    assert_eq!(public(&berth), serde_json::json!([]));

    // What the kubelet does: a new ..data link renamed over the old one.
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let gen = first["policy"]["generation"].as_u64().unwrap();
    wait_health(&berth, "ConfigMap update picked up", |h| {
        h["policy"]["generation"].as_u64() > Some(gen)
    });
    assert_eq!(public(&berth), serde_json::json!(["pull"]));
}
