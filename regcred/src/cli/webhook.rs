//! `regcred webhook`: the validating admission webhook as a command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use regcred_serve::{init_logging, shutdown_signal};
use regcred_webhook::{
    DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_CA_VALIDITY, DEFAULT_CERT_VALIDITY,
    DEFAULT_CHECK_INTERVAL, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, ManagedCertificate, ManagedTlsConfig, SecretAdmission,
    Webhook,
};

use super::policy::PolicyArgs;
use super::{LogFormatArg, PolicyConfigArg, load_config};

/// Arguments of `regcred webhook`.
#[derive(Debug, Args)]
pub(crate) struct WebhookArgs {
    /// The serving certificate chain (PEM); reloaded when the file changes.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "tls_secret",
        conflicts_with = "tls_secret",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); reloaded with it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Manage the certificate here instead of files: a CA and a serving pair kept in
    /// this Secret (created when missing), renewed before they end, the CA bundle put
    /// into --webhook-configuration. Reads the API as the pod's ServiceAccount (or
    /// KUBECONFIG).
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        requires_all = ["tls_dns_name", "webhook_configuration"],
        value_parser = parse_secret_ref
    )]
    tls_secret: Option<(String, String)>,
    /// A DNS name of the managed serving certificate (repeat: the Service's names, such
    /// as regcred-webhook.regcred-system.svc).
    #[arg(long, value_name = "NAME", requires = "tls_secret")]
    tls_dns_name: Vec<String>,
    /// The ValidatingWebhookConfiguration whose webhooks get the managed CA bundle.
    #[arg(long, value_name = "NAME", requires = "tls_secret")]
    webhook_configuration: Option<String>,
    /// The managed CA's life in seconds (renewed with a third left).
    #[arg(long, value_name = "SECONDS", hide = true, default_value_t = DEFAULT_CA_VALIDITY.as_secs(), value_parser = clap::value_parser!(u64).range(60..))]
    tls_ca_validity: u64,
    /// The managed serving certificate's life in seconds (renewed with a third left).
    #[arg(long, value_name = "SECONDS", hide = true, default_value_t = DEFAULT_CERT_VALIDITY.as_secs(), value_parser = clap::value_parser!(u64).range(30..))]
    tls_cert_validity: u64,
    /// Seconds between checks of the managed certificate.
    #[arg(long, value_name = "SECONDS", hide = true, default_value_t = DEFAULT_CHECK_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    tls_check_interval: u64,
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
    #[arg(long, value_enum, default_value_t = LogFormatArg::Json)]
    log_format: LogFormatArg,
}

/// Runs the webhook until SIGTERM or SIGINT.
pub(crate) fn run(policy: &PolicyArgs, args: WebhookArgs) -> Result<u8> {
    init_logging(args.log_level, args.log_format.into());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Each review in flight holds one instance; the pool has room for all of them.
    let concurrency = workers * 2;
    let runner = policy.server_runner(u32::try_from(concurrency).unwrap_or(u32::MAX))?;
    let config = load_config(&args.config, &runner)?;
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
        let builder = match (&args.tls_secret, &args.tls_cert, &args.tls_key) {
            (Some((namespace, name)), _, _) => {
                let client = kube::Client::try_default().await.context(
                    "--tls-secret reads the API: no in-cluster ServiceAccount and no KUBECONFIG",
                )?;
                let config = ManagedTlsConfig {
                    ca_validity: Duration::from_secs(args.tls_ca_validity),
                    cert_validity: Duration::from_secs(args.tls_cert_validity),
                    check_interval: Duration::from_secs(args.tls_check_interval),
                    ..ManagedTlsConfig::new(
                        namespace,
                        name,
                        args.tls_dns_name.clone(),
                        args.webhook_configuration.clone().unwrap_or_default(),
                    )
                };
                let managed = ManagedCertificate::start(client, config).await?;
                Webhook::builder_managed(admission, managed)
            }
            (None, Some(cert), Some(key)) => Webhook::builder(admission, cert, key),
            // clap requires one of the two.
            _ => anyhow::bail!("--tls-cert and --tls-key, or --tls-secret, are required"),
        };
        let mut builder = builder
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

/// `NAMESPACE/NAME` of a Secret.
fn parse_secret_ref(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok((namespace.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAMESPACE/NAME")),
    }
}
