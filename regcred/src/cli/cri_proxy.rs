//! `regcred cri-proxy`: the CRI image-service proxy as a command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::net::UnixListener;

use regcred_agent::{
    CriProxy, DEFAULT_DECISION_BUDGET, DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALE_FOR, DEFAULT_TTL,
    DirSource, ImageVerification, KubeSource, PullRecords, PullSecretSource, SecretsFrom,
    VerificationPolicy, unix_socket_path,
};
use regcred_host::PolicyRunner;
use regcred_serve::{
    BlockingExecutor, FileIdentity, InheritedSockets, bind_unix, file_identity, init_logging,
    remove_if_same, serve_metrics, shutdown_signal,
};

use super::{LogFormatArg, PolicyConfigArg, ProfileArg, load_config};

/// How long a pulled-image record lets a pod use an image without asking the registry
/// again (default): a day.
/// The agent's default `--pull-records-dir` (also where `doctor --node` looks).
pub(super) const DEFAULT_RECORDS_DIR: &str = "/var/lib/regcred/cri-proxy";
pub(super) const DEFAULT_PULL_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Arguments of `regcred cri-proxy`.
#[derive(Debug, Args)]
pub(crate) struct CriProxyArgs {
    /// Where kubelet connects: its imageServiceEndpoint. In the legacy runtime-proxy mode
    /// (runtimes without an NRI validator: containerd before 2.2) also its
    /// containerRuntimeEndpoint, and the proxy decides at CreateContainer who may use a
    /// private image already on the node.
    #[arg(long, value_name = "unix:///PATH")]
    listen: String,
    /// NRI mode (the default setup on containerd 2.2 and later): answer `regcred-nri`'s
    /// questions on this socket (who may use which image at container creation); kubelet's
    /// containerRuntimeEndpoint then stays the runtime's own socket.
    #[arg(long, value_name = "unix:///PATH")]
    nri_decisions: Option<String>,
    /// Milliseconds one NRI decision may take before it is refused (a verification pull
    /// still under way finishes in the background); keep it under the runtime's NRI
    /// plugin_request_timeout (2 s by default).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_DECISION_BUDGET.as_millis() as u64)]
    nri_decision_budget_ms: u64,
    /// The container runtime's CRI socket.
    #[arg(
        long,
        value_name = "unix:///PATH",
        default_value = "unix:///run/containerd/containerd.sock"
    )]
    runtime: String,
    /// Where pods and their pull Secrets are read: `kube` (the API: kubeconfig from
    /// KUBECONFIG or ~/.kube/config, else in-cluster) or `dir:PATH` (Pod and Secret
    /// manifests, read again on every pull).
    #[arg(long, value_name = "kube|dir:PATH", default_value = "kube")]
    secrets_from: SecretsFrom,
    /// The container runtime behind the proxy, which decides how AuthConfig is filled.
    #[arg(long, value_enum, default_value_t = ProfileArg::Containerd)]
    runtime_profile: ProfileArg,
    #[command(flatten)]
    config: PolicyConfigArg,
    /// Serve Prometheus metrics on GET /metrics at this address (plain HTTP).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// The node's name, in the source of the Events the agent writes on pods.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    node_name: Option<String>,
    /// Write no Kubernetes Events on pods (with --secrets-from kube they say why a pull
    /// Secret was skipped, a credential refused, an image refused).
    #[arg(long)]
    no_pod_events: bool,
    /// With `--secrets-from kube`: seconds an answer from the API is used without asking
    /// again (a rotated Secret is used at most this much later).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TTL.as_secs())]
    kube_cache_ttl: u64,
    /// With `--secrets-from kube`: seconds past that a cached answer is still used while
    /// the API fails; then pulls fail with the API's error.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_STALE_FOR.as_secs())]
    kube_stale_for: u64,
    /// With `--secrets-from kube`: seconds one API request may take (kube's retries of
    /// 429/503/504 included) before it counts as failed.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs())]
    kube_timeout: u64,
    /// Which images on the node a pod needs credentials of its own for, named after
    /// kubelet's imagePullCredentialsVerificationPolicy: NeverVerify (none: any pod runs
    /// any image on the node), NeverVerifyPreloadedImages (every image but the preloaded
    /// ones, present when the agent first listed the node's images, and public ones),
    /// NeverVerifyAllowlistedImages (also preloaded images, except those in
    /// --preloaded-images-verification-allowlist), AlwaysVerify (every image that is not
    /// public). Decided in NRI mode (--nri-decisions) or with kubelet's
    /// containerRuntimeEndpoint pointed at the proxy.
    #[arg(
        long,
        value_name = "POLICY",
        default_value_t = VerificationPolicy::NeverVerifyPreloadedImages
    )]
    image_pull_credentials_verification_policy: VerificationPolicy,
    /// With NeverVerifyAllowlistedImages: image names (no tag or digest; NAME/* for every
    /// image under a path) that every pod may use when they are on the node without a
    /// regcred pull. Repeat or separate with commas.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    preloaded_images_verification_allowlist: Vec<String>,
    /// Where the records of which credentials pulled which image are kept (created, mode
    /// 0700; no secret values, keyed hashes). They survive a restart of the proxy.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RECORDS_DIR)]
    pull_records_dir: std::path::PathBuf,
    /// The key of the records' credential hashes (HMAC-SHA256; created, 32 random bytes,
    /// mode 0600, when missing). Default: DIR.key beside --pull-records-dir, outside it,
    /// so a copy of the records holds nothing to test guessed passwords with.
    #[arg(long, value_name = "FILE")]
    pull_records_key: Option<std::path::PathBuf>,
    /// Seconds a record lets a pod whose credentials pulled an image use it again
    /// without asking the registry (a registry outage does not stop it); after that the
    /// registry is asked again.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PULL_RECORD_TTL.as_secs())]
    pull_record_ttl: u64,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: tracing::Level,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
}

