//! The accept loop and the graceful drain, the same for every server.

use std::future::Future;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Listener;

/// How long connections may finish what they are doing after shutdown was asked for.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to finish the TLS handshake or send a request's headers
/// (HTTP/1.1).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which HTTP versions a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 (by ALPN with TLS, by the preface without).
    #[default]
    Auto,
    /// HTTP/2 only, with prior knowledge (gRPC over a unix socket: kubelet's CRI client).
    Http2Only,
}

/// Serves a hyper service on a [`Listener`]: accepts, optionally completes a TLS
/// handshake, serves HTTP on each connection, and drains on shutdown.
#[derive(Clone)]
#[must_use]
pub struct HttpServer {
    name: &'static str,
    protocols: Protocols,
    tls: Option<TlsAcceptor>,
    drain_timeout: Duration,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.name)
            .field("protocols", &self.protocols)
            .field("tls", &self.tls.is_some())
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl HttpServer {
    /// A plain-HTTP server speaking both versions; `name` appears in its log lines.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            protocols: Protocols::Auto,
            tls: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// The HTTP versions spoken (default [`Protocols::Auto`]).
    pub fn protocols(mut self, protocols: Protocols) -> Self {
        self.protocols = protocols;
        self
    }

    /// Completes a TLS handshake on every connection first (within 10 s).
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// How long open connections may go on after shutdown (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Serves `service` on `listener` until `shutdown` completes, then drains: stops
    /// accepting, asks every open connection to finish gracefully and waits for them up
    /// to the drain timeout; connections still open then are cancelled. Accept errors
    /// are logged and retried.
    pub async fn serve<L, S, B>(
        &self,
        listener: L,
        service: S,
        shutdown: impl Future<Output = ()> + Send,
    ) where
        L: Listener,
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = shutdown.as_mut() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(self.clone().connection(
                            stream,
                            peer,
                            service.clone(),
                            stopped.clone(),
                        ));
                    }
                    Err(err) => {
                        tracing::warn!(server = self.name, error = %err, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let open = connections.len();
        if open > 0 {
            tracing::info!(server = self.name, connections = open, timeout = ?self.drain_timeout,
                "draining open connections");
        }
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(self.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                server = self.name,
                "connections still open after {:?}; cancelled",
                self.drain_timeout
            );
            connections.abort_all();
        }
    }

    /// One connection, until the client closes it or the drain ends it.
    async fn connection<I, S, B>(
        self,
        stream: I,
        peer: String,
        service: S,
        stopped: watch::Receiver<bool>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        match &self.tls {
            None => self.http(stream, &peer, service, stopped).await,
            Some(tls) => match tokio::time::timeout(CLIENT_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => self.http(stream, &peer, service, stopped).await,
                Ok(Err(err)) => {
                    tracing::debug!(server = self.name, %peer, error = %err, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(server = self.name, %peer, "TLS handshake timed out");
                }
            },
        }
    }

    async fn http<I, S, B>(
        &self,
        stream: I,
        peer: &str,
        service: S,
        mut stopped: watch::Receiver<bool>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if self.protocols == Protocols::Http2Only {
            builder = builder.http2_only();
        }
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(CLIENT_TIMEOUT);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            // The value changes once, to `true`; a dropped sender means the same.
            _ = stopped.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = result {
            tracing::debug!(server = self.name, %peer, error = %err, "connection ended with an error");
        }
    }
}
