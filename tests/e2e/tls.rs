//! An HTTPS realm: berth terminates TLS itself, a `docker-registry` (also on
//! HTTPS, its own CA) sends skopeo to `https://127.0.0.1:PORT/token`.
//!
//! The client fetches tokens from the realm with the TLS settings it uses for
//! the registry (containers/image: `--cert-dir`, every `*.crt` in it is a CA),
//! so the registry and berth have certificates from two different test CAs:
//! trusting only the registry's CA must fail at the realm, trusting both must
//! work. Then berth's certificate is replaced on disk and SIGHUP makes berth
//! serve the new one without a restart. Each rule is a test of its own on a
//! fresh pair (berth and the registry start in a second or two).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{ClientEnv, TRANSFER_TIMEOUT};
use crate::common::proc::{free_port, Daemon, Out};
use crate::common::server::{BerthProcess, Serve};
use crate::components::{rt, tools_available, ISSUER, REGISTRY_BIN, SERVICE};
use crate::image::{config_digest_in_layout, write_oci_image, OciImage};
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

/// berth on HTTPS (certificate from its own CA) with alice, a docker-registry
/// on HTTPS (another CA) whose realm is berth's HTTPS token endpoint, and a
/// skopeo client with an image to push. Fields drop in order: the registry
/// before berth, the temp directory last.
struct TlsSetup {
    registry: Daemon,
    berth: BerthProcess,
    berth_ca: Ca,
    berth_cert: PathBuf,
    berth_key: PathBuf,
    /// The certificate berth served first (DER).
    first_der: Vec<u8>,
    client: ClientEnv,
    image: OciImage,
    /// A `--cert-dir` trusting only the registry's CA.
    registry_only: String,
    /// A `--cert-dir` trusting both CAs.
    both: String,
    creds: String,
    /// `docker://HOST/alice/app:tls`.
    target: String,
    work: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsSetup {
    /// `None` when a tool is missing (a failure under `BERTH_E2E=require`).
    fn start(test: &str) -> Option<TlsSetup> {
        if !tools_available(test, &[REGISTRY_BIN, "skopeo"], false) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-tls.")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let berth_ca = Ca::new("berth e2e CA");
        let registry_ca = Ca::new("registry e2e CA");

        // berth on HTTPS.
        let (berth_cert, berth_key) = (root.join("berth.crt"), root.join("berth.key"));
        let first_der = berth_ca.issue(&berth_cert, &berth_key);
        let serve = Serve::new(SERVICE, ISSUER, "admin-Tls-Secret-1");
        let public = format!("https://127.0.0.1:{}", serve.port());
        let mut berth = serve
            .env("BERTH_PUBLIC_URL", public.clone())
            .env("BERTH_TLS_CERT", berth_cert.display().to_string())
            .env("BERTH_TLS_KEY", berth_key.display().to_string())
            .spawn();
        let readyz = format!("{public}/readyz");
        let started = Instant::now();
        while !matches!(https_get(&berth_ca.pem(), &readyz), Some((200, _))) {
            assert!(
                berth.running(),
                "berth exited during start-up\n{}",
                berth.log_tail(40)
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "berth not ready on HTTPS within 60 s\n{}",
                berth.log_tail(40)
            );
            thread::sleep(Duration::from_millis(200));
        }
        berth.add_user(ALICE.0, ALICE.1, &[]);

        // docker-registry on HTTPS with its own CA, realm on berth's HTTPS.
        let host = format!("127.0.0.1:{}", free_port());
        let (reg_cert, reg_key) = (root.join("registry.crt"), root.join("registry.key"));
        registry_ca.issue(&reg_cert, &reg_key);
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n\
             http:\n  addr: {host}\n  secret: berth-e2e-not-secret\n  tls:\n    certificate: {cert}\n    key: {key}\n\
             auth:\n  token:\n    realm: {public}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
            storage = root.join("storage").display(),
            cert = reg_cert.display(),
            key = reg_key.display(),
            bundle = berth.keys_dir().join("bundle.pem").display(),
        );
        let config_path = root.join("registry.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut cmd = Command::new(REGISTRY_BIN);
        cmd.arg("serve").arg(&config_path);
        let registry = Daemon::spawn("docker-registry", cmd, &root, Duration::from_secs(5));
        let v2 = format!("https://{host}/v2/");
        wait_for(
            "docker-registry answering 401 on HTTPS",
            Duration::from_secs(60),
            || matches!(https_get(&registry_ca.pem(), &v2), Some((401, _))),
            || registry.log_tail(40),
        );

        let work = root.join("client");
        let client = ClientEnv::new(&work);
        let image = write_oci_image(&work.join("image"), "v1", "https realm e2e image");
        let registry_only = cert_dir(&work, "certs-registry-only", &[&registry_ca]);
        let both = cert_dir(&work, "certs-both", &[&registry_ca, &berth_ca]);
        Some(TlsSetup {
            registry,
            berth,
            berth_ca,
            berth_cert,
            berth_key,
            first_der,
            client,
            image,
            registry_only,
            both,
            creds: format!("{}:{}", ALICE.0, ALICE.1),
            target: format!("docker://{host}/alice/app:tls"),
            work,
            _dir: dir,
        })
    }

    fn diag(&self) -> String {
        format!(
            "{}\n{}",
            self.berth.log_tail(40),
            self.registry.log_tail(30)
        )
    }

    /// `skopeo copy` of the image to the target, trusting the CAs in `certs`.
    fn push(&self, certs: &str) -> Out {
        self.client.skopeo(
            &[
                "copy",
                "--dest-cert-dir",
                certs,
                "--dest-creds",
                &self.creds,
                &self.image.oci_ref(),
                &self.target,
            ],
            None,
            TRANSFER_TIMEOUT,
        )
    }

    /// The push trusting both CAs, which must work.
    #[track_caller]
    fn push_ok(&self) {
        let out = self.push(&self.both);
        assert!(
            out.success(),
            "push through the HTTPS realm failed\n{out}\n{}",
            self.diag()
        );
        eprintln!("ok: skopeo push via https realm ({:?})", out.elapsed);
    }
}

#[test]
fn https_realm_with_an_untrusted_certificate_is_refused() {
    let Some(t) = TlsSetup::start("tls untrusted realm") else {
        return;
    };
    // The registry is trusted but berth's certificate is not: the token
    // request to the realm fails on the certificate.
    let out = t.push(&t.registry_only);
    assert!(
        !out.success(),
        "push without trusting berth's CA succeeded\n{out}\n{}",
        t.diag()
    );
    let text = out.text().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("x509"),
        "push failed, but not on berth's certificate:\n{out}\n{}",
        t.diag()
    );
    eprintln!(
        "ok: realm certificate not trusted → refused: {}",
        out.stderr.trim()
    );
}

