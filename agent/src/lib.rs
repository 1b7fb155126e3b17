//! The CRI image-service proxy: kubelet's `imageServiceEndpoint`, in front of the
//! container runtime, that supplies `kubernetes.io/regcredentials` credentials on
//! `PullImage`.
//!
//! kubelet sends every ImageService call (ListImages, ImageStatus, PullImage, RemoveImage,
//! ImageFsInfo) to the proxy's unix socket. The proxy forwards each HTTP/2 request to the
//! runtime's socket as raw bytes (headers, gRPC frames, trailers), whatever its method, and
//! returns the runtime's response the same way: fields newer than this proxy, error codes
//! and messages pass unchanged.
//!
//! `PullImage` is the one call it reads: when the request carries no `auth` and its
//! `sandbox_config.metadata` names a pod, the proxy finds the pod's image pull Secrets
//! ([`PullSecretSource`]), resolves the candidates with the policy ([`PolicyRunner`]),
//! and tries them in order, each time the original request bytes with an `auth` field
//! appended, until one pull succeeds (kubelet's own semantics). With no candidate the
//! request goes on as it came; when every candidate fails, the runtime's last error comes
//! back with a summary naming the Secrets tried (never a value).
//!
//! With kubelet's `containerRuntimeEndpoint` pointed at the proxy as well, it also decides
//! at `CreateContainer` whether the pod may use an image already on the node
//! ([`ImageVerification`], module `verify`): kubelet does not know which credentials
//! pulled an image through regcred, so without this any pod of the node could run a
//! private image that another pod's Secret pulled. Every other RuntimeService call is
//! forwarded as bytes, as the ImageService calls are.
//!
//! The proxy keeps no state a restart would lose: the connection to the runtime is dialled
//! when needed (a runtime that restarts is reached again on the next call), the
//! pulled-image records are on disk ([`PullRecords`]), and the only cache is the `kube`
//! source's short one.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use regcred_host::PolicyRunner;
//! use regcred_agent::{CriProxy, DirSource};
//! use regcred_serve::bind_unix;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = CriProxy::builder(
//!     "/run/containerd/containerd.sock",
//!     Arc::new(DirSource::new("/etc/regcred/manifests")),
//!     PolicyRunner::wasm()?,
//! )
//! .build();
//! let listener = bind_unix("/run/regcred/cri-proxy.sock".as_ref()).await?;
//! proxy.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod authority;
mod decide;
mod events;
mod images;
mod metrics;
mod pull;
mod records;
mod resolve;
mod runtime;
mod source;
mod upstream;
mod verification;
mod verify;
mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use regcred_host::PolicyRunner;
use regcred_types::{PolicyConfig, RuntimeProfile};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tonic::Code;

use events::Events;
use images::NodeImages;
use regcred_serve::{BlockingExecutor, HttpServer, Protocols};
use resolve::Resolver;
use runtime::{RequestHead, RuntimeConnection};
use upstream::Upstream;
use wire::grpc::{self, ProxyBody};

pub use decide::{DECIDE_PATH, DEFAULT_DECISION_BUDGET, Decision, DecisionRequest};
pub use events::{
    CREDENTIALS_REFUSED, IMAGE_REFUSED, PULL_SECRET_SKIPPED, PodEvents, RECORDS_UNWRITTEN,
};
pub use metrics::{ImageUse, ProxyMetrics, PullOutcome};
pub use records::{
    CredentialFields, ImageAccess, ImageSummary, PodSummary, PullRecords, RECORDS_FILE,
    RecordsError, default_key_file,
};
pub use source::{
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALE_FOR, DEFAULT_TTL, DirSource, KubeSource,
    KubeSourceBuilder, PodPullSecrets, PodRef, PullSecretSource, SecretsFrom, SourceError,
    SourceFuture,
};
pub use verification::{ImageVerification, VerificationPolicy};

/// The largest request body the proxy reads (one gRPC message with its frame header).
/// CRI image requests are small (an image name, credentials, a sandbox config): a few KiB;
/// kubelet's own gRPC client sends at most 16 MiB, which no ImageService request nears.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// How many requests have their body read at once (default); the rest wait, holding no
/// more than HTTP/2's flow-control window.
pub const DEFAULT_MAX_BUFFERED_REQUESTS: usize = 16;
/// How many PullImage resolutions (the pull secret lookup and the policy) run at once
/// (default); further pulls wait their turn.
pub const DEFAULT_MAX_CONCURRENT_RESOLUTIONS: usize = 32;

