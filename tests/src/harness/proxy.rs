//! The regcred CRI proxy between a CRI client and a runtime: in-process (the library, on
//! its own thread) or the real `regcred cri-proxy` binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use regcred_agent::{
    CriProxy, DirSource, ImageVerification, KubeSource, ProxyMetrics, PullRecords,
    PullSecretSource, VerificationPolicy,
};
use regcred_host::PolicyRunner;
use regcred_serve::bind_unix;
use regcred_types::RuntimeProfile;
use tempfile::TempDir;

use super::cri::CriClient;
use super::process::{CapturedLogs, ChildProcess, fixture_dir, print_logs_if_panicking};

/// How long the proxy may take until its socket accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The records directory's name in the proxy's directory.
const RECORDS_DIR: &str = "records";

/// Set this to the `regcred` binary to run instead of `target/<profile>/regcred`.
pub const REGCRED_BIN_ENV: &str = "REGCRED_BIN";

/// Where the proxy reads pods and pull Secrets.
#[derive(Debug, Clone)]
enum Secrets {
    /// `dir:PATH`.
    Dir(PathBuf),
    /// `kube`, with this kubeconfig (in-process: read by the harness; binary: `KUBECONFIG`).
    Kube { kubeconfig: PathBuf, ttl: Duration },
}

/// Configures a [`Proxy`].
#[derive(Debug)]
#[must_use]
pub struct ProxyBuilder {
    runtime: PathBuf,
    secrets: Secrets,
    profile: RuntimeProfile,
    policy: Option<PolicyRunner>,
    binary: bool,
    metrics: bool,
    json_logs: bool,
    kubeconfig_later: bool,
    verify_images: bool,
    verification_policy: VerificationPolicy,
    allowlist: Vec<String>,
    preloaded: Option<Vec<String>>,
}

