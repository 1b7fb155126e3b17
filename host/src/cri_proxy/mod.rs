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
//! The proxy keeps no state a restart would lose: the connection to the runtime is dialled
//! when needed (a runtime that restarts is reached again on the next call) and the only
//! cache is the `kube` source's short one.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use regcred_host::PolicyRunner;
//! use regcred_host::cri_proxy::{CriProxy, DirSource, bind_unix};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = CriProxy::builder(
//!     "/run/containerd/containerd.sock",
//!     Arc::new(DirSource::new("/etc/regcred/manifests")),
//!     PolicyRunner::wasm()?,
//! )
//! .build();
//! let listener = bind_unix("/run/regcred/cri-proxy.sock".as_ref()).await?;
//! proxy.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod authority;
mod grpc;
mod metrics;
mod pull;
mod runtime;
mod source;

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use regcred_types::{PolicyConfig, RuntimeProfile};
use tokio::net::UnixListener;
use tonic::Code;

use crate::PolicyRunner;
use grpc::ProxyBody;
use runtime::{RequestHead, RuntimeConnection};

pub use metrics::{ProxyMetrics, PullOutcome, serve_metrics};
pub use runtime::RuntimeError;
pub use source::{
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALE_FOR, DEFAULT_TTL, DirSource, KubeSource,
    KubeSourceBuilder, PodPullSecrets, PodRef, PullSecretSource, SecretsFrom, SourceError,
    SourceFuture,
};

/// How long in-flight calls (pulls) may go on after shutdown was asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The proxy: what it forwards to, where it finds pull Secrets, and how it resolves
/// them. Cheap to clone; clones share the runtime connection and the metrics.
#[derive(Debug, Clone)]
pub struct CriProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    runtime: RuntimeConnection,
    secrets: Arc<dyn PullSecretSource>,
    policy: PolicyRunner,
    profile: RuntimeProfile,
    config: PolicyConfig,
    metrics: Arc<ProxyMetrics>,
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

    /// The proxy. Nothing is dialled until the first call.
    pub fn build(self) -> CriProxy {
        CriProxy {
            inner: Arc::new(Inner {
                runtime: RuntimeConnection::new(&self.runtime),
                secrets: self.secrets,
                policy: self.policy,
                profile: self.profile,
                config: self.config,
                metrics: self.metrics.unwrap_or_default(),
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
        }
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.inner.metrics
    }

    /// The runtime's socket.
    pub fn runtime_socket(&self) -> &Path {
        self.inner.runtime.socket()
    }

    /// Serves gRPC over HTTP/2 on `listener` until `shutdown` completes; then stops
    /// accepting, tells clients to go away, and waits for calls under way (at most 30 s).
    ///
    /// # Errors
    ///
    /// None today: accept errors (too many open files) are logged and retried.
    pub async fn serve(
        &self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(err) => {
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    connections.spawn(serve_connection(
                        Arc::clone(&self.inner),
                        stream,
                        stopped.clone(),
                    ));
                }
            }
        }
        let _ = stop.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("calls still under way after {DRAIN_TIMEOUT:?}; cancelled");
            connections.abort_all();
        }
        Ok(())
    }
}

/// One client connection (kubelet keeps one open), until it closes or shutdown.
async fn serve_connection(
    inner: Arc<Inner>,
    stream: tokio::net::UnixStream,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let inner = Arc::clone(&inner);
        async move { Ok::<_, Infallible>(inner.handle(request).await) }
    });
    // Every client's `:authority` reaches the service (see `authority`).
    let stream = authority::Normalized::new(stream);
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_frame_size(authority::MAX_FRAME_SIZE)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "client connection ended");
            }
        }
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

impl Inner {
    async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        // ImageService calls are unary: the request is one small message.
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                return grpc::error_response(
                    Code::Cancelled,
                    &format!("regcred cri-proxy: reading the request failed: {err}"),
                );
            }
        };
        let head = RequestHead::from_parts(parts);
        if head.uri.path() == regcred_cri_api::methods::PULL_IMAGE {
            self.pull_image(head, body).await
        } else {
            self.forward(&head, body).await
        }
    }

    /// Sends the request as it came and streams the runtime's response back.
    async fn forward(&self, head: &RequestHead, body: Bytes) -> Response<ProxyBody> {
        let path = head.uri.path();
        let started = Instant::now();
        let result = self.runtime.call(head, body, is_image_service(path)).await;
        self.metrics.runtime_call(path, started.elapsed());
        match result {
            Ok(response) => response.map(ProxyBody::Stream),
            Err(err) => {
                tracing::warn!(method = path, error = %err, "runtime unavailable");
                grpc::error_response(Code::Unavailable, &format!("regcred cri-proxy: {err}"))
            }
        }
    }
}

/// ImageService calls are idempotent: one may be sent again on a fresh connection.
fn is_image_service(path: &str) -> bool {
    path.starts_with("/runtime.v1.ImageService/")
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

/// Binds a unix socket at `path` (mode 0660), creating its directory; a socket file left
/// by an earlier run is removed first, unless a process still answers on it.
///
/// # Errors
///
/// `AddrInUse` when another process serves on `path`; other I/O errors as they come.
pub async fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;

    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another process serves on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
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

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/proxy.sock");
        let live = bind_unix(&path).await.unwrap();
        let err = bind_unix(&path).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(live);
        // The file is still there, nobody answers: it is replaced.
        assert!(path.exists());
        bind_unix(&path).await.unwrap();
    }
}
