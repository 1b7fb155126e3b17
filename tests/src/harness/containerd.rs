//! containerd with its CRI plugin, in a temporary directory: its own root, state, socket
//! and registry host configuration.
//!
//! Which containerd: the kit's runtime `REGCRED_TEST_RUNTIME` names (`containerd-2.3`, the
//! default, `containerd-2.4`, or Debian's `containerd-1.6`), whose binaries
//! `scripts/cluster runtime-dir NAME` locates and `scripts/cluster build NAME` builds.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::containerd_config::{ContainerdConfig, plain_http_hosts_toml};
use super::cri::CriClient;
use super::process::{
    CapturedLogs, ChildProcess, fixture_dir, print_logs_if_panicking, require_root,
};

/// How long containerd may take until its CRI socket answers.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The variable naming the runtime the end-to-end tests run (a `scripts/cluster` runtime).
pub const RUNTIME_ENV: &str = "REGCRED_TEST_RUNTIME";

/// The runtime the tests run when [`RUNTIME_ENV`] is not set: the containerd LTS.
pub const DEFAULT_RUNTIME: &str = "containerd-2.3";

/// How containerd 2.x pulls CRI images: through its transfer service (2.x's default) or
/// the client's own pull (`use_local_image_pull = true`, the 1.x path). containerd 1.6
/// has only the local pull and ignores the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPath {
    /// The transfer service, containerd 2.x's default.
    Transfer,
    /// `use_local_image_pull = true`.
    Local,
}

/// The test runtime: its name and the directory with `containerd`, `containerd-shim-runc-v2`,
/// `ctr` and `runc`.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The `scripts/cluster` name, e.g. `containerd-2.3`.
    pub name: String,
    /// Where its binaries are.
    pub dir: PathBuf,
}

impl Runtime {
    /// Whether this runtime is containerd 1.x (configuration version 2, no transfer
    /// service for CRI pulls).
    pub fn is_containerd_1(&self) -> bool {
        self.name.starts_with("containerd-1.")
    }
}

/// The runtime [`RUNTIME_ENV`] names (default [`DEFAULT_RUNTIME`]), located once by
/// `scripts/cluster runtime-dir`; panics with the build command when it is not built.
pub fn test_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let name = std::env::var(RUNTIME_ENV).unwrap_or_else(|_| DEFAULT_RUNTIME.to_owned());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster");
        let out = std::process::Command::new(&script)
            .args(["runtime-dir", &name])
            .output()
            .unwrap_or_else(|e| panic!("running {} runtime-dir: {e}", script.display()));
        assert!(
            out.status.success(),
            "{RUNTIME_ENV}={name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        // (Debian's containerd-1.6 is /usr/bin, where its runc package links runc too.)
        for binary in ["containerd", "containerd-shim-runc-v2", "ctr", "runc"] {
            let path = dir.join(binary);
            assert!(
                path.is_file(),
                "{} of the test runtime {name} is missing; build it with \
                 `scripts/cluster build {name}` (scripts/test does), or run scripts/setup \
                 for Debian's containerd-1.6",
                path.display()
            );
        }
        Runtime { name, dir }
    })
}

/// A running containerd whose CRI ImageService answers on [`Containerd::socket`].
///
/// Configuration (`config.toml` in the directory): `overlayfs` snapshotter (`native` on 1.6), CNI
/// configuration in an empty directory (no pods are run), registry hosts from
/// `certs.d/HOST/hosts.toml`, written by [`Containerd::add_plain_http_registry`]; containerd
/// reads them at each pull, so registries may be added after start. Drop kills the process
/// group and removes the directory.
#[derive(Debug)]
pub struct Containerd {
    // Field order is drop order: the process dies before its directory goes.
    process: ChildProcess,
    socket: PathBuf,
    dir: TempDir,
}

impl Containerd {
    /// Starts the test runtime's containerd ([`test_runtime`]), pulling through its
    /// default path, and waits until its CRI ImageService answers.
    ///
    /// Panics (the test fails) when containerd is not built or installed, when not
    /// running as root, or when it does not come up; the panic carries its log.
    pub async fn start() -> Self {
        Self::start_with(PullPath::Transfer).await
    }

    /// [`Containerd::start`] with the CRI image pull path chosen.
    pub async fn start_with(pull: PullPath) -> Self {
        let runtime = test_runtime();
        let program = runtime.dir.join("containerd");
        require_root("containerd");
        let dir = fixture_dir("containerd");
        let base = dir.path();
        std::fs::create_dir_all(base.join("certs.d")).expect("creating certs.d");
        std::fs::create_dir_all(base.join("cni")).expect("creating the CNI directory");
        let socket = base.join("containerd.sock");
        let config = base.join("config.toml");
        let runc = runtime.dir.join("runc");
        let (runc_root, cni) = (base.join("runc"), base.join("cni"));
        let config_text = ContainerdConfig {
            dir: base,
            socket: &socket,
            runc: &runc,
            runc_root: &runc_root,
            cni_conf_dir: &cni,
            // Never pulled: no pod is run, but the CRI plugin wants a sandbox image name.
            sandbox_image: "127.0.0.1:1/regcred-e2e/pause:none",
            local_pull: pull == PullPath::Local,
            // NRI off: no pod is run, and two containerds may not share its socket.
            nri_socket: None,
            imports: &[],
        };
        let text = if runtime.is_containerd_1() {
            config_text.version2()
        } else {
            config_text.version3()
        };
        std::fs::write(&config, text).expect("writing the containerd config");

        let log = base.join("containerd.log");
        // The shim is found on PATH: the runtime's own first.
        let path = std::env::join_paths(std::iter::once(runtime.dir.clone()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .expect("PATH");
        let mut process = ChildProcess::spawn_with_env(
            "containerd",
            &program,
            [std::ffi::OsStr::new("--config"), config.as_os_str()],
            &log,
            [(std::ffi::OsStr::new("PATH"), path.as_os_str())],
        );
        let started = Instant::now();
        loop {
            if socket.exists() && CriClient::connect(&socket).await.is_ok() {
                break;
            }
            if let Some(status) = process.exited() {
                panic!(
                    "containerd exited with {status} at start; its log:\n{}",
                    process.log_text()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "containerd's CRI socket did not answer within {START_TIMEOUT:?}; its log:\n{}",
                    process.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            process,
            socket,
            dir,
        }
    }

    /// Tells containerd to reach `host` (`127.0.0.1:PORT`) over plain HTTP, for pulls and
    /// resolves: `certs.d/HOST/hosts.toml`.
    pub fn add_plain_http_registry(&self, host: &str) {
        let hosts_dir = self.dir.path().join("certs.d").join(host);
        std::fs::create_dir_all(&hosts_dir).expect("creating the registry's hosts directory");
        std::fs::write(hosts_dir.join("hosts.toml"), plain_http_hosts_toml(host))
            .expect("writing hosts.toml");
    }

    /// The CRI socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix:///…/containerd.sock`, the CRI endpoint as kubelet and the proxy write it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A CRI client connected to this containerd.
    pub async fn client(&self) -> CriClient {
        CriClient::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to containerd's CRI socket: {e}"))
    }

    /// The PID of the containerd process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// containerd's log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// containerd's log so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

impl CapturedLogs for Containerd {
    fn log_files(&self) -> Vec<(String, PathBuf)> {
        vec![("containerd".to_owned(), self.process.log_path().to_owned())]
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        print_logs_if_panicking([("containerd", self.process.log_path())]);
    }
}