impl ProxyBuilder {
    /// Records `ids` as the images that were on the node at the first start (what the
    /// agent notes from the runtime's list otherwise), before the proxy starts: for
    /// images a test cannot really put on the node beforehand.
    pub fn preloaded(mut self, ids: &[&str]) -> Self {
        self.preloaded = Some(ids.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// [`Self::verify_images`] with this policy and allowlist (the default policy and an
    /// empty allowlist unless set).
    pub fn verification_policy(mut self, policy: VerificationPolicy, allowlist: &[&str]) -> Self {
        self.verify_images = true;
        self.verification_policy = policy;
        self.allowlist = allowlist.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Decide at CreateContainer who may use an image on the node (in-process; the binary
    /// does by default), with the records in [`Proxy::records_dir`].
    pub fn verify_images(mut self) -> Self {
        self.verify_images = true;
        self
    }

    /// Read pods and Secrets from the Kubernetes API this kubeconfig names (server, CA
    /// and credentials: [`super::KubeApi::proxy_kubeconfig`]), caching answers for `ttl`
    /// (whole seconds for the binary).
    pub fn kube(mut self, kubeconfig: &Path, ttl: Duration) -> Self {
        self.secrets = Secrets::Kube {
            kubeconfig: kubeconfig.to_owned(),
            ttl,
        };
        self
    }

    /// The runtime profile (containerd unless set).
    pub fn runtime_profile(mut self, profile: RuntimeProfile) -> Self {
        self.profile = profile;
        self
    }

    /// Resolve with this runner (in-process only; the embedded module unless set).
    pub fn policy(mut self, policy: PolicyRunner) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Binary only: start with `KUBECONFIG` naming a file that is not there yet (a node
    /// agent started before kubelet's TLS bootstrap); [`Proxy::write_kubeconfig`] puts it
    /// there.
    pub fn kubeconfig_later(mut self) -> Self {
        self.kubeconfig_later = true;
        self
    }

    /// Run the real `regcred cri-proxy` binary instead of the library in-process.
    pub fn binary(mut self) -> Self {
        self.binary = true;
        self
    }

    /// Log JSON lines (`--log-format json`; binary only), as a log pipeline reads them.
    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    /// Serve metrics on a loopback port (binary only; in-process metrics are read
    /// directly with [`Proxy::metrics_text`]).
    pub fn with_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Starts the proxy and waits until its socket accepts connections.
    pub async fn start(self) -> Proxy {
        let dir = fixture_dir("proxy");
        let socket = dir.path().join("cri-proxy.sock");
        let log = dir.path().join("cri-proxy.log");
        if let Some(ids) = &self.preloaded {
            let records =
                PullRecords::open(&dir.path().join(RECORDS_DIR), Duration::from_secs(3600))
                    .unwrap_or_else(|e| panic!("{e}"));
            records
                .note_preloaded(&ids.iter().cloned().collect())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let pending_kubeconfig = match (&self.secrets, self.kubeconfig_later) {
            (Secrets::Kube { kubeconfig, .. }, true) => Some(kubeconfig.clone()),
            _ => None,
        };
        let running = if self.binary {
            self.start_binary(dir.path(), &socket, &log)
        } else {
            self.start_in_process(&socket, &log, &dir.path().join(RECORDS_DIR))
                .await
        };
        let mut proxy = Proxy {
            running,
            socket,
            log,
            dir,
            pending_kubeconfig,
        };
        proxy.wait_until_listening().await;
        proxy
    }

    fn start_binary(&self, dir: &Path, socket: &Path, log: &Path) -> Running {
        let mut args: Vec<String> = Vec::new();
        if let Secrets::Kube { kubeconfig, .. } = &self.secrets {
            // `env` sets KUBECONFIG for the proxy alone (tests run in parallel).
            let copy = dir.join("kubeconfig");
            if !self.kubeconfig_later {
                std::fs::copy(kubeconfig, &copy).expect("copying the kubeconfig");
            }
            args.push(format!("KUBECONFIG={}", copy.display()));
        }
        args.extend([
            regcred_binary().display().to_string(),
            "cri-proxy".into(),
            "--listen".into(),
            format!("unix://{}", socket.display()),
            "--runtime".into(),
            format!("unix://{}", self.runtime.display()),
            "--runtime-profile".into(),
            self.profile.as_str().into(),
            "--log-level".into(),
            "debug".into(),
            "--pull-records-dir".into(),
            dir.join(RECORDS_DIR).display().to_string(),
        ]);
        if self.json_logs {
            args.extend(["--log-format".into(), "json".into()]);
        }
        match &self.secrets {
            Secrets::Dir(path) => {
                args.extend(["--secrets-from".into(), format!("dir:{}", path.display())]);
            }
            Secrets::Kube { ttl, .. } => args.extend([
                "--secrets-from".into(),
                "kube".into(),
                "--kube-cache-ttl".into(),
                ttl.as_secs().to_string(),
            ]),
        }
        let metrics_addr = self.metrics.then(super::process::free_loopback_addr);
        if let Some(addr) = metrics_addr {
            args.extend(["--metrics-addr".into(), addr.to_string()]);
        }
        let env = super::process::require_program("env", "coreutils");
        let process = ChildProcess::spawn("regcred cri-proxy", &env, &args, log);
        Running::Binary {
            process,
            metrics_addr,
        }
    }

    async fn start_in_process(self, socket: &Path, log: &Path, records: &Path) -> Running {
        let verification = self.verify_images.then(|| {
            let records = PullRecords::open(records, Duration::from_secs(3600))
                .unwrap_or_else(|e| panic!("{e}"));
            ImageVerification::new(self.verification_policy, Arc::new(records))
                .allowlist(self.allowlist.clone())
                .unwrap_or_else(|e| panic!("{e}"))
        });
        let policy = match self.policy {
            Some(policy) => policy,
            None => shared_policy(),
        };
        let listener = bind_unix(socket).await.expect("binding the proxy socket");
        let listener = listener.into_std().expect("proxy listener");
        let log_file = std::fs::File::create(log).expect("creating the proxy log");
        let metrics = Arc::new(ProxyMetrics::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime_socket = self.runtime.clone();
        let secrets = self.secrets.clone();
        let profile = self.profile;
        let proxy_metrics = Arc::clone(&metrics);
        let thread = std::thread::Builder::new()
            .name("cri-proxy".into())
            .spawn(move || {
                // Everything the proxy logs on this thread goes to its log file.
                use tracing_subscriber::layer::SubscriberExt as _;
                let subscriber = tracing_subscriber::registry()
                    .with(
                        tracing_subscriber::filter::Targets::new()
                            .with_target("regcred", tracing::Level::DEBUG)
                            .with_default(tracing::Level::INFO),
                    )
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_ansi(false)
                            .with_writer(Mutex::new(log_file)),
                    );
                let _guard = tracing::subscriber::set_default(subscriber);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let source: Arc<dyn PullSecretSource> = match secrets {
                        Secrets::Dir(dir) => Arc::new(DirSource::new(dir)),
                        Secrets::Kube { kubeconfig, ttl } => {
                            let config = super::kube_api::config_from_file(&kubeconfig).await;
                            let client = kube::Client::try_from(config).expect("kube client");
                            Arc::new(
                                KubeSource::builder(client)
                                    .ttl(ttl)
                                    // Generous for a loaded machine; an outage in the
                                    // tests (the API server stopped) is a refused
                                    // connection, answered at once.
                                    .request_timeout(Duration::from_secs(5))
                                    .build(),
                            )
                        }
                    };
                    let mut builder = CriProxy::builder(runtime_socket, source, policy)
                        .runtime_profile(profile)
                        .metrics(proxy_metrics);
                    if let Some(verification) = verification {
                        builder = builder.verification(verification);
                    }
                    let proxy = builder.build();
                    let listener =
                        tokio::net::UnixListener::from_std(listener).expect("proxy listener");
                    // A hard stop: the test's clients live on the test's runtime, which is
                    // blocked in `drop` and could not answer a graceful shutdown.
                    tokio::select! {
                        () = proxy.serve(listener, std::future::pending()) => {
                            tracing::error!("proxy stopped");
                        }
                        _ = stopped => {}
                    }
                });
            })
            .expect("starting the proxy thread");
        Running::InProcess {
            stop: Some(stop),
            thread: Some(thread),
            metrics,
        }
    }
}

/// The embedded policy module, compiled once for all in-process proxies of a test run.
fn shared_policy() -> PolicyRunner {
    static POLICY: OnceLock<PolicyRunner> = OnceLock::new();
    POLICY
        .get_or_init(|| PolicyRunner::wasm().expect("the embedded policy module loads"))
        .clone()
}

/// The `regcred` binary: `$REGCRED_BIN`, else `regcred` in the target directory this
/// test binary was built into (`cargo test --workspace` builds it; with `-p regcred-tests`
/// alone, run `cargo build -p regcred` first).
pub fn regcred_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(REGCRED_BIN_ENV) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/e2e-HASH -> target/<profile>/regcred
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("regcred"))
        .expect("the target directory");
    assert!(
        candidate.is_file(),
        "{} is missing: build it with `cargo build -p regcred` (cargo test --workspace \
         does), or set {REGCRED_BIN_ENV}",
        candidate.display()
    );
    candidate
}

enum Running {
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
        metrics: Arc<ProxyMetrics>,
    },
    Binary {
        process: ChildProcess,
        metrics_addr: Option<SocketAddr>,
    },
}

/// A running proxy listening on [`Proxy::socket`]. Dropping it stops it (in-process: a
/// graceful shutdown; the binary: SIGKILL to its process group) and removes its directory.
pub struct Proxy {
    running: Running,
    socket: PathBuf,
    log: PathBuf,
    dir: TempDir,
    /// With [`ProxyBuilder::kubeconfig_later`]: the kubeconfig still to write.
    pending_kubeconfig: Option<PathBuf>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("socket", &self.socket)
            .field("binary", &matches!(self.running, Running::Binary { .. }))
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy to the runtime on `runtime_socket` reading pods and Secrets from the
    /// manifests in `secrets_dir` (`--secrets-from dir:PATH`).
    pub fn builder(runtime_socket: &Path, secrets_dir: &Path) -> ProxyBuilder {
        ProxyBuilder {
            runtime: runtime_socket.to_owned(),
            secrets: Secrets::Dir(secrets_dir.to_owned()),
            profile: RuntimeProfile::Containerd,
            policy: None,
            binary: false,
            metrics: false,
            json_logs: false,
            kubeconfig_later: false,
            verify_images: false,
            verification_policy: VerificationPolicy::default(),
            allowlist: Vec::new(),
            preloaded: None,
        }
    }

