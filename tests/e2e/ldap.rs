//! berth with a real OpenLDAP directory (`[[ldap]]`): docker through a real
//! registry, group-based policy, injection attempts, bad input, the directory
//! stopped and restarted under load, StartTLS and ldaps with a test CA, a
//! certificate for another host, refresh tokens re-checked against the
//! directory, an Active Directory-style schema, and `berth ldap check`.
//!
//! Every test starts its own slapd (see [`slapd`]) and berth.

mod burst;
mod outage;
mod safety;
mod sessions;
mod slapd;
mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::components::{
    granted, jwt_claims, rt, tools_available, Berth, Stack, DOCKER_BIN, REGISTRY_BIN, SERVICE,
};
use crate::{docker_config, docker_load_image, docker_login, grants_nothing, DOCKER_TIMEOUT};
use slapd::{dir_password, Seed, Slapd, SERVICE_PW, SUFFIX};

const LOCAL_USER: &str = "localuser";
const LOCAL_PASSWORD: &str = "localuser-Secret-1";

/// The example policy: directory users own `<name>/**`, `ldap:team-a`/`-b`
/// their team namespaces, `ldap:registry-admins` everything.
fn example_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ldap/policies")
}

fn slapd_available(test: &str, more: &[&str]) -> bool {
    let mut tools = vec![slapd::SLAPD, "/usr/sbin/slapadd", "ldapadd", "ldapmodify"];
    tools.extend_from_slice(more);
    tools_available(test, &tools, false)
}

fn dn(uid: &str) -> String {
    format!("uid={uid},ou=people,{SUFFIX}")
}

/// A berth config file for `slapd`: the `people` directory over `url`, with
/// `extra` settings in its table and `top` settings before it.
fn write_config(slapd: &Slapd, url: &str, top: &str, extra: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-ldap-config.")
        .tempdir()
        .expect("tempdir")
        .keep();
    let secret = dir.join("bind-password");
    std::fs::write(&secret, format!("{SERVICE_PW}\n")).unwrap();
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"{top}
[[ldap]]
name = "ldap"
url = {url}
ca_file = "{ca}"
bind_dn = "{service}"
bind_password_file = "{secret}"
user_base = "ou=people,{SUFFIX}"
user_filter = "(&(objectClass=inetOrgPerson)(uid={{username}}))"
group_base = "ou=groups,{SUFFIX}"
group_filter = "(|(&(objectClass=posixGroup)(memberUid={{username}}))(&(objectClass=groupOfUniqueNames)(uniqueMember={{dn}})))"
connect_timeout = "3s"
search_timeout = "3s"
{extra}
"#,
            url = if url.starts_with('[') {
                url.to_owned()
            } else {
                format!("\"{url}\"")
            },
            ca = slapd.pki.ca_pem.display(),
            service = slapd::SERVICE_DN,
            secret = secret.display(),
        ),
    )
    .unwrap();
    config
}

fn start_berth(config: &Path, policies: &Path) -> Berth {
    let berth = Berth::start_with_env(policies, &[("BERTH_CONFIG", config.display().to_string())]);
    berth.add_user(LOCAL_USER, LOCAL_PASSWORD, &[]);
    berth
}

/// `GET /token` with Basic auth and `offline_token`; status and JSON body.
fn get_token(
    berth: &Berth,
    user: &str,
    password: &str,
    scopes: &[&str],
    offline: bool,
) -> (u16, Value) {
    let mut query: Vec<(&str, &str)> = vec![("service", SERVICE)];
    for s in scopes {
        query.push(("scope", s));
    }
    if offline {
        query.push(("offline_token", "true"));
    }
    send(berth, |c, url| {
        c.get(url).query(&query).basic_auth(user, Some(password))
    })
}

/// `POST /token` with the refresh grant.
fn refresh(berth: &Berth, token: &str, scope: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("service", SERVICE),
        ("client_id", "e2e"),
        ("scope", scope),
    ];
    send(berth, |c, url| c.post(url).form(&form))
}

fn send(
    berth: &Berth,
    build: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> (u16, Value) {
    let url = berth.realm();
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let resp = build(&client, &url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    })
}

