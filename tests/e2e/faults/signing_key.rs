//! The signing key's file deleted while berth serves: it keeps signing with
//! the key it holds, says so in its log, stays ready, and `berth key show`
//! names the missing file.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::components::{http_get, tools_available, Berth, Registry, ALICE_PASSWORD, REGISTRY_BIN};

#[test]
fn signing_key_file_deleted_while_serving() {
    if !tools_available("key-deleted", &[REGISTRY_BIN], false) {
        return;
    }
    let mut berth = Berth::start();
    berth.add_user("alice", ALICE_PASSWORD, &[]);
    let registry = Registry::start(&berth);
    let alice = Some(("alice", ALICE_PASSWORD));
    let scope = "repository:alice/app:pull";
    let kid_of = |body: &Value| {
        let token = body["token"].as_str().unwrap();
        let header = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(header.as_bytes())
                .unwrap(),
        )
        .unwrap();
        header["kid"].as_str().unwrap_or("").to_owned()
    };
    let (status, body) = berth.get_token(alice, &[scope]);
    assert_eq!(status, 200);
    let kid = kid_of(&body);

    let key = std::fs::read_dir(&berth.keys_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "key") && p.file_stem().is_some_and(|s| s != "ca")
        })
        .expect("a signing key file");
    let name = key.file_stem().unwrap().to_str().unwrap().to_owned();
    std::fs::remove_file(&key).unwrap();
    eprintln!("deleted {}", key.display());

    // berth looks at the directory every 2 s: keep asking past that.
    let start = Instant::now();
    let mut last = body;
    while start.elapsed() < Duration::from_secs(4) {
        let (status, body) = berth.get_token(alice, &[scope]);
        assert_eq!(
            status,
            200,
            "token after the key file was deleted: {body}\n{}",
            berth.log_tail(20)
        );
        assert_eq!(kid_of(&body), kid, "signed with another key");
        last = body;
        thread::sleep(Duration::from_millis(250));
    }
    let token = last["token"].as_str().unwrap();
    let v2 = format!("http://{}/v2/", registry.host);
    let (status, text) = http_get(&v2, Some(token)).expect("registry");
    assert_eq!(
        status,
        200,
        "the registry should accept a token signed after the file was deleted: {text}\n{}",
        registry.log_tail(20)
    );
    assert!(berth.running(), "berth exited\n{}", berth.log_tail(30));
    assert!(
        berth.log().contains("keeping the previous keys"),
        "no log line about the unloadable keys\n{}",
        berth.log_tail(30)
    );
    let ready = http_get(&format!("{}/readyz", berth.url), None).map(|(s, _)| s);
    assert_eq!(ready, Some(200), "berth still signs, so it is ready");

    // The operator's view: `berth key show` names the key whose file is gone.
    let out = berth.cli(&["key", "show"], None);
    let text = out.text();
    eprintln!("{out}");
    assert!(
        text.contains(&name)
            && ["missing", "not found", "no such file", "no private key"]
                .iter()
                .any(|w| text.to_lowercase().contains(w)),
        "`berth key show` should say that {name}'s private key file is missing:\n{out}"
    );
}
