//! The validating admission webhook: stops broken `kubernetes.io/regcredentials` Secrets
//! at the API server, with the same policy module the nodes run.
//!
//! [`SecretAdmission`] decides (an AdmissionReview body in, an AdmissionReview out);
//! [`Webhook`] serves it over HTTPS (rustls with the `ring` provider, HTTP/1.1 and h2):
//!
//! - `POST /validate`: `admission.k8s.io/v1` AdmissionReview. A checked Secret that breaks
//!   a rule is denied with code 422, reason `Invalid` and one `status.details.causes`
//!   entry per violation (`field`, `reason` = the field error type, `message`), as the API
//!   server reports its own validation errors; warnings go to `response.warnings`. A body
//!   that is not such a review gets HTTP 400 (413 above the body limit) with an
//!   AdmissionReview whose status says why; a policy failure gets HTTP 500, so the
//!   configuration's `failurePolicy` decides. The answer's `uid` is always the request's.
//! - `GET /healthz`, `GET /readyz` (503 while shutting down), on the HTTPS address and,
//!   when one is given, on a separate plain-HTTP probe address
//!   ([`WebhookBuilder::probe_addr`]) with connections of its own, so that kubelet's
//!   probes neither take nor wait for the review connections' slots.
//! - `GET /metrics` on a separate plain-HTTP address, when one is given.
//!
//! What clients can make it hold is bounded: at most [`DEFAULT_MAX_CONNECTIONS`]
//! connections ([`WebhookBuilder::max_connections`]), at most
//! [`DEFAULT_MAX_CONNECTIONS_PER_PEER`] from one address; a connection with no review in
//! flight closes after [`DEFAULT_IDLE_TIMEOUT`], and the longest-idle one is closed at
//! once when a new client comes at a cap, so idle clients cannot keep the API server out
//! (issue 23, finding 6); a review's body is read only once
//! the review is admitted (at most [`WebhookBuilder::max_concurrent_reviews`] at a time,
//! so at most that many bodies of at most the body limit are in memory; reviews declaring
//! a body of at most 256 KiB, every ordinary Secret's, have twice as many slots of their
//! own, so large unfinished bodies cannot starve them), within [`DEFAULT_BODY_TIMEOUT`]
//! from the headers (408 after it); TLS handshakes within 5 s, HTTP/1.1 headers within
//! 10 s; HTTP/2 flow-control windows of 64 KiB a stream and 256 KiB a connection.
//! `/healthz` and `/readyz` need no admission, so they answer while reviews queue.
//!
//! The certificate and key are read again on the first handshake after either file
//! changes. The policy runs on the serving layer's [`BlockingExecutor`], at most
//! [`WebhookBuilder::max_concurrent_reviews`] at a time. On shutdown the webhook drains
//! like the proxy ([`regcred_serve::HttpServer`]). Nothing the webhook answers, logs
//! or counts contains a value from a Secret.
//!
//! ```no_run
//! use regcred_host::PolicyRunner;
//! use regcred_webhook::{SecretAdmission, Webhook};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let admission = SecretAdmission::new(PolicyRunner::wasm()?);
//! let webhook = Webhook::builder(admission, "tls.crt", "tls.key")
//!     .addr("127.0.0.1:8443".parse()?)
//!     .metrics_addr("127.0.0.1:9090".parse()?)
//!     .bind()
//!     .await?;
//! println!("serving on {}", webhook.local_addr());
//! webhook.serve(std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admission;
mod handler;
mod managed_tls;
mod metrics;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use regcred_serve::{BlockingExecutor, HttpServer, serve_metrics};

pub use admission::{Decision, Outcome, ReviewError, SecretAdmission, error_review};
pub use managed_tls::{
    DEFAULT_CA_VALIDITY, DEFAULT_CERT_VALIDITY, DEFAULT_CHECK_INTERVAL, ManagedCertificate,
    ManagedTlsConfig, ManagedTlsError,
};

use handler::{AppState, not_found, readyz, validate};
use metrics::WebhookMetrics;
use tls::ReloadingCert;

/// The default body limit, 3 MiB: a Secret is at most 1 MiB of data, which base64 and
/// the review's `object` and `oldObject` make about 2.7 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 3 << 20;
/// The default address, `0.0.0.0:8443`.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8443);

