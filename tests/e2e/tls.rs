//! An HTTPS realm: berth terminates TLS itself, a `docker-registry` (also on
//! HTTPS, its own CA) sends skopeo to `https://127.0.0.1:PORT/token`.
//!
//! The client fetches tokens from the realm with the TLS settings it uses for
//! the registry (containers/image: `--cert-dir`, every `*.crt` in it is a CA),
//! so the registry and berth have certificates from two different test CAs:
//! trusting only the registry's CA must fail at the realm, trusting both must
//! work. Then berth's certificate is replaced on disk and SIGHUP makes berth
//! serve the new one without a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{ClientEnv, TRANSFER_TIMEOUT};
use crate::common::proc::{free_port, run, Daemon, Out};
use crate::components::{rt, tools_available, ISSUER, REGISTRY_BIN, SERVICE};
use crate::image::{config_digest_in_layout, write_oci_image};

const BERTH_BIN: &str = env!("CARGO_BIN_EXE_berth");
const ALICE: (&str, &str) = ("alice", "alice-Tls-Secret-1");

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost, written as
    /// `cert_path` / `key_path`. Returns the certificate's DER.
    fn issue(&self, cert_path: &Path, key_path: &Path) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        // Write the key first: a reload between the two writes must never pair
        // the new certificate with the old key (berth would refuse it anyway).
        std::fs::write(key_path, key.serialize_pem()).unwrap();
        std::fs::write(cert_path, cert.pem()).unwrap();
        cert.der().to_vec()
    }
}

/// `berth serve` with TLS, killed on drop.
struct TlsBerth {
    child: Child,
    port: u16,
    env: Vec<(String, String)>,
}

impl Drop for TlsBerth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl TlsBerth {
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let mut cmd = Command::new(BERTH_BIN);
        cmd.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        run(&mut cmd, stdin, Duration::from_secs(60))
    }

    fn realm(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.port)
    }
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// Status and the server certificate (DER) of `GET url`, or `None` if it failed.
fn https_get(ca_pem: &str, url: &str) -> Option<(u16, Vec<u8>)> {
    rt().block_on(async {
        let res = https_client(ca_pem).get(url).send().await.ok()?;
        let cert = res
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Some((res.status().as_u16(), cert))
    })
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
    diag: impl Fn() -> String,
) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "{what} did not happen within {timeout:?}\n{}",
            diag()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn cert_dir(root: &Path, name: &str, cas: &[&Ca]) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, ca) in cas.iter().enumerate() {
        std::fs::write(dir.join(format!("ca{i}.crt")), ca.pem()).unwrap();
    }
    dir.display().to_string()
}