/// Runs the proxy until SIGTERM or SIGINT, then removes the sockets it bound (not those a
/// service manager passed it).
pub(crate) fn run(policy: PolicyRunner, args: CriProxyArgs) -> Result<u8> {
    // Sockets a service manager holds for the agent (deploy/cri-proxy's socket unit) are
    // taken as they are: they outlive this process, so kubelet and regcred-nri wait in
    // their backlog across a restart instead of finding no socket. Read first, while this
    // is the only thread: reading them clears LISTEN_FDS from the environment.
    let inherited = InheritedSockets::from_env();
    init_logging(args.log_level, args.log_format.into());
    let config = load_config(&args.config, &policy)?;
    let listen = unix_socket_path(&args.listen)?;
    let decisions = args
        .nri_decisions
        .as_deref()
        .map(unix_socket_path)
        .transpose()
        .context("--nri-decisions")?;
    let budget = Duration::from_millis(args.nri_decision_budget_ms.max(1));
    let runtime_socket = unix_socket_path(&args.runtime)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("regcred-cri-proxy")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Policy calls and directory reads share one bound: a thread each per CPU.
    let executor =
        BlockingExecutor::new(std::thread::available_parallelism().map_or(2, |n| n.get()));
    // The image checks' flags and records first: a mistake there is reported before
    // anything is dialled.
    let verification_policy = args.image_pull_credentials_verification_policy;
    if !args.preloaded_images_verification_allowlist.is_empty()
        && verification_policy != VerificationPolicy::NeverVerifyAllowlistedImages
    {
        anyhow::bail!(
            "--preloaded-images-verification-allowlist is used only with \
             --image-pull-credentials-verification-policy NeverVerifyAllowlistedImages \
             (it is {verification_policy})"
        );
    }
    // The cached-image checks are proven on containerd (2.3, 2.4, 1.6) in real runs. On
    // CRI-O they are known only from its source (a pull answers with a repository digest,
    // which the records follow by alias): until a run shows them true there, the agent
    // refuses to verify rather than allow in a way nobody has seen work (issue 23,
    // finding 2).
    if args.runtime_profile == super::ProfileArg::CriO
        && verification_policy != VerificationPolicy::NeverVerify
    {
        anyhow::bail!(
            "--runtime-profile cri-o: the cached private image checks \
             (--image-pull-credentials-verification-policy {verification_policy}) are not \
             proven on CRI-O (no CRI-O could be run where regcred is tested), so they are \
             refused rather than trusted; give \
             --image-pull-credentials-verification-policy NeverVerify and rely on kubelet's \
             own checks (KEP-2535), or run containerd"
        );
    }
    let verification = if verification_policy == VerificationPolicy::NeverVerify {
        None
    } else {
        let ttl = Duration::from_secs(args.pull_record_ttl);
        let key = args
            .pull_records_key
            .clone()
            .unwrap_or_else(|| regcred_agent::default_key_file(&args.pull_records_dir));
        // Another agent on the same records (the one this replaces, still draining) lets
        // go by itself: wait for it. Anything else wrong with the records is reported
        // and the agent exits, for the operator (or the service manager) to act.
        let mut waited = Duration::ZERO;
        let records = loop {
            match PullRecords::open_with_key(&args.pull_records_dir, &key, ttl) {
                Err(err @ regcred_agent::RecordsError::Locked { .. }) => {
                    let pause = backoff(waited);
                    tracing::warn!(error = %err, retry_in = ?pause,
                        "the records are held by another process; waiting for them");
                    std::thread::sleep(pause);
                    waited += pause;
                }
                opened => break opened?,
            }
        };
        let verification = ImageVerification::new(verification_policy, Arc::new(records))
            .allowlist(args.preloaded_images_verification_allowlist.clone())
            .map_err(|err| anyhow::anyhow!("--preloaded-images-verification-allowlist: {err}"))?;
        Some(verification)
    };
    runtime.block_on(async move {
        let mut stale_answers = None;
        let mut events = None;
        let secrets: Arc<dyn PullSecretSource> = match &args.secrets_from {
            SecretsFrom::Dir(dir) => Arc::new(DirSource::new(dir).executor(executor.clone())),
            SecretsFrom::Kube => {
                let builder = KubeSource::from_env().await;
                let source = builder
                    .ttl(Duration::from_secs(args.kube_cache_ttl))
                    .stale_for(Duration::from_secs(args.kube_stale_for))
                    .request_timeout(Duration::from_secs(args.kube_timeout))
                    .build();
                stale_answers = Some(source.stale_answers());
                if !args.no_pod_events {
                    events = Some(source.events(args.node_name.clone()));
                }
                Arc::new(source)
            }
        };
        let mut builder = CriProxy::builder(&runtime_socket, secrets, policy)
            .runtime_profile(args.runtime_profile.into())
            .policy_config(config)
            .executor(executor);
        if let Some(verification) = verification {
            builder = builder.verification(verification);
        }
        if let Some(events) = events {
            builder = builder.events(events);
        }
        let proxy = builder.build();
        if let Some(counter) = stale_answers {
            proxy.metrics().register(Box::new(counter));
        }
        for refused in inherited.refused() {
            tracing::warn!(socket = %refused, "an inherited file descriptor is not a unix stream socket with a path; ignored");
        }
        let mut sockets = AgentSockets::new(inherited);
        let listener = sockets.listen(&listen, "--listen").await?;
        let (stop, stopped) = tokio::sync::watch::channel(());
        let decisions_task = match &decisions {
            Some(path) => {
                let listener = sockets.listen(path, "--nri-decisions").await?;
                let proxy = proxy.clone();
                let mut stopped = stopped.clone();
                Some(tokio::spawn(async move {
                    proxy
                        .serve_decisions(listener, budget, async move {
                            let _ = stopped.changed().await;
                        })
                        .await;
                }))
            }
            None => None,
        };
        if let Some(addr) = args.metrics_addr {
            let metrics_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let metrics = Arc::clone(proxy.metrics());
            let mut stopped = stopped.clone();
            tokio::spawn(serve_metrics(
                metrics_listener,
                Arc::new(move || metrics.encode()),
                async move {
                    let _ = stopped.changed().await;
                },
            ));
        }
        tracing::info!(
            listen = %listen.display(),
            runtime = %runtime_socket.display(),
            secrets_from = %args.secrets_from,
            runtime_profile = %regcred_types::RuntimeProfile::from(args.runtime_profile),
            // (an absent value leaves the field out, not `None`: logs a machine can read)
            metrics_addr = args.metrics_addr.map(tracing::field::display),
            verification = %verification_policy,
            nri_decisions = decisions.as_ref().map(|p| tracing::field::display(p.display())),
            records = proxy
                .verification()
                .and_then(|v| v.records().file())
                .map(|path| tracing::field::display(path.display())),
            sockets_from_service_manager = sockets.from_manager,
            "regcred cri-proxy serving"
        );
        for path in sockets.inherited.untaken() {
            tracing::warn!(socket = %path.display(),
                "the service manager passed a socket that no flag names; it is not served");
        }
        proxy.serve(listener, shutdown_signal("proxy")).await;
        let _ = stop.send(());
        drop(stopped);
        if let Some(task) = decisions_task {
            let _ = task.await;
        }
        sockets.remove_bound();
        tracing::info!("regcred cri-proxy stopped");
        anyhow::Ok(())
    })?;
    Ok(0)
}