/// The default deadline for reading a request's body, once the request was admitted.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = regcred_serve::DEFAULT_MAX_CONNECTIONS;
/// The default cap on open connections from one address: a quarter of the slots. An
/// API server opens a handful; a cluster with several API servers has several addresses.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = DEFAULT_MAX_CONNECTIONS / 4;
/// How long a connection with no review in flight stays open (default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = regcred_serve::DEFAULT_IDLE_TIMEOUT;
/// The probe address's connection cap: kubelet opens one at a time.
const PROBE_CONNECTIONS: usize = 16;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A TLS file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadTls {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file does not hold what it should, or the key does not fit the certificate.
    #[error("{}: {reason}", path.display())]
    BadTls {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the file's contents).
        reason: String,
    },
    /// The TLS configuration was refused.
    #[error("cannot configure TLS: {reason}")]
    TlsConfig {
        /// rustls's reason.
        reason: String,
    },
    /// An address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the serving certificate comes from.
#[derive(Debug)]
enum CertificateSource {
    /// PEM files, read again when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// The webhook's own (`--tls-secret`).
    Managed(ManagedCertificate),
}

/// Configures a [`Webhook`]: addresses, limits, TLS files.
#[derive(Debug)]
#[must_use]
pub struct WebhookBuilder {
    admission: SecretAdmission,
    certificate: CertificateSource,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    probe_addr: Option<SocketAddr>,
    body_limit: usize,
    body_timeout: Duration,
    concurrency: usize,
    max_connections: usize,
    max_per_peer: usize,
    idle_timeout: Duration,
    shutdown_delay: Duration,
}

impl WebhookBuilder {
    /// At most this many connections from one peer address (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_PEER`]); at the cap the peer's longest-idle
    /// connection is closed for the new one, or the new one when all are busy.
    pub fn max_connections_per_peer(mut self, connections: usize) -> Self {
        self.max_per_peer = connections.max(1);
        self
    }

    /// How long a connection with no review in flight stays open (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Where to serve `GET /healthz` and `GET /readyz` over plain HTTP too (default:
    /// nowhere; they are always on the HTTPS address as well).
    pub fn probe_addr(mut self, addr: SocketAddr) -> Self {
        self.probe_addr = Some(addr);
        self
    }

    /// At most this many client connections at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`]); further clients wait in the listen backlog.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// How long a review may take from its headers to the end of its body, waiting for
    /// admission included (default [`DEFAULT_BODY_TIMEOUT`]); a slower client gets 408
    /// (503 when it was never admitted) and, on HTTP/1.1, its connection is closed.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// Where to serve HTTPS (default [`DEFAULT_ADDR`]; port 0 picks a free one).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Where to serve `GET /metrics` over plain HTTP (default: nowhere).
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// The largest request body (default [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes.max(1);
        self
    }

    /// How many reviews are admitted at once (default: twice the CPUs): only admitted
    /// requests have their body read and run the policy; the rest wait their turn
    /// (within the body timeout, then 503) holding no body and no thread. At most this
    /// many bodies of the body limit are buffered, and twice as many of at most 256 KiB
    /// (which have their own slots). Keep it at most the policy's instance pool.
    pub fn max_concurrent_reviews(mut self, reviews: usize) -> Self {
        self.concurrency = reviews.max(1);
        self
    }

    /// How long `/readyz` fails before the server stops after the shutdown signal, so
    /// that the Service stops sending requests first (default 0).
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = delay;
        self
    }

    /// Loads the certificate and key and binds the listeners.
    ///
    /// # Errors
    ///
    /// A [`WebhookError`] when a TLS file is unreadable or unusable or an address cannot
    /// be bound.
    pub async fn bind(self) -> Result<Webhook, WebhookError> {
        let metrics = WebhookMetrics::new();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Arc<dyn rustls::server::ResolvesServerCert> = match &self.certificate {
            CertificateSource::Files { cert, key } => Arc::new(ReloadingCert::load(
                cert,
                key,
                provider.clone(),
                metrics.clone(),
            )?),
            CertificateSource::Managed(managed) => {
                managed.run(metrics.clone());
                managed.resolver()
            }
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| WebhookError::TlsConfig {
                reason: err.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let listener = bind(self.addr).await?;
        let metrics_listener = match self.metrics_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let probe_listener = match self.probe_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let state = Arc::new(AppState {
            admission: Arc::new(self.admission),
            metrics,
            body_limit: self.body_limit,
            body_timeout: self.body_timeout,
            admitted_small: Arc::new(tokio::sync::Semaphore::new(self.concurrency * 2)),
            admitted_large: Arc::new(tokio::sync::Semaphore::new(self.concurrency)),
            executor: BlockingExecutor::new(self.concurrency),
            ready: AtomicBool::new(true),
        });
        Ok(Webhook {
            listener,
            metrics_listener,
            probe_listener,
            tls: TlsAcceptor::from(Arc::new(config)),
            state,
            shutdown_delay: self.shutdown_delay,
            max_connections: self.max_connections,
            max_per_peer: self.max_per_peer,
            idle_timeout: self.idle_timeout,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, WebhookError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })
}

/// A bound webhook server; [`Webhook::serve`] runs it.
pub struct Webhook {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    probe_listener: Option<TcpListener>,
    tls: TlsAcceptor,
    state: Arc<AppState>,
    shutdown_delay: Duration,
    max_connections: usize,
    max_per_peer: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("addr", &self.local_addr())
            .field("metrics_addr", &self.metrics_addr())
            .field("probe_addr", &self.probe_addr())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A builder for a webhook that answers with `admission` and serves the certificate
    /// chain and key in the PEM files `tls_cert` and `tls_key`.
    pub fn builder(
        admission: SecretAdmission,
        tls_cert: impl AsRef<Path>,
        tls_key: impl AsRef<Path>,
    ) -> WebhookBuilder {
        Self::builder_with(
            admission,
            CertificateSource::Files {
                cert: tls_cert.as_ref().to_path_buf(),
                key: tls_key.as_ref().to_path_buf(),
            },
        )
    }

    /// A builder for a webhook that serves the certificate it manages itself
    /// ([`ManagedCertificate`]: made, stored, renewed, its CA in the configuration).
    pub fn builder_managed(
        admission: SecretAdmission,
        certificate: ManagedCertificate,
    ) -> WebhookBuilder {
        Self::builder_with(admission, CertificateSource::Managed(certificate))
    }

    fn builder_with(admission: SecretAdmission, certificate: CertificateSource) -> WebhookBuilder {
        WebhookBuilder {
            admission,
            certificate,
            addr: DEFAULT_ADDR,
            metrics_addr: None,
            probe_addr: None,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            shutdown_delay: Duration::ZERO,
        }
    }

    /// The HTTPS address (with the port picked when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The metrics address, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The probe address, when there is one.
    pub fn probe_addr(&self) -> Option<SocketAddr> {
        self.probe_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes; then `/readyz` fails for the shutdown delay,
    /// and the server drains: no new connection, open ones finish what they are doing
    /// (at most [`regcred_serve::DEFAULT_DRAIN_TIMEOUT`]). Accept errors (out of file
    /// descriptors, say) are logged and retried.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Self {
            listener,
            metrics_listener,
            probe_listener,
            tls,
            state,
            shutdown_delay,
            max_connections,
            max_per_peer,
            idle_timeout,
        } = self;
        let app = Router::new()
            .route("/validate", post(validate))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .fallback(not_found)
            .with_state(state.clone());
        let probes = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(state.clone());
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let probe_addr = probe_listener.as_ref().and_then(|l| l.local_addr().ok());
        let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
        let probe_task = probe_listener.map(|listener| {
            tokio::spawn(async move {
                HttpServer::new("webhook-probes")
                    .max_connections(PROBE_CONNECTIONS)
                    .idle_timeout(idle_timeout)
                    .serve(listener, TowerToHyperService::new(probes), async move {
                        let _ = probes_stopped.await;
                    })
                    .await;
            })
        });
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = metrics_listener.map(|listener| {
            let metrics = state.metrics.clone();
            tokio::spawn(serve_metrics(
                listener,
                Arc::new(move || metrics.render()),
                async move {
                    let _ = metrics_stopped.await;
                },
            ))
        });
        tracing::info!(
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            metrics_addr = %metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
            probe_addr = %probe_addr.map(|a| a.to_string()).unwrap_or_default(),
            "serving admission reviews on POST /validate"
        );

        let draining = async {
            shutdown.await;
            state.ready.store(false, Ordering::SeqCst);
            tracing::info!(delay = ?shutdown_delay, "shutting down: /readyz fails from now on");
            tokio::time::sleep(shutdown_delay).await;
        };
        HttpServer::new("webhook")
            .tls(tls)
            .max_connections(max_connections)
            .max_connections_per_peer(max_per_peer)
            .idle_timeout(idle_timeout)
            .serve(listener, TowerToHyperService::new(app), draining)
            .await;
        state.executor.close();
        let _ = stop_metrics.send(());
        let _ = stop_probes.send(());
        if let Some(task) = probe_task {
            let _ = task.await;
        }
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        tracing::info!("stopped");
    }
}
