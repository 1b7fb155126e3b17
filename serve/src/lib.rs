//! The serving layer under both servers (the CRI proxy and the webhook): one of each of
//! the things a long-running regcred process needs.
//!
//! - [`Listener`]: TCP and unix listeners behind one accept call; [`bind_unix`] for the
//!   proxy's socket, or [`InheritedSockets`] for one a service manager holds for it.
//! - [`HttpServer`]: the accept loop, TLS where the server has it, HTTP/1.1 and HTTP/2 (or
//!   HTTP/2 only) with hyper, and the graceful drain: when the shutdown future completes,
//!   no new connection is accepted, every open one is told to finish (HTTP/2 GOAWAY,
//!   HTTP/1.1 `Connection: close` after the response under way), and the server waits for
//!   them up to its drain timeout ([`DEFAULT_DRAIN_TIMEOUT`]), then cancels the rest.
//!   What clients can pin is bounded: at most [`DEFAULT_MAX_CONNECTIONS`] connections
//!   (configurable), optionally a cap per peer address and an idle timeout, with the
//!   longest-idle connection closed to make room for a new client at either cap; 5 s for
//!   a TLS handshake, 10 s for HTTP/1.1 request headers, small HTTP/2 flow-control
//!   windows (64 KiB a stream, 256 KiB a connection, 100 streams), HTTP/2 keep-alive
//!   pings that close connections whose peer went away.
//! - [`serve_metrics`]: the one `GET /metrics` endpoint (Prometheus text format).
//! - [`BlockingExecutor`]: a bounded pool for the policy calls and file reads that must
//!   not run on the async runtime's threads.
//! - [`init_logging`] and [`shutdown_signal`]: logging to standard error, SIGTERM/SIGINT.

#![warn(missing_docs)]

mod blocking;
mod http;
mod listener;
mod logging;
mod metrics;

pub use blocking::{BlockingError, BlockingExecutor};
pub use http::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HttpServer, Protocols,
};
pub use listener::{
    FileIdentity, InheritedSockets, Listener, bind_unix, file_identity, remove_if_same,
};
pub use logging::{LogFormat, init_logging, shutdown_signal};
pub use metrics::{METRICS_CONTENT_TYPE, serve_metrics};
