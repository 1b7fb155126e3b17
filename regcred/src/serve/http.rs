//! The accept loop and the graceful drain, the same for every server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Listener;

/// How long connections may finish what they are doing after shutdown was asked for.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to finish the TLS handshake or send a request's headers
/// (HTTP/1.1).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default cap on open connections ([`HttpServer::max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// What an HTTP/2 client may send before the service reads it: the flow-control windows
/// of one stream and of the whole connection. hyper's defaults (1 MiB each) let every
/// connection pin a MiB the service never asked for; these keep it to a quarter, at no
/// cost on loopback or a cluster network.
const H2_STREAM_WINDOW: u32 = 64 << 10;
const H2_CONNECTION_WINDOW: u32 = 256 << 10;
/// Streams open at once on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 100;
/// The largest HTTP/1.1 read buffer (headers must fit; hyper's default is ~400 KiB).
const H1_MAX_BUF: usize = 64 << 10;
/// HTTP/2 pings on a quiet connection, and how long an answer may take before the
/// connection is closed (a peer that went away without a FIN).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

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
    max_connections: usize,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.name)
            .field("protocols", &self.protocols)
            .field("tls", &self.tls.is_some())
            .field("drain_timeout", &self.drain_timeout)
            .field("max_connections", &self.max_connections)
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// At most this many connections are open at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`], at least one); further clients wait in the listen
    /// backlog until one closes.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
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
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let mut warned_full = false;
        loop {
            // A slot first, then the accept: at the cap, clients wait in the backlog.
            let slot = tokio::select! {
                () = shutdown.as_mut() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            if slots.available_permits() == 0 && !warned_full {
                tracing::warn!(
                    server = self.name,
                    limit = self.max_connections,
                    "at the connection limit; new clients wait until one closes"
                );
            }
            warned_full = slots.available_permits() == 0;
            tokio::select! {
                () = shutdown.as_mut() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let connection =
                            self.clone().connection(stream, peer, service.clone(), stopped.clone());
                        connections.spawn(async move {
                            let _slot = slot;
                            connection.await;
                        });
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
            .header_read_timeout(CLIENT_TIMEOUT)
            .max_buf_size(H1_MAX_BUF);
        builder
            .http2()
            .timer(TokioTimer::new())
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn get(stream: &mut TcpStream) -> std::io::Result<String> {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn a_client_past_the_connection_limit_waits_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = hyper::service::service_fn(|_| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        });
        let server = HttpServer::new("test").max_connections(1);
        tokio::spawn(async move {
            server
                .serve(listener, service, std::future::pending())
                .await;
        });
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut first).await.unwrap().starts_with("HTTP/1.1 200"));
        let mut second = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), get(&mut second)).await;
        assert!(waiting.is_err(), "served past the limit: {waiting:?}");
        drop(first);
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 512];
            let n = second.read(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .expect("served once the first closed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
