//! Configuration files: the operations settings validate with errors naming
//! the key, and the example deployments' configurations stay valid.

use std::path::Path;
use std::time::Duration;

use crate::ops::NoEnv;

#[test]
fn ops_settings_validate() {
    let parse = |t: &str| berth::config::Config::from_toml(Path::new("b.toml"), t, &NoEnv);
    let c = parse(
        "trusted_proxies = ['10.0.0.0/8', '192.0.2.7']\nmetrics_listen = '127.0.0.1:9101'\nshutdown_timeout = '30s'\n",
    )
    .unwrap();
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.metrics_listen.unwrap().port(), 9101);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    let d = parse("").unwrap();
    assert_eq!(d.shutdown_timeout, Duration::from_secs(10));
    assert!(d.trusted_proxies.is_empty() && d.metrics_listen.is_none() && d.tls.is_none());
    let c = parse("tls_cert = 'a.crt'\ntls_key = 'a.key'\nlisten = '0.0.0.0:8443'\n").unwrap();
    assert!(c.tls.is_some());
    assert_eq!(c.public_url, "https://0.0.0.0:8443");
    for (text, key) in [
        ("trusted_proxies = ['10.0.0.0/99']", "trusted_proxies"),
        ("trusted_proxies = ['proxy.local']", "trusted_proxies"),
        ("metrics_listen = 'nope'", "metrics_listen"),
        ("metrics_listen = '127.0.0.1:5001'", "metrics_listen"),
        ("tls_cert = 'a.crt'", "tls_key"),
        ("tls_key = 'a.key'", "tls_cert"),
        ("shutdown_timeout = 'soon'", "shutdown_timeout"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

// ---------------------------------------------------------------------------
// The example deployments' configurations stay valid.

struct ExampleEnv;
impl berth::config::Env for ExampleEnv {
    fn var(&self, name: &str) -> Option<String> {
        // Secrets the examples take from the environment.
        (name == "BERTH_KEYCLOAK_SECRET").then(|| "example".to_owned())
    }
}

/// The text of a `key: |` block in a YAML file (indented by `indent` spaces).
fn yaml_block(yaml: &str, key: &str, indent: usize) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("no block {key}"));
    let pad = " ".repeat(indent);
    lines
        .take_while(|l| l.is_empty() || l.starts_with(&pad))
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_configurations_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    for file in ["systemd/berth.toml", "compose/berth.toml"] {
        let c = berth::config::Config::from_toml(Path::new(file), &read(file), &ExampleEnv)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(c.metrics_listen.is_some(), "{file}");
    }
    let k8s = read("kubernetes/configmap.yaml");
    let c = berth::config::Config::from_toml(
        Path::new("configmap berth.toml"),
        &yaml_block(&k8s, "berth.toml", 4),
        &ExampleEnv,
    )
    .unwrap();
    assert_eq!(c.trusted_proxies.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        yaml_block(&k8s, "default.toml", 4),
    )
    .unwrap();
    let policy = berth::policy::reload::PolicyHandle::load(dir.path()).unwrap();
    assert_eq!(policy.status().rules, 2);
    // The registry examples point at the same service and issuer as the
    // berth configurations.
    for file in [
        "registry/distribution2.yml",
        "registry/distribution3.yml",
        "registry/zot.json",
        "compose/registry.yml",
    ] {
        let text = read(file);
        assert!(text.contains("registry.example.com"), "{file}");
        assert!(text.contains("/token"), "{file}");
    }
}