/// Where the agent's unix sockets come from: a service manager's, taken as they are and
/// left at exit (they outlive this process), or bound here and removed at exit.
struct AgentSockets {
    inherited: InheritedSockets,
    /// Sockets bound here, with the file each was, to remove at exit.
    bound: Vec<(PathBuf, FileIdentity)>,
    /// How many sockets came from the service manager.
    from_manager: usize,
}

impl AgentSockets {
    fn new(inherited: InheritedSockets) -> Self {
        Self {
            inherited,
            bound: Vec::new(),
            from_manager: 0,
        }
    }

    /// The listener for `path` (`flag`'s socket): the inherited one bound to it, else one
    /// bound here. A socket another process still serves on (the agent this replaces,
    /// draining) is freed by itself: it is waited for rather than an exit.
    async fn listen(&mut self, path: &Path, flag: &str) -> Result<UnixListener> {
        if let Some(taken) = self.inherited.take(path) {
            self.from_manager += 1;
            return taken.with_context(|| {
                format!(
                    "cannot serve on the inherited socket {} ({flag})",
                    path.display()
                )
            });
        }
        let mut waited = Duration::ZERO;
        loop {
            match bind_unix(path).await {
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
                    let pause = backoff(waited);
                    tracing::warn!(socket = %path.display(), error = %err, retry_in = ?pause,
                        "the socket is held by another process; waiting for it");
                    tokio::time::sleep(pause).await;
                    waited += pause;
                }
                result => {
                    let listener = result
                        .with_context(|| format!("cannot listen on {} ({flag})", path.display()))?;
                    self.bound
                        .extend(file_identity(path).map(|id| (path.to_path_buf(), id)));
                    return Ok(listener);
                }
            }
        }
    }

    /// Removes what this process bound, each only while it is still that file: a socket
    /// the service manager holds (or one bound there since) stays for the next agent.
    fn remove_bound(&self) {
        for (socket, identity) in &self.bound {
            if let Err(err) = remove_if_same(socket, *identity) {
                tracing::warn!(error = %err, "cannot remove {}", socket.display());
            }
        }
    }
}

/// The pause before the next try after waiting `waited` so far: 1 s, doubling, at most
/// 10 s.
fn backoff(waited: Duration) -> Duration {
    let pause = Duration::from_secs(1) + waited;
    pause.min(Duration::from_secs(10))
}