/// The proxy: what it forwards to, where it finds pull Secrets, and how it resolves
/// them. Cheap to clone; clones share the runtime connection and the metrics.
#[derive(Debug, Clone)]
pub struct CriProxy {
    inner: Arc<Inner>,
}

/// The agent's rooms, which the handlers (`pull`, `verify`, `decide`) are given: the
/// runtime ([`Upstream`]), a pod's candidates ([`Resolver`]), the records kept in step
/// with the node's images ([`NodeImages`]), the checks' configuration, Events and metrics.
#[derive(Debug)]
pub(crate) struct Inner {
    upstream: Upstream,
    resolver: Resolver,
    images: NodeImages,
    /// The checks at CreateContainer, when on.
    verification: Option<ImageVerification>,
    events: Events,
    metrics: Arc<ProxyMetrics>,
    /// Permits to read a request body.
    reading: Arc<Semaphore>,
}

/// Builds a [`CriProxy`].
#[derive(Debug)]
#[must_use]
pub struct CriProxyBuilder {
    runtime: PathBuf,
    secrets: Arc<dyn PullSecretSource>,
    policy: PolicyRunner,
    profile: RuntimeProfile,
    config: PolicyConfig,
    metrics: Option<Arc<ProxyMetrics>>,
    executor: Option<BlockingExecutor>,
    verification: Option<ImageVerification>,
    events: Option<PodEvents>,
    max_buffered_requests: usize,
    max_concurrent_resolutions: usize,
}

impl CriProxyBuilder {
    /// How the `AuthConfig` is filled for the runtime ([`RuntimeProfile::Containerd`]).
    pub fn runtime_profile(mut self, profile: RuntimeProfile) -> Self {
        self.profile = profile;
        self
    }

    /// The policy configuration candidates are resolved with (the default one).
    pub fn policy_config(mut self, config: PolicyConfig) -> Self {
        self.config = config;
        self
    }

    /// Metrics to count into (new ones by default).
    pub fn metrics(mut self, metrics: Arc<ProxyMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The executor the policy runs on (default: one with a slot per CPU). Share it
    /// with [`DirSource::executor`] for one bound on all blocking work.
    pub fn executor(mut self, executor: BlockingExecutor) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Decide at CreateContainer whether the pod may use the image (off by default in the
    /// library; `regcred cri-proxy` turns it on with records on disk).
    pub fn verification(mut self, verification: ImageVerification) -> Self {
        self.verification = Some(verification);
        self
    }

    /// Write Kubernetes Events on pods for what their users must act on (off by default
    /// in the library; `regcred cri-proxy` writes them with `--secrets-from kube`).
    pub fn events(mut self, events: PodEvents) -> Self {
        self.events = Some(events);
        self
    }

    /// How many requests have their body read at once
    /// ([`DEFAULT_MAX_BUFFERED_REQUESTS`]); each body is at most [`MAX_REQUEST_BYTES`].
    pub fn max_buffered_requests(mut self, requests: usize) -> Self {
        self.max_buffered_requests = requests.max(1);
        self
    }

    /// How many PullImage resolutions run at once
    /// ([`DEFAULT_MAX_CONCURRENT_RESOLUTIONS`]).
    pub fn max_concurrent_resolutions(mut self, resolutions: usize) -> Self {
        self.max_concurrent_resolutions = resolutions.max(1);
        self
    }

    /// The proxy. Nothing is dialled until the first call.
    pub fn build(self) -> CriProxy {
        CriProxy {
            inner: Arc::new({
                let metrics = self.metrics.unwrap_or_default();
                let events = Events(self.events);
                let records = self.verification.as_ref().map(|v| Arc::clone(v.records()));
                Inner {
                    upstream: Upstream::new(
                        RuntimeConnection::new(&self.runtime),
                        Arc::clone(&metrics),
                    ),
                    resolver: Resolver {
                        secrets: self.secrets,
                        policy: self.policy,
                        profile: self.profile,
                        config: self.config,
                        executor: self.executor.unwrap_or_else(|| {
                            BlockingExecutor::new(
                                std::thread::available_parallelism().map_or(2, |n| n.get()),
                            )
                        }),
                        resolving: Arc::new(Semaphore::new(self.max_concurrent_resolutions)),
                        metrics: Arc::clone(&metrics),
                        events: events.clone(),
                    },
                    images: NodeImages::new(records, Arc::clone(&metrics)),
                    verification: self.verification,
                    events,
                    metrics,
                    reading: Arc::new(Semaphore::new(self.max_buffered_requests)),
                }
            }),
        }
    }
}

impl CriProxy {
    /// A proxy to the runtime listening on `runtime_socket`, finding pull Secrets in
    /// `secrets` and resolving them with `policy`.
    pub fn builder(
        runtime_socket: impl Into<PathBuf>,
        secrets: Arc<dyn PullSecretSource>,
        policy: PolicyRunner,
    ) -> CriProxyBuilder {
        CriProxyBuilder {
            runtime: runtime_socket.into(),
            secrets,
            policy,
            profile: RuntimeProfile::default(),
            config: PolicyConfig::default(),
            metrics: None,
            executor: None,
            verification: None,
            events: None,
            max_buffered_requests: DEFAULT_MAX_BUFFERED_REQUESTS,
            max_concurrent_resolutions: DEFAULT_MAX_CONCURRENT_RESOLUTIONS,
        }
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.inner.metrics
    }

    /// The checks at CreateContainer, when on.
    pub fn verification(&self) -> Option<&ImageVerification> {
        self.inner.verification.as_ref()
    }

    /// The runtime's socket.
    pub fn runtime_socket(&self) -> &Path {
        self.inner.upstream.socket()
    }

    /// Serves gRPC over HTTP/2 on `listener` until `shutdown` completes; then drains as
    /// every regcred server does ([`HttpServer::serve`]): stops accepting, tells clients
    /// to go away, and waits for calls under way (at most
    /// [`regcred_serve::DEFAULT_DRAIN_TIMEOUT`]). Accept errors (too many open files) are
    /// logged and retried.
    pub async fn serve(&self, listener: UnixListener, shutdown: impl Future<Output = ()> + Send) {
        // Records of images removed while the proxy was down are dropped once, in the
        // background: a runtime that is not up yet does not hold the socket back.
        let pruning = Arc::clone(&self.inner);
        tokio::spawn(async move { pruning.images.prune(&pruning.upstream).await });
        let inner = Arc::clone(&self.inner);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let inner = Arc::clone(&inner);
            async move { Ok::<_, Infallible>(inner.handle(request).await) }
        });
        HttpServer::new("cri-proxy")
            .protocols(Protocols::Http2Only)
            // Every client's `:authority` reaches the service (see `authority`).
            .serve(authority::Normalizing(listener), service, shutdown)
            .await;
        self.inner.resolver.executor.close();
    }
}

