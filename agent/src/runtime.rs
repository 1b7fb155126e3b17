//! The connection to the container runtime's CRI socket: one HTTP/2 connection, dialled
//! when first needed and again after it breaks, so a runtime that restarts is reached
//! again on the next call without restarting the proxy.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How long the HTTP/2 handshake with the runtime may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call could not reach the runtime. Its status (if any) never comes from here: a
/// call the runtime answered is a response, whatever its gRPC status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RuntimeError {
    /// The runtime socket could not be dialled (missing, refused: the runtime is down).
    #[error("cannot connect to the runtime at {socket}: {source}")]
    Connect {
        /// The runtime's socket.
        socket: PathBuf,
        /// The dial error.
        source: std::io::Error,
    },
    /// The socket accepted but did not speak HTTP/2 in time.
    #[error("no HTTP/2 handshake with the runtime at {socket}: {reason}")]
    Handshake {
        /// The runtime's socket.
        socket: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke while the call was under way.
    #[error("the connection to the runtime broke: {reason}")]
    Broken {
        /// What went wrong.
        reason: String,
    },
}

/// The parts of a request that are sent again on each attempt.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

impl RequestHead {
    pub(crate) fn from_parts(parts: hyper::http::request::Parts) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        }
    }

    /// The same head for another method (the proxy's own calls on a client's behalf).
    pub(crate) fn with_path(&self, path: &str) -> Self {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = path.parse().ok();
        Self {
            uri: Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/")),
            ..self.clone()
        }
    }

    /// A gRPC unary call of `path` made by the proxy itself.
    pub(crate) fn unary(path: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            hyper::header::TE,
            hyper::header::HeaderValue::from_static("trailers"),
        );
        Self {
            method: Method::POST,
            uri: path.parse().unwrap_or_else(|_| Uri::from_static("/")),
            version: Version::HTTP_2,
            headers,
        }
    }

    fn request(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = upstream_uri(&self.uri);
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        // The body may have grown (PullImage with auth): hyper sets the length of the body
        // it sends. gRPC clients do not send one; this keeps a client that does correct.
        request.headers_mut().remove(hyper::header::CONTENT_LENGTH);
        request
    }
}

/// The request's URI with a scheme and authority (HTTP/2 needs both); kubelet's own are
/// kept when present.
fn upstream_uri(uri: &Uri) -> Uri {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return uri.clone();
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::try_from(format!("http://localhost{path}")).unwrap_or_else(|_| uri.clone())
}

/// The runtime's CRI socket and the connection to it, if one is up.
#[derive(Debug)]
pub(crate) struct RuntimeConnection {
    socket: PathBuf,
    sender: Mutex<Option<SendRequest<Full<Bytes>>>>,
    dialling: tokio::sync::Mutex<()>,
}

impl RuntimeConnection {
    pub(crate) fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            sender: Mutex::new(None),
            dialling: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the runtime's response head (its body streams on).
    ///
    /// `idempotent` calls (every ImageService RPC) are sent once more on a fresh
    /// connection when the cached one turns out to be dead; others are not repeated.
    pub(crate) async fn call(
        &self,
        head: &RequestHead,
        body: Bytes,
        idempotent: bool,
    ) -> Result<Response<Incoming>, RuntimeError> {
        let attempts = if idempotent { 2 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let mut sender = self.sender().await?;
            if sender.ready().await.is_err() {
                self.forget();
                sender = self.sender().await?;
                if let Err(err) = sender.ready().await {
                    self.forget();
                    return Err(RuntimeError::Broken {
                        reason: err.to_string(),
                    });
                }
            }
            match sender.send_request(head.request(body.clone())).await {
                Ok(response) => return Ok(response),
                Err(err) => {
                    self.forget();
                    last = Some(RuntimeError::Broken {
                        reason: err.to_string(),
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| RuntimeError::Broken {
            reason: "no attempt was made".to_owned(),
        }))
    }

    /// The live cached connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, RuntimeError> {
        if let Some(sender) = self.cached() {
            return Ok(sender);
        }
        // One dial at a time: concurrent callers wait for it and share the connection.
        let _dialling = self.dialling.lock().await;
        if let Some(sender) = self.cached() {
            return Ok(sender);
        }
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| RuntimeError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let handshake = http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(stream));
        let (sender, connection) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(err)) => {
                return Err(RuntimeError::Handshake {
                    socket: self.socket.clone(),
                    reason: err.to_string(),
                });
            }
            Err(_) => {
                return Err(RuntimeError::Handshake {
                    socket: self.socket.clone(),
                    reason: format!("no answer within {HANDSHAKE_TIMEOUT:?}"),
                });
            }
        };
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection to the runtime ended");
            }
        });
        tracing::debug!(socket = %self.socket.display(), "connected to the runtime");
        *self.lock() = Some(sender.clone());
        Ok(sender)
    }

    fn cached(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut guard = self.lock();
        if guard.as_ref().is_some_and(SendRequest::is_closed) {
            *guard = None;
        }
        guard.clone()
    }

    fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SendRequest<Full<Bytes>>>> {
        // A panic while holding the lock leaves at worst a stale sender, which is checked.
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_kubelets_authority_or_adds_one() {
        let full: Uri = "http://localhost/runtime.v1.ImageService/ListImages"
            .parse()
            .unwrap();
        assert_eq!(upstream_uri(&full), full);
        let path_only: Uri = "/runtime.v1.ImageService/ListImages".parse().unwrap();
        assert_eq!(
            upstream_uri(&path_only).to_string(),
            "http://localhost/runtime.v1.ImageService/ListImages"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let connection = RuntimeConnection::new(&dir.path().join("nope.sock"));
        let head = RequestHead {
            method: Method::POST,
            uri: "/runtime.v1.ImageService/ListImages".parse().unwrap(),
            version: Version::HTTP_2,
            headers: HeaderMap::new(),
        };
        let err = connection
            .call(&head, Bytes::new(), true)
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("nope.sock"), "{err}");
    }
}
