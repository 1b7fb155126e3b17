//! containerd (the Debian package, 1.6) with its CRI plugin, in a temporary directory:
//! its own root, state, socket and registry host configuration.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::cri::CriClient;
use super::process::{
    CapturedLogs, ChildProcess, fixture_dir, print_logs_if_panicking, require_program, require_root,
};

/// How long containerd may take until its CRI socket answers.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running containerd whose CRI ImageService answers on [`Containerd::socket`].
///
/// Configuration (`config.toml` in the directory): `native` snapshotter, CNI
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
    /// Starts containerd and waits until its CRI ImageService answers.
    ///
    /// Panics (the test fails) when containerd is not installed, when not running as
    /// root, or when it does not come up; the panic carries its log.
    pub async fn start() -> Self {
        let program = require_program("containerd", "containerd");
        require_root("containerd");
        let dir = fixture_dir("containerd");
        let base = dir.path();
        std::fs::create_dir_all(base.join("certs.d")).expect("creating certs.d");
        std::fs::create_dir_all(base.join("cni")).expect("creating the CNI directory");
        let socket = base.join("containerd.sock");
        let config = base.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  # Never pulled: no pod is run, but the CRI plugin wants a sandbox image name.
  sandbox_image = "127.0.0.1:1/regcred-e2e/pause:none"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
                root = base.join("root").display(),
                state = base.join("state").display(),
                socket = socket.display(),
                opt = base.join("opt").display(),
                cni = base.join("cni").display(),
                certs = base.join("certs.d").display(),
            ),
        )
        .expect("writing the containerd config");

        let log = base.join("containerd.log");
        let mut process = ChildProcess::spawn(
            "containerd",
            &program,
            [std::ffi::OsStr::new("--config"), config.as_os_str()],
            &log,
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
        std::fs::write(
            hosts_dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
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