impl Inner {
    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        // ImageService calls are unary: the request is one small message, read whole
        // with a limit, at most `max_buffered_requests` at a time.
        let body = {
            let Ok(_reading) = Arc::clone(&self.reading).acquire_owned().await else {
                return grpc::error_response(Code::Unavailable, "regcred cri-proxy: stopping");
            };
            match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                    tracing::warn!(
                        method = parts.uri.path(),
                        limit = MAX_REQUEST_BYTES,
                        "refused a request body over the limit"
                    );
                    return grpc::error_response(
                        Code::ResourceExhausted,
                        &format!(
                            "regcred cri-proxy: the request is larger than {MAX_REQUEST_BYTES} \
                             bytes; CRI image requests are a few KiB"
                        ),
                    );
                }
                Err(err) => {
                    return grpc::error_response(
                        Code::Cancelled,
                        &format!("regcred cri-proxy: reading the request failed: {err}"),
                    );
                }
            }
        };
        let head = RequestHead::from_parts(parts);
        match head.uri.path() {
            regcred_cri_api::methods::PULL_IMAGE => pull::pull_image(self, head, body).await,
            regcred_cri_api::methods::CREATE_CONTAINER => {
                verify::create_container(self, head, body).await
            }
            regcred_cri_api::methods::REMOVE_IMAGE => {
                self.images.remove_image(&self.upstream, head, body).await
            }
            _ => self.upstream.forward(&head, body).await,
        }
    }
}

/// Why a CRI endpoint is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not `unix:///ABSOLUTE/PATH` (or an absolute path).
    #[error("`{endpoint}` is not a unix socket endpoint: write unix:///ABSOLUTE/PATH")]
    NotUnix {
        /// The endpoint as given.
        endpoint: String,
    },
}

/// The socket path of a CRI endpoint as kubelet writes it: `unix:///run/x.sock` (or a
/// bare absolute path).
///
/// # Errors
///
/// [`EndpointError::NotUnix`] for anything else (TCP endpoints are not supported).
pub fn unix_socket_path(endpoint: &str) -> Result<PathBuf, EndpointError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(EndpointError::NotUnix {
            endpoint: endpoint.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_paths() {
        assert_eq!(
            unix_socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            unix_socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        for bad in ["tcp://127.0.0.1:1", "unix://relative.sock", "x.sock"] {
            assert!(unix_socket_path(bad).is_err(), "{bad}");
        }
    }
}