#[test]
fn skopeo_push_and_pull_through_an_https_realm() {
    let Some(t) = TlsSetup::start("tls push pull") else {
        return;
    };
    t.push_ok();
    let pulled = t.work.join("pulled");
    let out = t.client.skopeo(
        &[
            "copy",
            "--src-cert-dir",
            &t.both,
            "--src-creds",
            &t.creds,
            &t.target,
            &format!("oci:{}:pulled", pulled.display()),
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    assert!(
        out.success(),
        "pull through the HTTPS realm failed\n{out}\n{}",
        t.diag()
    );
    assert_eq!(
        config_digest_in_layout(&pulled, "pulled"),
        t.image.config_digest
    );
}

#[test]
fn wrong_password_through_an_https_realm_is_refused() {
    let Some(t) = TlsSetup::start("tls wrong password") else {
        return;
    };
    t.push_ok();
    let out = t.client.skopeo(
        &[
            "inspect",
            "--cert-dir",
            &t.both,
            "--creds",
            &format!("{}:wrong-password", ALICE.0),
            &t.target,
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    assert!(!out.success(), "{out}\n{}", t.diag());
    let text = out.text().to_lowercase();
    assert!(
        text.contains("unauthorized") || text.contains("401") || text.contains("invalid username"),
        "{out}"
    );
}

#[test]
fn https_realm_certificate_reloaded_on_sighup() {
    let Some(mut t) = TlsSetup::start("tls reload") else {
        return;
    };
    t.push_ok();
    // New certificate on disk, SIGHUP: berth serves it without a restart.
    let second_der = t.berth_ca.issue(&t.berth_cert, &t.berth_key);
    assert_ne!(t.first_der, second_der);
    t.berth.signal("HUP");
    let readyz = format!("{}/readyz", t.berth.setting("BERTH_PUBLIC_URL").unwrap());
    wait_for(
        "berth serving the new certificate after SIGHUP",
        Duration::from_secs(15),
        || matches!(https_get(&t.berth_ca.pem(), &readyz), Some((200, der)) if der == second_der),
        || t.berth.log_tail(40),
    );
    assert!(t.berth.running(), "berth exited on SIGHUP\n{}", t.diag());
    assert!(
        t.berth.log().contains("TLS certificate reloaded"),
        "{}",
        t.berth.log_tail(40)
    );
    let out = t.client.skopeo(
        &[
            "inspect",
            "--cert-dir",
            &t.both,
            "--creds",
            &t.creds,
            &t.target,
        ],
        None,
        TRANSFER_TIMEOUT,
    );
    assert!(
        out.success(),
        "inspect after the certificate reload failed\n{out}\n{}",
        t.diag()
    );
    eprintln!("ok: certificate reloaded on SIGHUP, clients still served");
}
