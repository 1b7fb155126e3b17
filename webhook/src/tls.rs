//! The serving certificate: read from PEM files, and read again on the first handshake
//! after either file changes (cert-manager and kubelet rotate mounted Secrets in place).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{WebhookError, metrics::WebhookMetrics};

/// What identifies one version of a file: a rename (kubelet's `..data` symlink swap)
/// changes the inode, an in-place write the time or length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: meta.ino(),
        })
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<FileStamp>, Option<FileStamp>),
}

/// A certificate resolver that checks the files' stamps on every handshake (two `stat`
/// calls) and reloads them when they changed. A pair that does not load (a half-written
/// rotation, a key that does not match) keeps the previous one in service; the next
/// handshake tries again.
pub(crate) struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    metrics: WebhookMetrics,
    loaded: RwLock<Loaded>,
    /// The stamps of the last pair that failed to load, so that it is reported once.
    failed: RwLock<Option<(Option<FileStamp>, Option<FileStamp>)>>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    pub(crate) fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
        metrics: WebhookMetrics,
    ) -> Result<Self, WebhookError> {
        let stamps = (FileStamp::of(cert_path), FileStamp::of(key_path));
        let key = load_pair(cert_path, key_path, &provider)?;
        record_expiry(&metrics, &key);
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            metrics,
            loaded: RwLock::new(Loaded {
                key: Arc::new(key),
                stamps,
            }),
            failed: RwLock::new(None),
        })
    }

    /// The pair in service, reloaded first if the files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (
            FileStamp::of(&self.cert_path),
            FileStamp::of(&self.key_path),
        );
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if loaded.stamps == stamps {
                return loaded.key.clone();
            }
        }
        let already_failed = self
            .failed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&stamps);
        if !already_failed {
            match load_pair(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    let key = Arc::new(key);
                    *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
                        key: key.clone(),
                        stamps,
                    };
                    self.metrics.tls_reload(true);
                    record_expiry(&self.metrics, &key);
                    tracing::info!(
                        cert = %self.cert_path.display(),
                        key = %self.key_path.display(),
                        "reloaded the TLS certificate and key"
                    );
                    return key;
                }
                Err(err) => {
                    self.metrics.tls_reload(false);
                    tracing::warn!(
                        error = %err,
                        "the TLS files changed but do not load; serving the previous pair"
                    );
                    *self.failed.write().unwrap_or_else(|e| e.into_inner()) = Some(stamps);
                }
            }
        }
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .key
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The serving certificate's end, for `regcred_webhook_certificate_expiry_timestamp_seconds`.
fn record_expiry(metrics: &WebhookMetrics, key: &CertifiedKey) {
    if let Some(leaf) = key.cert.first()
        && let Ok((_, leaf)) = x509_parser::parse_x509_certificate(leaf)
    {
        metrics.certificate_expiry("serving", leaf.validity().not_after.timestamp());
    }
}

/// Reads and checks a certificate chain and its key. Errors name the files, never their
/// contents.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, WebhookError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| WebhookError::ReadTls {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| WebhookError::BadTls {
            path: cert_path.to_path_buf(),
            reason: "not a PEM certificate chain".into(),
        })?;
    if chain.is_empty() {
        return Err(WebhookError::BadTls {
            path: cert_path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| WebhookError::BadTls {
        path: key_path.to_path_buf(),
        reason: "no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| WebhookError::BadTls {
        path: key_path.to_path_buf(),
        reason: format!("unusable with the certificate: {err}"),
    })
}
