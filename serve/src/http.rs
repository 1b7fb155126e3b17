//! The accept loop and the graceful drain, the same for every server.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::Listener;

/// How long connections may finish what they are doing after shutdown was asked for.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's headers (HTTP/1.1).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to finish the TLS handshake: an API server or a probe does
/// it in milliseconds; a client that dawdles holds a connection slot for nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection closed for idleness or evicted may take to go (an HTTP/2 GOAWAY
/// the client does not act on) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The default cap on open connections ([`HttpServer::max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The default time a connection with no request in flight stays open
/// ([`HttpServer::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// How often a client waiting for a slot looks for a connection turned idle.
const EVICT_RETRY: Duration = Duration::from_millis(100);

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
///
/// What clients can hold is bounded: at most [`HttpServer::max_connections`] at once,
/// at most [`HttpServer::max_connections_per_peer`] from one address, and a connection
/// with no request in flight (an idle HTTP/1.1 keep-alive or HTTP/2 connection, or one
/// still in its TLS handshake) is closed after [`HttpServer::idle_timeout`]. When a new
/// client comes at either cap, the connection idle the longest (of that peer, or of
/// anyone) is closed to make room, so idle clients cannot keep a busy one out; only
/// when every connection has a request in flight does the newcomer wait (the global
/// cap) or get closed (the peer's cap).
#[derive(Clone)]
#[must_use]
pub struct HttpServer {
    name: &'static str,
    protocols: Protocols,
    tls: Option<TlsAcceptor>,
    drain_timeout: Duration,
    max_connections: usize,
    max_per_peer: Option<usize>,
    idle_timeout: Option<Duration>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("name", &self.name)
            .field("protocols", &self.protocols)
            .field("tls", &self.tls.is_some())
            .field("drain_timeout", &self.drain_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_per_peer", &self.max_per_peer)
            .field("idle_timeout", &self.idle_timeout)
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
            max_per_peer: None,
            idle_timeout: None,
        }
    }

    /// At most this many connections from one peer address (default: no cap of its
    /// own). Unix-socket peers have no address and are not counted.
    pub fn max_connections_per_peer(mut self, connections: usize) -> Self {
        self.max_per_peer = Some(connections.max(1));
        self
    }

    /// Closes a connection that had no request in flight for this long (default: kept
    /// open, as the CRI proxy's one client, kubelet, wants).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
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

    /// Completes a TLS handshake on every connection first (within 5 s).
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
        let open = Arc::new(OpenConnections::default());
        let mut warned_full = false;
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.as_mut() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(server = self.name, error = %err, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let address = peer_address(&peer);
            if let Some(cap) = self.max_per_peer
                && !address.is_empty()
                && open.from(&address) >= cap
                && !open.evict_idle(Some(&address))
            {
                tracing::warn!(server = self.name, %peer, limit = cap,
                    "a peer at its connection limit with every connection busy; closed");
                continue;
            }
            if slots.available_permits() == 0 {
                if open.evict_idle(None) {
                    warned_full = false;
                } else if !warned_full {
                    tracing::warn!(
                        server = self.name,
                        limit = self.max_connections,
                        "at the connection limit with every connection busy; new clients wait \
                         until one closes"
                    );
                    warned_full = true;
                }
            }
            // The slot the evicted connection frees, or the next one to close; while
            // every connection is busy, one that turns idle is closed for this client.
            let mut acquire = std::pin::pin!(Arc::clone(&slots).acquire_owned());
            let slot = loop {
                tokio::select! {
                    () = shutdown.as_mut() => break None,
                    slot = acquire.as_mut() => break slot.ok(),
                    () = tokio::time::sleep(EVICT_RETRY) => {
                        open.evict_idle(None);
                    }
                }
            };
            let Some(slot) = slot else {
                break;
            };
            let tracked = open.add(address);
            let connection = self.clone().connection(
                stream,
                peer,
                service.clone(),
                stopped.clone(),
                Arc::clone(&tracked),
            );
            let open = Arc::clone(&open);
            connections.spawn(async move {
                let _slot = slot;
                connection.await;
                open.remove(&tracked);
            });
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

    /// One connection, until the client closes it, the drain ends it, or it is closed
    /// for idleness.
    async fn connection<I, S, B>(
        self,
        stream: I,
        peer: String,
        service: S,
        stopped: watch::Receiver<bool>,
        tracked: Arc<Tracked>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let service = Counting {
            inner: service,
            tracked: Arc::clone(&tracked),
        };
        match &self.tls {
            None => self.http(stream, &peer, service, stopped, &tracked).await,
            Some(tls) => {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream));
                let handshake = tokio::select! {
                    done = handshake => done,
                    () = tracked.evicted.notified() => {
                        tracing::debug!(server = self.name, %peer, "evicted during its TLS handshake");
                        return;
                    }
                };
                match handshake {
                    Ok(Ok(stream)) => self.http(stream, &peer, service, stopped, &tracked).await,
                    Ok(Err(err)) => {
                        tracing::debug!(server = self.name, %peer, error = %err, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(server = self.name, %peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn http<I, S, B>(
        &self,
        stream: I,
        peer: &str,
        service: S,
        mut stopped: watch::Receiver<bool>,
        tracked: &Tracked,
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
        let idle = async {
            let Some(timeout) = self.idle_timeout else {
                return std::future::pending().await;
            };
            loop {
                let quiet = tracked.idle_for();
                if let Some(quiet) = quiet
                    && quiet >= timeout
                {
                    return;
                }
                let wait = quiet.map_or(timeout, |q| timeout - q);
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
            }
        };
        let result = tokio::select! {
            result = connection.as_mut() => result,
            // The value changes once, to `true`; a dropped sender means the same.
            _ = stopped.changed() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = idle => {
                tracing::debug!(server = self.name, %peer, "idle connection closed");
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(CLOSE_GRACE, connection).await.unwrap_or(Ok(()))
            }
            () = tracked.evicted.notified() => {
                tracing::debug!(server = self.name, %peer, "idle connection closed for a new client");
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(CLOSE_GRACE, connection).await.unwrap_or(Ok(()))
            }
        };
        if let Err(err) = result {
            tracing::debug!(server = self.name, %peer, error = %err, "connection ended with an error");
        }
    }
}

/// The address part of a peer's `IP:port` (empty for unix sockets).
fn peer_address(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Tracked {
    id: u64,
    address: String,
    /// Requests in flight.
    busy: AtomicUsize,
    /// When the last request ended (or the connection was accepted).
    quiet_since: Mutex<Instant>,
    /// Told to close (it was the idle one picked to make room).
    evicted: Notify,
}

impl Tracked {
    /// How long it has had no request in flight; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(
            self.quiet_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .elapsed(),
        )
    }
}

/// Every open connection of one server.
#[derive(Debug, Default)]
struct OpenConnections {
    next: AtomicU64,
    all: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        self.all
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, address: String) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            address,
            busy: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
            evicted: Notify::new(),
        });
        self.lock().insert(tracked.id, Arc::clone(&tracked));
        tracked
    }

    fn remove(&self, tracked: &Tracked) {
        self.lock().remove(&tracked.id);
    }

    fn from(&self, address: &str) -> usize {
        self.lock()
            .values()
            .filter(|t| t.address == address)
            .count()
    }

    /// Tells the connection idle the longest (of `address`, or of anyone) to close, and
    /// forgets it, so that it is not picked twice; whether there was one.
    fn evict_idle(&self, address: Option<&str>) -> bool {
        let mut all = self.lock();
        let oldest = all
            .values()
            .filter(|t| address.is_none_or(|a| t.address == a))
            .filter_map(|t| t.idle_for().map(|idle| (idle, t.id)))
            .max();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(tracked) = all.remove(&id) {
            tracked.evicted.notify_one();
        }
        true
    }
}

/// The service of one connection, counting its requests in flight.
#[derive(Clone)]
struct Counting<S> {
    inner: S,
    tracked: Arc<Tracked>,
}

/// One request in flight; when it ends the connection's quiet time starts again.
struct InFlight(Arc<Tracked>);

impl InFlight {
    fn enter(tracked: &Arc<Tracked>) -> Self {
        tracked.busy.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(tracked))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .quiet_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, R> Service<R> for Counting<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        let in_flight = InFlight::enter(&self.tracked);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