#[test]
fn skopeo_through_a_registry_with_an_https_realm_and_certificate_reload() {
    if !tools_available("tls", &[REGISTRY_BIN, "skopeo"], false) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-tls.")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let berth_ca = Ca::new("berth e2e CA");
    let registry_ca = Ca::new("registry e2e CA");

    // berth on HTTPS.
    let (berth_cert, berth_key) = (root.join("berth.crt"), root.join("berth.key"));
    let first_der = berth_ca.issue(&berth_cert, &berth_key);
    let port = free_port();
    let keys_dir = root.join("keys");
    let env: Vec<(String, String)> = [
        ("BERTH_LISTEN", format!("127.0.0.1:{port}")),
        (
            "BERTH_DATABASE",
            root.join("berth.db").display().to_string(),
        ),
        ("BERTH_KEYS_DIR", keys_dir.display().to_string()),
        (
            "BERTH_POLICIES_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .display()
                .to_string(),
        ),
        ("BERTH_ISSUER", ISSUER.to_string()),
        ("BERTH_SERVICE", SERVICE.to_string()),
        ("BERTH_PUBLIC_URL", format!("https://127.0.0.1:{port}")),
        ("BERTH_ADMIN_PASSWORD", "admin-Tls-Secret-1".to_string()),
        ("BERTH_TLS_CERT", berth_cert.display().to_string()),
        ("BERTH_TLS_KEY", berth_key.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let log = root.join("berth.log");
    let child = Command::new(BERTH_BIN)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let berth_log = {
        let log = log.clone();
        move || tail(&log)
    };
    let mut berth = TlsBerth { child, port, env };
    let readyz = format!("https://127.0.0.1:{port}/readyz");
    wait_for(
        "berth ready on HTTPS",
        Duration::from_secs(60),
        || {
            assert!(
                berth.child.try_wait().unwrap().is_none(),
                "berth exited during start-up"
            );
            matches!(https_get(&berth_ca.pem(), &readyz), Some((200, _)))
        },
        &berth_log,
    );
    let out = berth.cli(
        &["user", "add", ALICE.0, "--password-stdin"],
        Some(&format!("{}\n", ALICE.1)),
    );
    assert!(out.success(), "berth user add failed:\n{out}");

    // docker-registry on HTTPS with its own CA, realm on berth's HTTPS.
    let reg_port = free_port();
    let host = format!("127.0.0.1:{reg_port}");
    let (reg_cert, reg_key) = (root.join("registry.crt"), root.join("registry.key"));
    registry_ca.issue(&reg_cert, &reg_key);
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
         http:\n  addr: {host}\n  secret: berth-e2e-not-secret\n  tls:\n    certificate: {cert}\n    key: {key}\n\
         auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
        storage = root.join("storage").display(),
        cert = reg_cert.display(),
        key = reg_key.display(),
        realm = berth.realm(),
        bundle = keys_dir.join("bundle.pem").display(),
    );
    let config_path = root.join("registry.yml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = Command::new(REGISTRY_BIN);
    cmd.arg("serve").arg(&config_path);
    let registry = Daemon::spawn("docker-registry", cmd, root, Duration::from_secs(5));
    let v2 = format!("https://{host}/v2/");
    wait_for(
        "docker-registry answering 401 on HTTPS",
        Duration::from_secs(60),
        || matches!(https_get(&registry_ca.pem(), &v2), Some((401, _))),
        || registry.log_tail(40),
    );
    let diag = || format!("{}\n{}", berth_log(), registry.log_tail(30));

    let work = root.join("client");
    let c = ClientEnv::new(&work);
    let img = write_oci_image(&work.join("image"), "v1", "https realm e2e image");
    let registry_only = cert_dir(&work, "certs-registry-only", &[&registry_ca]);
    let both = cert_dir(&work, "certs-both", &[&registry_ca, &berth_ca]);
    let creds = format!("{}:{}", ALICE.0, ALICE.1);
    let target = format!("docker://{host}/alice/app:tls");
    let push = |certs: &str| {
        c.skopeo(
            &[
                "copy",
                "--dest-cert-dir",
                certs,
                "--dest-creds",
                &creds,
                &img.oci_ref(),
                &target,
            ],
            None,
            TRANSFER_TIMEOUT,
        )
    };

    // The registry is trusted but berth's certificate is not: the token
    // request to the realm fails on the certificate.
    let out = push(&registry_only);
    assert!(
        !out.success(),
        "push without trusting berth's CA succeeded\n{out}\n{}",
        diag()
    );
    let text = out.text().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("x509"),
        "push failed, but not on berth's certificate:\n{out}\n{}",
        diag()
    );
    eprintln!(
        "ok: realm certificate not trusted → refused: {}",
        out.stderr.trim()
    );

    let out = push(&both);
    assert!(
        out.success(),
        "push through the HTTPS realm failed\n{out}\n{}",
        diag()
    );
    eprintln!("ok: skopeo push via https realm ({:?})", out.elapsed);
    let pulled = work.join("pulled");
    let pull = |certs: &str| {
        c.skopeo(
            &[
                "copy",
                "--src-cert-dir",
                certs,
                "--src-creds",
                &creds,
                &target,
                &format!("oci:{}:pulled", pulled.display()),
            ],
            None,
            TRANSFER_TIMEOUT,
        )
    };
    let out = pull(&both);
    assert!(
        out.success(),
        "pull through the HTTPS realm failed\n{out}\n{}",
        diag()
    );
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        img.config_digest
    );

    // A wrong password through the HTTPS realm is refused as such.
    let out = c.skopeo(
        &[
            "inspect",
            "--cert-dir",
            &both,
            "--creds",
            &format!("{}:wrong-password", ALICE.0),
            &target,
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    assert!(!out.success());
    let text = out.text().to_lowercase();
    assert!(
        text.contains("unauthorized") || text.contains("401") || text.contains("invalid username"),
        "{out}"
    );

    // New certificate on disk, SIGHUP: berth serves it without a restart.
    let second_der = berth_ca.issue(&berth_cert, &berth_key);
    assert_ne!(first_der, second_der);
    let pid = berth.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(
        "berth serving the new certificate after SIGHUP",
        Duration::from_secs(15),
        || matches!(https_get(&berth_ca.pem(), &readyz), Some((200, der)) if der == second_der),
        &berth_log,
    );
    assert!(
        berth.child.try_wait().unwrap().is_none(),
        "berth exited on SIGHUP"
    );
    assert!(
        berth_log().contains("TLS certificate reloaded"),
        "{}",
        berth_log()
    );
    let out = c.skopeo(
        &["inspect", "--cert-dir", &both, "--creds", &creds, &target],
        None,
        TRANSFER_TIMEOUT,
    );
    assert!(
        out.success(),
        "inspect after the certificate reload failed\n{out}\n{}",
        diag()
    );
    eprintln!("ok: certificate reloaded on SIGHUP, clients still served");
    drop(registry);
}
