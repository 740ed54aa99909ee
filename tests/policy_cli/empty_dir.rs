//! berth run from a directory that holds nothing of the source tree, the way an
//! installed binary runs in `/var/lib/berth`: `berth serve` writes the shipped
//! default policy (beside its keys and database) and serves tokens; the policy
//! commands use the built-in default and write nothing; an explicitly named
//! policy directory that is missing is still an error.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::server::{self, BerthProcess};
use crate::support::{berth_in, repo};

const ADMIN_PASSWORD: &str = "empty-dir-admin-password";

/// `berth serve` with no configuration but its address and the first admin's
/// password, run in `dir`; stopped on drop.
struct Serve(BerthProcess);

impl Serve {
    fn start(dir: &Path) -> Serve {
        Serve(
            server::Serve::bare()
                .cwd(dir)
                .env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .start(),
        )
    }

    /// What it printed on stdout and stderr.
    fn output(&self) -> String {
        format!("{}{}", self.0.stdout(), self.0.log())
    }

    /// Status and body (0 when nothing answers), with Basic credentials.
    fn get(&self, path: &str, basic: Option<&str>) -> (u16, String) {
        match basic {
            Some(b) => self.0.get_as(path, &format!("Basic {b}")),
            None => self.0.get(path),
        }
        .unwrap_or((0, String::new()))
    }
}

fn basic(user: &str, password: &str) -> String {
    data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
}

/// The `access` claim of a token response, as `name:actions` strings, leaving
/// out resources granted no action.
fn granted(body: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {body}"));
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap();
    claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            format!("{}:{}", a["name"].as_str().unwrap(), actions.join(","))
        })
        .filter(|g| !g.ends_with(':'))
        .collect()
}

fn shipped(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

#[test]
fn serve_starts_in_an_empty_directory_and_writes_the_default_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var-lib-berth");
    std::fs::create_dir(&dir).unwrap();
    let serve = Serve::start(&dir);

    // The shipped policy, its tests and README, next to keys and database.
    assert_eq!(
        std::fs::read_to_string(dir.join("policies/default.toml")).unwrap(),
        shipped("policies/default.toml")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("policies/tests/default.toml")).unwrap(),
        shipped("policies/tests/default.toml")
    );
    assert!(dir.join("data/berth.db").is_file());
    let key = std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "key"))
        .expect("a private key in keys/");
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    // The database, its WAL and the directories holding secrets are berth's alone.
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("data/berth.db"), 0o600);
    assert_eq!(mode("data/berth.db-wal"), 0o600);
    assert_eq!(mode("data"), 0o700);
    assert_eq!(mode("keys"), 0o700);
    assert!(
        !serve.output().contains("readable beyond"),
        "a fresh start warns about its own files:\n{}",
        serve.output()
    );
    assert!(
        serve
            .output()
            .contains("Wrote the default policy to policies/default.toml"),
        "start-up says where the policy went:\n{}",
        serve.output()
    );

    // The default policy is in force: admin (group admins) gets everything asked,
    // anonymous gets nothing.
    let (status, body) = serve.get(
        "/token?service=registry&scope=repository:team/app:pull,push&scope=registry:catalog:*",
        Some(&basic("admin", ADMIN_PASSWORD)),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(granted(&body), ["team/app:pull,push", "catalog:*"]);
    let (status, body) = serve.get(
        "/token?service=registry&scope=repository:team/app:pull",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(granted(&body).is_empty(), "anonymous got {body}");

    // The policy commands now read the written directory.
    let lint = berth_in(&dir, &["policy", "lint"], &[], None);
    assert!(lint.success(), "{lint}");
    assert!(lint.stdout.contains("policies: 2 rules"), "{lint}");
    drop(serve);

    // A database copied in with a loose mode is named at the next start.
    std::fs::set_permissions(
        dir.join("data/berth.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // A restart leaves the operator's edits alone.
    let edited = "# the operator's policy\n[[rule]]\nid = \"pull-all\"\nallow = [\"pull\"]\n";
    std::fs::write(dir.join("policies/default.toml"), edited).unwrap();
    let serve = Serve::start(&dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("policies/default.toml")).unwrap(),
        edited
    );
    assert!(!serve.output().contains("Wrote the default policy"));
    assert!(
        serve
            .output()
            .contains("berth.db is readable beyond berth's user (mode 0644)"),
        "no warning about a world-readable database:\n{}",
        serve.output()
    );
}

#[test]
fn policy_commands_in_an_empty_directory_use_the_builtin_default_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let runs = [
        berth_in(dir, &["policy", "lint"], &[], None),
        berth_in(dir, &["policy", "test"], &[], None),
        berth_in(
            dir,
            &[
                "policy",
                "check",
                "--account",
                "alice",
                "--scope",
                "repository:alice/app:pull,push",
                "--scope",
                "repository:bob/app:pull",
            ],
            &[],
            None,
        ),
    ];
    for out in &runs {
        assert!(out.success(), "{out}");
        assert!(
            out.stderr.contains("using the built-in default policy"),
            "says it uses the built-in policy: {out}"
        );
    }
    assert!(
        runs[0]
            .stdout
            .contains("(built-in default policy): 2 rules, no findings"),
        "{}",
        runs[0]
    );
    assert!(runs[1].stdout.contains(" passed, 0 failed"), "{}", runs[1]);
    assert!(
        runs[2]
            .stdout
            .contains("repository:alice/app:pull,push -> pull, push"),
        "{}",
        runs[2]
    );
    assert!(
        runs[2]
            .stdout
            .contains("repository:bob/app:pull -> (nothing)"),
        "{}",
        runs[2]
    );
    assert!(
        std::fs::read_dir(dir).unwrap().next().is_none(),
        "a policy command wrote into the directory"
    );
}

#[test]
fn an_explicit_policy_directory_that_is_missing_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["policy", "lint", "--policies", "nowhere"],
        vec!["policy", "test", "--policies", "nowhere"],
    ] {
        let out = berth_in(tmp.path(), &args, &[], None);
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(out.stderr.contains("nowhere"), "{out}");
        assert!(out.stderr.contains("cannot read policy directory"), "{out}");
    }
    // So is a configured one that exists but is a file.
    std::fs::write(tmp.path().join("policies"), "not a directory").unwrap();
    let out = berth_in(tmp.path(), &["policy", "lint"], &[], None);
    assert_eq!(out.code(), Some(1), "{out}");
}

#[test]
fn serve_help_names_where_each_file_goes() {
    let out = berth_in(Path::new("/"), &["serve", "--help"], &[], None);
    assert!(out.success(), "{out}");
    for needle in [
        "data/berth.db",
        "keys/",
        "policies/",
        "BERTH_CONFIG",
        "BERTH_DATABASE",
        "BERTH_KEYS_DIR",
        "BERTH_POLICIES_DIR",
        "127.0.0.1:5001",
    ] {
        assert!(
            out.stdout.contains(needle),
            "`berth serve --help` lacks {needle}:\n{out}"
        );
    }
}
