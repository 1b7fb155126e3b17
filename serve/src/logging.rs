//! The logging set-up and the shutdown signal of the long-running commands (`webhook`,
//! `cri-proxy`).

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines (journald, kubectl logs).
    Text,
}

/// Logs to standard error: regcred at `level`; the libraries (h2, hyper, kube) at most
/// at info, so `debug` does not mean one line per HTTP/2 frame.
pub fn init_logging(level: tracing::Level, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("regcred", level)
        .with_default(std::cmp::min(level, tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(layer.with_ansi(false)).try_init(),
    };
}

/// Resolves on SIGTERM or SIGINT; never, with a warning, when signals cannot be watched.
pub async fn shutdown_signal(server: &str) {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::warn!("cannot watch for signals: stop the {server} with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
