//! `regcred webhook`: the validating admission webhook as a command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use regcred::serve::{LogFormat, init_logging, shutdown_signal};
use regcred::webhook::{
    DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, SecretAdmission, Webhook,
};

use super::policy::PolicyArgs;
use super::{PolicyConfigArg, load_config};

/// Arguments of `regcred webhook`.
#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// The serving certificate chain (PEM); reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); reloaded with it.
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// Where to serve HTTPS.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    addr: SocketAddr,
    #[command(flatten)]
    config: PolicyConfigArg,
    /// Serve Prometheus metrics on GET /metrics at this address (plain HTTP).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Also serve GET /healthz and /readyz at this address (plain HTTP, connections of
    /// its own): point kubelet's probes here so they never compete with reviews.
    #[arg(long, value_name = "ADDR")]
    probe_addr: Option<SocketAddr>,
    /// Also check kubernetes.io/dockerconfigjson and kubernetes.io/dockercfg Secrets.
    #[arg(long)]
    check_docker_secrets: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    max_body_bytes: usize,
    /// Most client connections open at once; past it, the longest-idle one is closed for
    /// a new client, or (every one busy) new ones wait in the listen queue.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most connections from one address; past it, that address's longest-idle one is
    /// closed for the new one, or (every one busy) the new one is.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    max_connections_per_peer: usize,
    /// Seconds a connection with no review in flight stays open.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    idle_timeout: u64,
    /// Seconds a review may take to get its turn and to send its whole body (408 past it).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = DEFAULT_BODY_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    body_timeout: u64,
    /// Seconds /readyz fails after SIGTERM before the server stops (lets the Service
    /// drain).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    shutdown_delay: u64,
    /// Log level: error, warn, info, debug or trace (debug logs every review).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

/// Runs the webhook until SIGTERM or SIGINT.
pub(crate) fn run(policy: &PolicyArgs, args: WebhookArgs) -> Result<u8> {
    init_logging(args.log_level, args.log_format);
    let config = load_config(&args.config)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Each review in flight holds one instance; the pool has room for all of them.
    let concurrency = workers * 2;
    let runner = policy.server_runner(u32::try_from(concurrency).unwrap_or(u32::MAX))?;
    let admission = SecretAdmission::new(runner)
        .policy_config(config)
        .check_docker_secrets(args.check_docker_secrets);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(concurrency)
        .thread_name("regcred-webhook")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut builder = Webhook::builder(admission, &args.tls_cert, &args.tls_key)
            .addr(args.addr)
            .body_limit(args.max_body_bytes)
            .max_concurrent_reviews(concurrency)
            .max_connections(args.max_connections)
            .max_connections_per_peer(args.max_connections_per_peer)
            .idle_timeout(Duration::from_secs(args.idle_timeout))
            .body_timeout(Duration::from_secs(args.body_timeout))
            .shutdown_delay(Duration::from_secs(args.shutdown_delay));
        if let Some(addr) = args.metrics_addr {
            builder = builder.metrics_addr(addr);
        }
        if let Some(addr) = args.probe_addr {
            builder = builder.probe_addr(addr);
        }
        let webhook = builder.bind().await?;
        webhook.serve(shutdown_signal("webhook")).await;
        anyhow::Ok(())
    })?;
    Ok(0)
}
