//! The directory away, slow, or one of several: 503 for directory users only,
//! recovery without a restart, and failover between URLs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::slapd::{dir_password, Seed, Slapd};
use super::{
    example_policies, expect, get_token, slapd_available, start_berth, write_config,
    LOCAL_PASSWORD, LOCAL_USER,
};

#[test]
fn ldap_directory_stopped_and_restarted_under_load() {
    if !slapd_available("ldap-outage", &[]) {
        return;
    }
    let mut dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    let config = write_config(
        &dir,
        &dir.url(),
        "login_failure_limit = 100000",
        "cache_ttl = \"0s\"",
    );
    let berth = Arc::new(start_berth(&config, &example_policies()));
    let out = berth.cli_ok(&["robot", "create", "ci", "--group", "ci"], None);
    let robot_secret = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret (shown once): "))
        .expect("robot secret")
        .trim()
        .to_owned();

    // Load: directory, local and robot sign-ins in a loop; every answer kept.
    type Seen = Arc<Mutex<Vec<(Instant, &'static str, u16, String)>>>;
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (who, user, pw) in [
        ("directory", "alice".to_owned(), dir_password("alice")),
        ("directory", "bob".to_owned(), dir_password("bob")),
        ("local", LOCAL_USER.to_owned(), LOCAL_PASSWORD.to_owned()),
        ("robot", "robot$ci".to_owned(), robot_secret.clone()),
    ] {
        let (berth, seen, stop) = (berth.clone(), seen.clone(), stop.clone());
        workers.push(thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 5000 {
                n += 1;
                let (status, body) = get_token(&berth, &user, &pw, &[], false);
                let why = body["error_description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock()
                    .unwrap()
                    .push((Instant::now(), who, status, why));
                thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let wait_for = |what: &str, pred: &dyn Fn(u16, &str) -> bool, since: Instant| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hit = seen
                .lock()
                .unwrap()
                .iter()
                .any(|(t, who, st, why)| *t > since && *who == "directory" && pred(*st, why));
            if hit {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within 30 s\n{}",
                berth.log_tail(30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    let t0 = Instant::now();
    wait_for("a directory sign-in", &|st, _| st == 200, t0);
    thread::sleep(Duration::from_secs(1));

    dir.stop();
    let stopped = Instant::now();
    let down = wait_for(
        "503 \"the directory is unavailable\"",
        &|st, why| st == 503 && why.contains("the directory is unavailable"),
        stopped,
    );
    eprintln!("directory down: first 503 after {:?}", down - stopped);
    thread::sleep(Duration::from_secs(3));
    dir.restart();
    let restarted = Instant::now();
    let up = wait_for(
        "a directory sign-in after the restart",
        &|st, _| st == 200,
        restarted,
    );
    eprintln!("directory back: first 200 after {:?}", up - restarted);
    thread::sleep(Duration::from_secs(1));

    // Slow rather than gone: slapd frozen, connections accepted, no answers.
    dir.pause();
    let paused = Instant::now();
    let slow = wait_for(
        "503 for a directory that does not answer",
        &|st, why| st == 503 && why.contains("the directory is unavailable"),
        paused,
    );
    eprintln!("directory frozen: first 503 after {:?}", slow - paused);
    dir.resume();
    let resumed = Instant::now();
    let up = wait_for(
        "a directory sign-in after the freeze",
        &|st, _| st == 200,
        resumed,
    );
    eprintln!("directory thawed: first 200 after {:?}", up - resumed);
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    for (_, who, status, why) in seen.iter() {
        match *who {
            "local" | "robot" => assert_eq!(
                *status, 200,
                "{who} sign-in failed while the directory was away: {status} {why}"
            ),
            _ => assert!(
                *status == 200 || (*status == 503 && why.contains("the directory is unavailable")),
                "directory user got {status} {why:?}: never 401 for an outage"
            ),
        }
    }
    let count = |w: &str| seen.iter().filter(|(_, who, ..)| *who == w).count();
    eprintln!(
        "requests: directory {}, local {}, robot {}",
        count("directory"),
        count("local"),
        count("robot")
    );
    assert!(
        count("local") > 10 && count("robot") > 10,
        "too little load to tell"
    );
}

#[test]
fn ldap_failover_past_a_refusing_and_a_silent_server() {
    if !slapd_available("ldap-failover", &[]) {
        return;
    }
    let dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    // Nothing listens on the first port; the second accepts and never answers.
    let refused = crate::common::proc::free_port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let urls = format!(
        "[\"ldap://127.0.0.1:{refused}\", \"ldap://{}\", \"{}\"]",
        silent.local_addr().unwrap(),
        dir.url()
    );
    let config = write_config(&dir, &urls, "", "cache_ttl = \"0s\"");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("connect_timeout = \"3s\"", "connect_timeout = \"1s\"");
    std::fs::write(&config, text).unwrap();
    let berth = start_berth(&config, &example_policies());
    let started = Instant::now();
    expect(
        get_token(&berth, "alice", &dir_password("alice"), &[], false),
        200,
        "alice with two dead servers listed first",
        &berth,
    );
    eprintln!("first sign-in through failover: {:?}", started.elapsed());
    assert!(
        berth.log().contains("directory failover"),
        "{}",
        berth.log_tail(20)
    );
    // The server that answered is tried first from then on.
    let started = Instant::now();
    expect(
        get_token(&berth, "bob", &dir_password("bob"), &[], false),
        200,
        "bob",
        &berth,
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the next sign-in waited for the silent server again: {:?}",
        started.elapsed()
    );
    drop(silent);
}
