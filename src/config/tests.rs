//! Unit tests of loading, layering and validation.
#![allow(clippy::unwrap_used, clippy::panic)]
use super::*;
use std::collections::HashMap;

struct MapEnv(HashMap<&'static str, &'static str>);
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|s| s.to_string())
    }
}
fn no_env() -> MapEnv {
    MapEnv(HashMap::new())
}
fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new("berth.toml"), text, &no_env())
}

#[test]
fn defaults_need_no_file() {
    let c = Config::load_with(None, &no_env()).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:5001");
    assert_eq!(c.database, Database::Sqlite(PathBuf::from("data/berth.db")));
    assert_eq!(c.token_ttl, Duration::from_secs(300));
    assert_eq!(c.services[0].name, "registry");
    assert_eq!(c.services[0].key_id, KeyIdMode::Libtrust);
    assert_eq!(c.realm(), "http://127.0.0.1:5001/token");
}

#[test]
fn file_and_env() {
    let env = MapEnv(HashMap::from([("BERTH_ISSUER", "env-issuer")]));
    let c = Config::from_toml(
        Path::new("b.toml"),
        "issuer = 'file'\ntoken_ttl = '10m'\n[[service]]\nname = 'reg'\nkey_id = 'x5c'\n",
        &env,
    )
    .unwrap();
    assert_eq!(c.issuer, "env-issuer");
    assert_eq!(c.token_ttl, Duration::from_secs(600));
    assert_eq!(c.services[0].key_id, KeyIdMode::X5c);
    assert!(!c.services[0].expand_wildcard && !c.services[0].audience_list);
    assert_eq!(c.key_publish_delay, Duration::from_secs(3600));
}

#[test]
fn per_service_settings() {
    let c = parse(
        "key_publish_delay = '5m'\n[[service]]\nname = 'zot'\nkey_id = 'x5c'\n\
         expand_wildcard = true\naudience_list = true\n[[service]]\nname = 'd2'\n",
    )
    .unwrap();
    assert!(c.services[0].expand_wildcard && c.services[0].audience_list);
    assert!(!c.services[1].expand_wildcard && !c.services[1].audience_list);
    assert_eq!(c.key_publish_delay, Duration::from_secs(300));
    assert!(parse("[[service]]\nname='a'\nexpand_wildcard='yes'").is_err());
}

