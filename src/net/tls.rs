//! TLS termination: rustls (ring provider), ALPN `h2` and `http/1.1`, with a
//! certificate that is swapped while running: on SIGHUP and when the files
//! change (cert-manager and Kubernetes Secrets rewrite files without a signal).
//!
//! A reload that fails (half-written file, key not matching the certificate)
//! keeps the previous certificate serving and is logged; a broken pair is never
//! put in service. This module does not decide where TLS is used; `net::server`
//! does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use time::OffsetDateTime;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key, or they do not match.
    #[error("{path}: {problem}")]
    Invalid {
        /// File at fault.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

type Fingerprint = Vec<(u64, Option<SystemTime>)>;

fn fingerprint(paths: &[&Path]) -> Fingerprint {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok();
            (
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
}

struct Loaded {
    key: Arc<CertifiedKey>,
    not_after: Option<OffsetDateTime>,
}

/// The serving certificate and key, reloadable. Implements rustls'
/// [`ResolvesServerCert`], so every handshake picks up the current pair.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    seen: Mutex<Fingerprint>,
}

impl fmt::Debug for CertStore {
    // Hand-written: the private key never prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let cert_pem = read(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(cert_path, "no CERTIFICATE block found"));
    };
    let not_after = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| invalid(cert_path, format!("certificate does not parse: {e}")))?
        .1
        .validity()
        .not_after
        .to_datetime();
    let key_pem = read(key_path)?;
    // The key's bytes are never part of an error message.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        invalid(
            key_path,
            "no usable PRIVATE KEY block (PKCS#8, RSA or EC PEM expected)",
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        invalid(
            key_path,
            format!("key unusable with certificate {}: {e}", cert_path.display()),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        not_after: Some(not_after),
    })
}

impl CertStore {
    /// Loads the certificate chain (leaf first) and private key, both PEM.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let seen = fingerprint(&[cert_path, key_path]);
        let loaded = load_pair(cert_path, key_path, &provider)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
        }))
    }

    fn current(&self) -> Arc<Loaded> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// End of validity of the serving certificate.
    pub fn not_after(&self) -> Option<OffsetDateTime> {
        self.current().not_after
    }

    /// Reads both files again; swaps only when they form a valid pair.
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = fingerprint(&[&self.cert_path, &self.key_path]);
        }
        match load_pair(&self.cert_path, &self.key_path, &self.provider) {
            Ok(loaded) => {
                let not_after = loaded.not_after;
                let mut current = match self.current.write() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(loaded);
                tracing::info!(
                    cert = %self.cert_path.display(),
                    not_after = ?not_after,
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; the previous certificate stays in service");
                Err(e)
            }
        }
    }

    /// Reloads when either file changed since the last load.
    pub fn reload_if_changed(&self) -> bool {
        let now = fingerprint(&[&self.cert_path, &self.key_path]);
        let changed = match self.seen.lock() {
            Ok(seen) => *seen != now,
            Err(_) => true,
        };
        if changed {
            // Logged inside; the old pair keeps serving.
            let _ = self.reload();
        }
        changed
    }

    /// A TLS acceptor that always presents the current certificate, offering
    /// HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&self.cert_path, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

impl crate::watch::Reload for CertStore {
    fn what(&self) -> &'static str {
        "TLS certificate"
    }
    fn reload_now(&self) {
        // The error is logged, and the previous certificate stays in use.
        let _ = self.reload();
    }
    fn reload_if_changed(&self) {
        CertStore::reload_if_changed(self);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_reloads_and_keeps_the_old_pair_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let store = CertStore::load(&cert, &key).unwrap();
        store.acceptor().unwrap();
        let first = store.current().key.cert[0].clone();
        assert!(!store.reload_if_changed());

        // A key that does not match the certificate is refused; the old pair stays.
        let (_, other_key) = self_signed(dir.path(), "b");
        std::fs::copy(&other_key, &key).unwrap();
        let e = store.reload().unwrap_err().to_string();
        assert!(e.contains("key unusable"), "{e}");
        assert_eq!(store.current().key.cert[0], first);

        // A new matching pair is taken.
        let (new_cert, new_key) = self_signed(dir.path(), "c");
        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        store.reload().unwrap();
        assert_ne!(store.current().key.cert[0], first);
        assert!(store.not_after().is_some());
    }

    #[test]
    fn errors_name_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let missing = dir.path().join("missing.crt");
        let e = CertStore::load(&missing, &key).unwrap_err().to_string();
        assert!(e.contains("missing.crt"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let e = CertStore::load(&garbage, &key).unwrap_err().to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("CERTIFICATE"),
            "{e}"
        );
        // The key file given as certificate and vice versa.
        let e = CertStore::load(&key, &cert).unwrap_err().to_string();
        assert!(e.contains("a.key"), "{e}");
        let key_text = std::fs::read_to_string(&key).unwrap();
        let e = CertStore::load(&cert, &cert).unwrap_err().to_string();
        assert!(e.contains("PRIVATE KEY"), "{e}");
        for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!e.contains(line));
        }
    }
}