    /// The proxy's socket (what kubelet's `imageServiceEndpoint` names).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The proxy's directory (socket, log, kubeconfig).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the kubeconfig a [`ProxyBuilder::kubeconfig_later`] proxy started without.
    pub fn write_kubeconfig(&self) {
        let source = self
            .pending_kubeconfig
            .as_ref()
            .expect("start the proxy with .kubeconfig_later()");
        let target = self.dir.path().join("kubeconfig");
        let temporary = self.dir.path().join("kubeconfig.tmp");
        std::fs::copy(source, &temporary).expect("copying the kubeconfig");
        std::fs::rename(&temporary, &target).expect("placing the kubeconfig");
    }

    /// Where the proxy keeps its pulled-image records.
    pub fn records_dir(&self) -> PathBuf {
        self.dir.path().join(RECORDS_DIR)
    }

    /// A CRI client connected to the proxy, checked with `ImageFsInfo` (forwarded to the
    /// runtime, so the runtime must be up).
    pub async fn client(&self) -> CriClient {
        CriClient::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to the proxy: {e}"))
    }

    /// A CRI client connected to the proxy without any call (for a runtime that is down).
    pub async fn client_unchecked(&self) -> CriClient {
        CriClient::connect_unchecked(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to the proxy: {e}"))
    }

    /// The proxy's log so far: the binary's stderr, or what the library logged.
    pub fn log_text(&self) -> String {
        super::process::read_lossy(&self.log)
    }

    /// The proxy's metrics in the Prometheus text format (the binary's from its
    /// `/metrics` endpoint, which needs [`ProxyBuilder::with_metrics`]).
    pub async fn metrics_text(&self) -> String {
        match &self.running {
            Running::InProcess { metrics, .. } => metrics.encode(),
            Running::Binary { metrics_addr, .. } => {
                let addr = metrics_addr.expect("start the binary with .with_metrics()");
                reqwest::get(format!("http://{addr}/metrics"))
                    .await
                    .expect("GET /metrics")
                    .text()
                    .await
                    .expect("metrics body")
            }
        }
    }

    /// The binary's process ID (`None` in-process).
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Running::Binary { process, .. } => Some(process.pid()),
            Running::InProcess { .. } => None,
        }
    }

    /// Sends SIGTERM to the binary and waits (at most 10 s) for it to exit; returns its
    /// exit status, `None` when it did not exit (or runs in-process). Async, so that the
    /// test's clients (on the same runtime) can answer the proxy's graceful shutdown.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let Running::Binary { process, .. } = &mut self.running else {
            return None;
        };
        let pid = rustix::process::Pid::from_raw(process.pid() as i32)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(status) = process.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    async fn wait_until_listening(&mut self) {
        let started = Instant::now();
        loop {
            if self.socket.exists() && tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            if let Running::Binary { process, .. } = &mut self.running
                && let Some(status) = process.exited()
            {
                panic!(
                    "regcred cri-proxy exited with {status} at start; its log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the proxy did not listen within {START_TIMEOUT:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl CapturedLogs for Proxy {
    fn log_files(&self) -> Vec<(String, PathBuf)> {
        vec![("cri-proxy".to_owned(), self.log.clone())]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        print_logs_if_panicking([("cri-proxy", self.log.as_path())]);
        if let Running::InProcess { stop, thread, .. } = &mut self.running {
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}