#[test]
fn errors_name_the_key() {
    let e = parse("token_ttl = '30s'").unwrap_err().to_string();
    assert!(e.contains("token_ttl"), "{e}");
    let e = parse("listen = 'nope'").unwrap_err().to_string();
    assert!(e.contains("listen"), "{e}");
    let e = parse("bogus = 1").unwrap_err().to_string();
    assert!(e.contains("bogus") && e.contains("line"), "{e}");
    let e = parse("[[service]]\nname='a'\nkey_id='jwk'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("jwk"), "{e}");
    let e = parse("[[service]]\nname='a'\n[[service]]\nname='a'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("service[1]"), "{e}");
    let e = parse("database = 'mysql://x'").unwrap_err().to_string();
    assert!(e.contains("database"), "{e}");
    let c = parse("database = 'postgres://berth:s3cret@db:5432/berth'").unwrap();
    assert!(!format!("{:?} {}", c.database, c.database).contains("s3cret"));
    assert!(c.database.to_string().contains("berth:***@db:5432/berth"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("5y").is_err());
    assert!(parse_duration("99999999999999999999d").is_err());
}

proptest::proptest! {
    #[test]
    fn config_parser_never_panics(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }
}

fn env(pairs: &[(&'static str, &'static str)]) -> MapEnv {
    MapEnv(pairs.iter().copied().collect())
}

/// An environment whose values are owned (paths of temporary files).
struct OwnedEnv(HashMap<String, String>);
impl Env for OwnedEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

#[test]
fn every_key_has_its_variable() {
    // Also the settings that had none before.
    let e = env(&[
        ("BERTH_MAX_SCOPES", "64"),
        ("BERTH_HASH_CONCURRENCY", "4"),
        ("BERTH_LOGIN_FAILURE_LIMIT", "3"),
        ("BERTH_ROBOT_PREFIX", "bot+"),
        ("BERTH_AUDIT_QUEUE", "7"),
        ("BERTH_AUDIT_REQUIRED", "true"),
        ("BERTH_GENERATION_LISTENER", "false"),
        ("BERTH_CREDENTIAL_CACHE_SIZE", "5"),
        ("BERTH_MAX_CONNECTIONS", "1000"),
        ("BERTH_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7"),
        ("BERTH_AUTH_ORDER", "ldap,local"),
        ("BERTH_NAME_CONFLICT", "allow"),
    ]);
    let c = Config::load_with(None, &e).unwrap();
    assert_eq!(c.max_scopes, 64);
    assert_eq!(c.hash_concurrency, 4);
    assert_eq!(c.login_failure_limit, 3);
    // The wider limits follow the per-address one.
    assert_eq!(c.login_failure_account_limit, 30);
    assert_eq!(c.robot_prefix, "bot+");
    assert_eq!(c.audit_queue, 7);
    assert!(c.audit_required);
    assert!(!c.generation_listener);
    assert_eq!(c.credential_cache_size, 5);
    assert_eq!(c.edge.max_connections, 1000);
    assert_eq!(c.trusted_proxies.len(), 2);
    use crate::config::oidc::{Backend, NameConflict};
    assert_eq!(c.oidc.order, vec![Backend::Ldap, Backend::Local]);
    assert_eq!(c.oidc.name_conflict, NameConflict::Allow);
}

#[test]
fn the_variable_rule_covers_every_file_key() {
    // Every scalar key of the file is read from BERTH_<KEY>, by one rule.
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("db");
    std::fs::write(&secret, "x.db\n").unwrap();
    let mut vars = HashMap::new();
    let keys: Vec<&str> = raw::keys()
        .iter()
        .copied()
        .filter(|k| !raw::TABLE_KEYS.contains(k))
        .collect();
    assert!(keys.len() > 30 && keys.contains(&"max_scopes"), "{keys:?}");
    for k in keys.iter().filter(|k| **k != "database") {
        vars.insert(env_var(k), "1".to_owned());
    }
    vars.insert(env_var("database_file"), secret.display().to_string());
    let layered = load::layer(None, &OwnedEnv(vars)).unwrap();
    for k in keys
        .iter()
        .filter(|k| **k != "database" && **k != "database_file")
    {
        assert_eq!(layered.sources.of(k), &Source::Env(env_var(k)), "{k}");
    }
    assert_eq!(layered.raw.database.as_deref(), Some("x.db"));
}

#[test]
fn environment_wins_over_file_and_sources_say_so() {
    let e = env(&[("BERTH_MAX_SCOPES", "64"), ("BERTH_ISSUER", "env-issuer")]);
    let loaded = Config::explain(
        Some((
            Path::new("/etc/berth/berth.toml"),
            "max_scopes = 16\nissuer = 'file'\ntoken_ttl = '10m'\n",
        )),
        &e,
    )
    .unwrap();
    assert_eq!(loaded.config.max_scopes, 64);
    assert_eq!(loaded.config.issuer, "env-issuer");
    assert_eq!(loaded.config.token_ttl, Duration::from_secs(600));
    let s = &loaded.sources;
    assert_eq!(s.of("max_scopes"), &Source::Env("BERTH_MAX_SCOPES".into()));
    assert_eq!(
        s.of("token_ttl"),
        &Source::File(PathBuf::from("/etc/berth/berth.toml"))
    );
    assert_eq!(s.of("listen"), &Source::Default);
}

#[test]
fn bad_variables_name_the_key_and_the_variable() {
    let e = Config::load_with(None, &env(&[("BERTH_MAX_SCOPES", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_scopes") && e.contains("BERTH_MAX_SCOPES"),
        "{e}"
    );
    let e = Config::load_with(None, &env(&[("BERTH_MAX_SCOPES", "1000")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`max_scopes`")
            && e.contains("between 1 and 256")
            && e.contains("BERTH_MAX_SCOPES"),
        "{e}"
    );
    let e = Config::load_with(None, &env(&[("BERTH_AUDIT_REQUIRED", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("audit_required") && e.contains("BERTH_AUDIT_REQUIRED"),
        "{e}"
    );
    let e = Config::load_with(None, &env(&[("BERTH_TRUSTED_PROXIES", "10.0.0.0/99")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trusted_proxies") && e.contains("BERTH_TRUSTED_PROXIES"),
        "{e}"
    );
    // A variable that names no setting is not an error (as before): BERTH_*
    // also names test and tool settings.
    Config::load_with(None, &env(&[("BERTH_NO_SUCH_SETTING", "1")])).unwrap();
}

#[test]
fn toml_errors_keep_their_caret_diagram() {
    let e = parse("issuer = 'a'\nbogus = 1\n").unwrap_err().to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert!(lines.len() >= 4, "{e}");
    assert!(
        lines[0].starts_with("berth.toml: ") && lines[0].contains("line 2"),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("2 | bogus = 1")),
        "{e}"
    );
    assert!(lines.iter().any(|l| l.trim_end().ends_with("^^^^^")), "{e}");
    assert!(e.contains("unknown field `bogus`"), "{e}");
    let e = parse("max_scopes = 'many'").unwrap_err().to_string();
    assert!(
        e.contains('\n') && e.contains("max_scopes") && e.contains('^'),
        "{e}"
    );
}

#[test]
fn database_url_from_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("db-url");
    std::fs::write(&file, "postgres://berth:s3cret@db:5432/berth\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let vars = |pairs: &[(&str, String)]| {
        OwnedEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let path = file.display().to_string();

    let loaded =
        Config::load_explained(None, &vars(&[("BERTH_DATABASE_FILE", path.clone())])).unwrap();
    assert_eq!(
        loaded.config.database,
        Database::Postgres("postgres://berth:s3cret@db:5432/berth".into())
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.sources.of("database"),
        &Source::SecretFile {
            named_by: "BERTH_DATABASE_FILE".into(),
            path: file.clone()
        }
    );
    let shown = render(&loaded);
    assert!(
        !shown.contains("s3cret") && shown.contains("berth:***@db:5432"),
        "{shown}"
    );
    assert!(shown.contains("BERTH_DATABASE_FILE"), "{shown}");

    // Others may read it: used, with a warning like the one for private keys.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loaded =
        Config::load_explained(None, &vars(&[("BERTH_DATABASE_FILE", path.clone())])).unwrap();
    assert!(
        loaded.warnings.len() == 1 && loaded.warnings[0].contains("0644"),
        "{:?}",
        loaded.warnings
    );

    // The environment's file wins over the file's URL; the same layer twice is an error.
    let c = Config::from_toml(
        Path::new("b.toml"),
        "database = 'other.db'",
        &vars(&[("BERTH_DATABASE_FILE", path.clone())]),
    )
    .unwrap();
    assert!(matches!(c.database, Database::Postgres(_)));
    let c = Config::from_toml(
        Path::new("b.toml"),
        &format!("database_file = '{path}'"),
        &vars(&[("BERTH_DATABASE", "env.db".into())]),
    )
    .unwrap();
    assert_eq!(c.database, Database::Sqlite("env.db".into()));
    let e = Config::from_toml(
        Path::new("b.toml"),
        &format!("database = 'a.db'\ndatabase_file = '{path}'"),
        &no_env(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("set only one of database and database_file"),
        "{e}"
    );

    // A missing file names the variable and the path, and never a secret.
    let e = Config::load_with(
        None,
        &vars(&[("BERTH_DATABASE_FILE", "/nonexistent/db-url".into())]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("BERTH_DATABASE_FILE") && e.contains("/nonexistent/db-url"),
        "{e}"
    );
}

#[test]
fn admin_password_from_variable_or_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pw");
    std::fs::write(&file, "from-file\n").unwrap();
    let path = file.display().to_string();
    let vars = |pairs: &[(&str, &str)]| {
        OwnedEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let v = "BERTH_ADMIN_PASSWORD";
    assert_eq!(env_secret(&vars(&[]), v).unwrap().0, None);
    assert_eq!(
        env_secret(&vars(&[(v, "direct")]), v).unwrap().0.as_deref(),
        Some("direct")
    );
    assert_eq!(
        env_secret(&vars(&[("BERTH_ADMIN_PASSWORD_FILE", &path)]), v)
            .unwrap()
            .0
            .as_deref(),
        Some("from-file")
    );
    let e = env_secret(
        &vars(&[(v, "direct"), ("BERTH_ADMIN_PASSWORD_FILE", &path)]),
        v,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("set only one") && !e.contains("direct"), "{e}");
    let e = env_secret(
        &vars(&[("BERTH_ADMIN_PASSWORD_FILE", "/nonexistent/pw")]),
        v,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("BERTH_ADMIN_PASSWORD_FILE") && e.contains("/nonexistent/pw"),
        "{e}"
    );
}

#[test]
fn show_names_sources_and_hides_secrets() {
    let e = env(&[
        ("BERTH_DATABASE", "postgres://berth:hunter2-pw@db/berth"),
        ("BERTH_MAX_SCOPES", "64"),
    ]);
    let text = "token_ttl = '10m'\n[[service]]\nname = 'reg'\n\
                [[oidc]]\nissuer = 'https://kc.example.com/realms/a'\nclient_id = 'berth'\n\
                client_secret_env = 'KC_SECRET'\n";
    let loaded = Config::explain(Some((Path::new("/etc/berth.toml"), text)), &e).unwrap();
    let shown = render(&loaded);
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {shown}"))
            .to_owned()
    };
    assert!(
        line("max_scopes").contains("= 64")
            && line("max_scopes").ends_with("# environment BERTH_MAX_SCOPES")
    );
    assert!(
        line("token_ttl").contains("\"10m\"")
            && line("token_ttl").ends_with("# file /etc/berth.toml")
    );
    assert!(line("listen").ends_with("# default"));
    assert!(line("database").contains("berth:***@db/berth"));
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("client_secret_env = \"KC_SECRET\""),
        "{shown}"
    );
    assert!(shown.contains("name = \"reg\""), "{shown}");
    // The rendering is TOML that loads back to the same settings.
    let body: String = shown
        .lines()
        .filter(|l| !l.starts_with("database ="))
        .map(|l| format!("{}\n", l.split(" # ").next().unwrap_or(l)))
        .collect();
    let again = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(again.max_scopes, 64);
    assert_eq!(again.token_ttl, loaded.config.token_ttl);
    assert_eq!(again.services, loaded.config.services);
}

#[test]
fn show_lists_every_setting() {
    // A setting added to the file format must be added to `config show` too.
    let shown = render(&Config::explain(None, &no_env()).unwrap());
    for key in raw::keys()
        .iter()
        .filter(|k| !raw::TABLE_KEYS.contains(k) && **k != "database_file")
    {
        assert!(
            shown.lines().any(|l| l.starts_with(&format!("{key} = "))
                || l.starts_with(&format!("# {key} is not set"))),
            "config show lacks {key}:\n{shown}"
        );
    }
}

#[test]
fn services_keep_their_own_source() {
    let e = env(&[("BERTH_SERVICE", "from-env")]);
    let loaded = Config::explain(
        Some((Path::new("b.toml"), "[[service]]\nname = 'from-file'\n")),
        &e,
    )
    .unwrap();
    let names: Vec<&str> = loaded
        .config
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["from-env", "from-file"]);
    let shown = render(&loaded);
    let headers: Vec<&str> = shown
        .lines()
        .filter(|l| l.starts_with("[[service]]"))
        .collect();
    assert!(
        headers[0].ends_with("# environment BERTH_SERVICE"),
        "{shown}"
    );
    assert!(headers[1].ends_with("# file b.toml"), "{shown}");
}

#[test]
fn provider_secret_files_others_can_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("kc-secret");
    std::fs::write(&secret, "s\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o604)).unwrap();
    let text = format!(
        "[[oidc]]\nissuer = 'https://kc.example.com/realms/a'\nclient_id = 'berth'\n\
         client_secret_file = '{}'\n",
        secret.display()
    );
    let loaded = Config::explain(Some((Path::new("b.toml"), &text)), &no_env()).unwrap();
    assert!(
        loaded.warnings.len() == 1 && loaded.warnings[0].contains("kc-secret"),
        "{:?}",
        loaded.warnings
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = Config::explain(Some((Path::new("b.toml"), &text)), &no_env()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn registry_url_is_a_plain_registry_address() {
    let c = parse(
        "[[service]]\nname = 'reg'\nregistry_url = 'registry.example.com:5000'\n\
         [[service]]\nname = 'other'\n",
    )
    .unwrap();
    assert_eq!(
        c.services[0].registry_url.as_deref(),
        Some("registry.example.com:5000")
    );
    assert_eq!(c.services[1].registry_url, None);
    for ok in ["https://reg.example.com", "[::1]:5000", "127.0.0.1:5000/v2"] {
        assert!(
            parse(&format!("[[service]]\nname='a'\nregistry_url='{ok}'")).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "",
        "reg example",
        "reg;rm -rf",
        "-x",
        "https://",
        "reg$(id)",
    ] {
        let e = parse(&format!("[[service]]\nname='a'\nregistry_url='{bad}'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("service[0].registry_url"), "{bad}: {e}");
    }
}
