//! `berth config show`, `berth completions` and `berth man` as the real
//! binary: sources are named, secrets never printed, and the generated
//! completion scripts and man pages know the subcommands.

use std::path::Path;

use super::support::{berth_env, s};

/// Subcommands an operator completes most; every script and page must know them.
const SUBCOMMANDS: &[&str] = &[
    "serve", "user", "robot", "token", "policy", "doctor", "config",
];

#[test]
fn completions_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = berth_env(&["completions", shell], &[], None);
        assert!(out.success(), "{out}");
        for sub in SUBCOMMANDS {
            assert!(out.stdout.contains(sub), "{shell} lacks {sub}:\n{out}");
        }
        // Second level too: `berth user add`.
        assert!(out.stdout.contains("add"), "{shell}:\n{out}");
    }
    let bash = berth_env(&["completions", "bash"], &[], None);
    assert!(bash.stdout.contains("complete -F"), "{bash}");
    let out = berth_env(&["completions", "tcsh"], &[], None);
    assert_eq!(
        out.code(),
        Some(2),
        "an unknown shell is a usage error:\n{out}"
    );
}

#[test]
fn man_pages_know_the_subcommands() {
    let out = berth_env(&["man"], &[], None);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.starts_with(".ie") || out.stdout.contains(".TH berth 1"),
        "{out}"
    );
    for sub in SUBCOMMANDS {
        assert!(out.stdout.contains(sub), "man page lacks {sub}:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = berth_env(&["man", "--dir", s(&pages)], &[], None);
    assert!(out.success(), "{out}");
    for page in [
        "berth.1",
        "berth-serve.1",
        "berth-user-add.1",
        "berth-config-show.1",
    ] {
        let text = std::fs::read_to_string(pages.join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}\n{out}"));
        assert!(text.contains(".TH"), "{page}");
    }
    // The examples reach the pages of the commands operators use most.
    let add = std::fs::read_to_string(pages.join("berth-user-add.1")).unwrap();
    assert!(add.contains("berth user add alice"), "{add}");
}

#[test]
fn config_show_names_sources_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.toml");
    std::fs::write(&file, "token_ttl = '10m'\nmax_scopes = 16\n").unwrap();
    let url = dir.path().join("db-url");
    std::fs::write(
        &url,
        "postgres://berth:pw-never-shown@db.internal:5432/berth\n",
    )
    .unwrap();
    let env: &[(&str, &Path)] = &[
        ("BERTH_CONFIG", &file),
        ("BERTH_MAX_SCOPES", Path::new("64")),
        ("BERTH_DATABASE_FILE", &url),
        ("BERTH_ADMIN_PASSWORD", Path::new("admin-pw-never-shown")),
    ];
    let out = berth_env(&["config", "show"], env, None);
    assert!(out.success(), "{out}");
    let line = |key: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key}:\n{out}"))
            .to_owned()
    };
    let f = file.display().to_string();
    assert!(line("token_ttl").ends_with(&format!("# file {f}")), "{out}");
    let scopes = line("max_scopes");
    assert!(
        scopes.contains("= 64") && scopes.ends_with("# environment BERTH_MAX_SCOPES"),
        "{out}"
    );
    assert!(line("issuer").ends_with("# default"), "{out}");
    let db = line("database");
    assert!(
        db.contains("berth:***@db.internal:5432/berth")
            && db.contains("named by BERTH_DATABASE_FILE"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("never-shown") && !out.stderr.contains("never-shown"),
        "{out}"
    );
    // The secret file may be read by others: said, not fatal.
    assert!(
        out.stdout.contains("# warning:") && out.stdout.contains("db-url"),
        "{out}"
    );
}

#[test]
fn config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "issuer = 'a'\nbogus = 1\n").unwrap();
    let out = berth_env(&["config", "show"], &[("BERTH_CONFIG", &file)], None);
    assert_eq!(out.code(), Some(1), "{out}");
    // The caret diagram keeps its lines.
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines[0].contains("line 2, column 1"), "{out}");
    assert!(lines.iter().any(|l| l.trim() == "2 | bogus = 1"), "{out}");
    assert!(
        lines.iter().any(|l| l.trim_end().ends_with("| ^^^^^")),
        "{out}"
    );
    assert!(out.stderr.contains("unknown field `bogus`"), "{out}");

    let missing = dir.path().join("no-such-file");
    let out = berth_env(
        &["config", "show"],
        &[("BERTH_DATABASE_FILE", &missing)],
        None,
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("BERTH_DATABASE_FILE") && out.stderr.contains("no-such-file"),
        "{out}"
    );
    let out = berth_env(
        &["config", "show"],
        &[("BERTH_HASH_CONCURRENCY", Path::new("many"))],
        None,
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("hash_concurrency") && out.stderr.contains("BERTH_HASH_CONCURRENCY"),
        "{out}"
    );
}

/// `berth serve` with its database URL and the first admin's password read
/// from files, as container secrets give them: the admin signs in with the
/// password from the file, and nothing is printed of either.
#[test]
fn serve_reads_its_secrets_from_files() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let secret = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let db_file = secret(
        "db-url",
        &format!("{}\n", dir.join("state/berth.db").display()),
    );
    let pw_file = secret("admin-pw", "Pw-from-a-file-42\n");
    let mut serve = crate::common::server::Serve::bare()
        .cwd(dir)
        .env("BERTH_DATABASE_FILE", db_file.display().to_string())
        .env("BERTH_ADMIN_PASSWORD_FILE", pw_file.display().to_string())
        .start();
    let output = || format!("{}{}", serve.stdout(), serve.log());
    let get = |path: &str, auth: &str| serve.get_as(path, auth).map_or(0, |(status, _)| status);
    let basic = |user: &str, pw: &str| {
        format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{user}:{pw}").as_bytes())
        )
    };
    let token = "/token?service=registry&scope=registry:catalog:*";
    let ok = get(token, &basic("admin", "Pw-from-a-file-42"));
    let refused = get(token, &basic("admin", "Pw-from-a-file-42\n"));
    let text = output();
    serve.stop(std::time::Duration::from_secs(10));
    assert_eq!(ok, 200, "{text}");
    assert_eq!(refused, 401, "{text}");
    assert!(dir.join("state/berth.db").is_file(), "{text}");
    assert!(
        !text.contains("Pw-from-a-file-42") && text.contains("BERTH_ADMIN_PASSWORD"),
        "{text}"
    );
}