#[track_caller]
fn expect(got: (u16, Value), want: u16, what: &str, berth: &Berth) -> Value {
    assert_eq!(
        got.0,
        want,
        "{what}: expected HTTP {want}, got {}: {}\n{}",
        got.0,
        got.1,
        berth.log_tail(30)
    );
    eprintln!("ok: {what} -> {want}");
    got.1
}
#[test]
fn ldap_docker_login_push_pull_and_group_policy() {
    if !slapd_available(
        "ldap-docker",
        &[REGISTRY_BIN, "dockerd", DOCKER_BIN, "skopeo"],
    ) || !tools_available("ldap-docker", &[], true)
    {
        return;
    }
    let dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    // StartTLS on the plain port, verified against the test CA.
    let config = write_config(&dir, &dir.url(), "", "");
    let started = Instant::now();
    let s = Stack::with_berth(true, start_berth(&config, &example_policies()), started);
    let d = s.dockerd.as_ref().unwrap();
    let cfg = s.path("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let host = s.registry.host.clone();
    let own = docker_load_image(&s, d, &cfg, "alice/app:v1", "ldap docker image");

    s.expect_denied(
        &docker_login(&s, d, &cfg, "alice", "wrong-password"),
        "docker login as directory user alice, wrong password",
    );
    s.expect_ok(
        &docker_login(&s, d, &cfg, "alice", &dir_password("alice")),
        "docker login as directory user alice",
    );
    let (text, conf) = docker_config(&cfg);
    let idt = conf["auths"][&host]["identitytoken"]
        .as_str()
        .unwrap_or_default();
    assert!(
        idt.starts_with("ldap."),
        "docker should keep a directory refresh token, not the password: {text}"
    );
    assert!(
        !text.contains(&dir_password("alice")),
        "password on disk: {text}"
    );

    let out = d.docker(&cfg, &["push", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(
        &out,
        "docker push alice/app (kind directory owns its namespace)",
    );
    let team = s.image("team-a/app:v1");
    s.expect_ok(
        &d.docker(&cfg, &["tag", &own, &team], None, DOCKER_TIMEOUT),
        "tag",
    );
    let out = d.docker(&cfg, &["push", &team], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker push team-a/app (memberOf group ldap:team-a)");
    let other = s.image("team-b/app:v1");
    s.expect_ok(
        &d.docker(&cfg, &["tag", &own, &other], None, DOCKER_TIMEOUT),
        "tag",
    );
    let out = d.docker(&cfg, &["push", &other], None, DOCKER_TIMEOUT);
    s.expect_denied(&out, "docker push team-b/app by alice (not in team-b)");
    s.expect_ok(&d.docker(&cfg, &["rmi", &own], None, DOCKER_TIMEOUT), "rmi");
    let out = d.docker(&cfg, &["pull", &own], None, DOCKER_TIMEOUT);
    s.expect_ok(&out, "docker pull alice/app with the refresh token");

    // bob's group comes from the group search (posixGroup memberUid).
    let body = expect(
        get_token(
            &s.berth,
            "bob",
            &dir_password("bob"),
            &["repository:team-b/app:pull,push"],
            false,
        ),
        200,
        "bob asks for team-b",
        &s.berth,
    );
    assert_eq!(granted(&body, "team-b/app"), ["pull", "push"], "{body}");

    // carol is in the directory group `admins`: with the default prefix that is
    // `ldap:admins`, which the shipped policy's local `admins` rule never sees.
    let body = expect(
        get_token(
            &s.berth,
            "carol",
            &dir_password("carol"),
            &["registry:catalog:*", "repository:alice/app:pull,push"],
            false,
        ),
        200,
        "carol (directory group admins) asks for the catalog and alice/app",
        &s.berth,
    );
    assert!(
        grants_nothing(&jwt_claims(body["token"].as_str().unwrap())),
        "{body}"
    );
    let body = expect(
        get_token(
            &s.berth,
            "frank",
            &dir_password("frank"),
            &["registry:catalog:*"],
            false,
        ),
        200,
        "frank (ldap:registry-admins) asks for the catalog",
        &s.berth,
    );
    assert_eq!(granted(&body, "catalog"), ["*"], "{body}");

    for (user, why) in [
        ("dave", "userAccountControl disabled"),
        ("erin", "shadowExpire passed"),
    ] {
        expect(
            get_token(&s.berth, user, &dir_password(user), &[], false),
            401,
            &format!("{user} ({why}) with the right password"),
            &s.berth,
        );
    }
    let log = s.berth.log();
    assert!(!log.contains(SERVICE_PW), "service password in berth's log");
    assert!(
        !log.contains(&dir_password("alice")),
        "user password in berth's log"
    );
}

#[test]
fn ldap_active_directory_style_accounts() {
    if !slapd_available("ldap-ad", &[]) {
        return;
    }
    let dir = Slapd::start(&Seed::default(), &["127.0.0.1"]);
    let config = write_config(&dir, &dir.url(), "", "")
        .to_str()
        .unwrap()
        .to_owned();
    // Replace the people directory with an AD-style one over ou=corp.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace(
            &format!("user_base = \"ou=people,{SUFFIX}\""),
            &format!("user_base = \"ou=corp,{SUFFIX}\"\nactive_directory = true\ngroups_prefix = \"corp:\""),
        )
        .lines()
        .filter(|l| !l.starts_with("user_filter") && !l.starts_with("group_"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    std::fs::write(&config, text).unwrap();
    let berth = start_berth(Path::new(&config), &example_policies());
    let body = expect(
        get_token(
            &berth,
            "grace",
            &dir_password("grace"),
            &["repository:grace/app:push"],
            false,
        ),
        200,
        "grace (sAMAccountName Grace) signs in as grace",
        &berth,
    );
    assert_eq!(granted(&body, "grace/app"), ["push"], "{body}");
    let out = berth.cli(
        &["ldap", "check", "--user", "Grace", "--password-stdin"],
        Some(&format!("{}\n", dir_password("grace"))),
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("account  grace (kind directory)"),
        "{out}"
    );
    // "Registry Pushers" has a space: not a usable group name, left out.
    assert!(out.stdout.contains("groups   corp:team-corp\n"), "{out}");
    expect(
        get_token(&berth, "heidi", &dir_password("heidi"), &[], false),
        401,
        "heidi (userAccountControl 514)",
        &berth,
    );
    expect(
        get_token(&berth, "ivan", &dir_password("ivan"), &[], false),
        401,
        "ivan (accountExpires passed)",
        &berth,
    );
}
