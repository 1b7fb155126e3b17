//! A kit's directory: the choices it was brought up with, its ports and generated
//! credentials (`DIR/kit-state.json`, mode 0600), the layout of each node, the binaries it
//! runs (asked of the build driver, `scripts/cluster`), and the clients that talk to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::parts::Parts;

/// The image every kit registry holds.
pub(crate) const IMAGE: &str = "private/hello:v1";
/// The pause image, imported into every containerd at start.
pub(crate) const PAUSE_IMAGE: &str = "regcred.local/kit/pause:v1";
/// An image the tests import into containerd by hand (a preloaded image, never pulled).
pub(crate) const PRELOADED_IMAGE: &str = "regcred.local/kit/preloaded:v1";
/// The Service range; its `.1` is the `kubernetes` Service.
pub(crate) const SERVICE_NET: &str = "10.96.77";
/// The most nodes a kit has.
pub(crate) const MAX_NODES: usize = 8;
/// The name of the first node; node K is `regcred-kit-K`.
pub(crate) const FIRST_NODE: &str = "regcred-kit";
/// The runtime a kit runs unless told.
pub(crate) const DEFAULT_RUNTIME: &str = "containerd-2.3";
/// The parts of the control plane, in start order.
pub(crate) const CONTROL_PARTS: [&str; 5] = [
    "registries",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// What a kit keeps between commands. Every field has a default, so that a state file
/// of an older kit (or one a field was added to since) still reads.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct State {
    /// The Cargo profile of this program (and of the regcred binaries it runs): known
    /// from where it runs, never stored.
    #[serde(skip)]
    pub(crate) profile: String,
    pub(crate) nodes: usize,
    pub(crate) runtime: String,
    pub(crate) mode: String,
    pub(crate) kubernetes: String,
    pub(crate) regcred: String,
    /// Every port a part listens on, picked free at the first `up` that needed it.
    pub(crate) ports: BTreeMap<String, u16>,
    pub(crate) credentials: Credentials,
    /// `net.ipv4.ip_forward` as it was before the kit's first `up`, restored by `down`.
    pub(crate) ip_forward_before: Option<String>,
    /// Whether the kit made the cgroup parent `k8s.io` (then `down` removes it).
    pub(crate) made_cgroup_parent: Option<bool>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("nodes", &self.nodes)
            .field("runtime", &self.runtime)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl State {
    /// A port the state holds (every caller asks after `Kit::assign_ports`).
    pub(crate) fn port(&self, name: &str) -> u16 {
        self.ports.get(name).copied().unwrap_or(0)
    }
}

/// The registries' generated credentials.
#[derive(Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) refresh_token: String,
}

/// One node's names and paths.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) index: usize,
    pub(crate) name: String,
    /// The suffix of its parts' names: empty for the first node, `-K` for node K.
    pub(crate) sfx: String,
    pub(crate) dir: PathBuf,
    pub(crate) bridge: String,
    pub(crate) subnet: String,
    pub(crate) ip: String,
    pub(crate) containerd_sock: PathBuf,
    pub(crate) nri_sock: PathBuf,
    pub(crate) runc_root: PathBuf,
    pub(crate) proxy_sock: PathBuf,
    pub(crate) decisions_sock: PathBuf,
    pub(crate) kubelet_kubeconfig: PathBuf,
}

impl Node {
    pub(crate) fn part(&self, what: &str) -> String {
        format!("{what}{}", self.sfx)
    }

    /// The PID file name of a supervised proxy's current process.
    pub(crate) fn proxy_child_part(&self) -> String {
        format!("cri-proxy{}-child", self.sfx)
    }
}

/// A kit directory and what it runs.
#[derive(Debug)]
pub(crate) struct Kit {
    /// The checkout (deploy/, scripts/).
    pub(crate) top: PathBuf,
    /// The build driver, scripts/cluster.
    pub(crate) script: PathBuf,
    pub(crate) dir: PathBuf,
    /// The directory of this program and the regcred binaries of its Cargo profile.
    pub(crate) rust_bin: PathBuf,
    pub(crate) state: State,
    pub(crate) parts: Parts,
    /// The Kubernetes binaries and helm, once known (`scripts/cluster bin-dir`).
    pub(crate) bin_dir: PathBuf,
    /// The runtime's binaries (`scripts/cluster runtime-dir`).
    pub(crate) runtime_dir: PathBuf,
}

impl Kit {
    /// Opens (creating) the kit directory `dir` and reads its state.
    pub(crate) fn open(top: PathBuf, script: PathBuf, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let rust_bin = exe
            .parent()
            .ok_or("this program's directory")?
            .to_path_buf();
        let profile = match rust_bin.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            _ => "release",
        };
        let state_file = dir.join("kit-state.json");
        let mut state = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|e| format!("{}: {e}", state_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => legacy_state(&dir),
            Err(e) => return Err(format!("reading {}: {e}", state_file.display())),
        };
        if state.nodes == 0 {
            state.nodes = 1;
        }
        if state.runtime.is_empty() {
            state.runtime = DEFAULT_RUNTIME.to_owned();
        }
        state.profile = profile.to_owned();
        Ok(Self {
            top,
            script,
            parts: Parts::new(&dir),
            dir,
            rust_bin,
            state,
            bin_dir: PathBuf::new(),
            runtime_dir: PathBuf::new(),
        })
    }

    /// Whether `up` ever ran here (the state file exists).
    pub(crate) fn has_state(&self) -> bool {
        self.dir.join("kit-state.json").is_file()
    }

    pub(crate) fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| format!("the kit's state for {}: {e}", self.dir.display()))?;
        regcred_tests::harness::pki::write_private(&self.dir.join("kit-state.json"), &text)
    }

    pub(crate) fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub(crate) fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub(crate) fn kubectl(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    pub(crate) fn helm(&self) -> PathBuf {
        self.bin_dir.join("helm")
    }

    pub(crate) fn ctr(&self) -> PathBuf {
        self.runtime_dir.join("ctr")
    }

    pub(crate) fn nri_plugin(&self) -> PathBuf {
        self.top.join("target/nri/regcred-nri")
    }

    pub(crate) fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.state.port("APISERVER"))
    }

    /// Node `index` (1-based).
    pub(crate) fn node(&self, index: usize) -> Node {
        let (name, sfx, dir) = if index == 1 {
            (FIRST_NODE.to_owned(), String::new(), self.dir.clone())
        } else {
            let name = format!("{FIRST_NODE}-{index}");
            let dir = self.dir.join("nodes").join(&name);
            (name, format!("-{index}"), dir)
        };
        let net = 76 + index;
        Node {
            index,
            bridge: format!("rckit{}", index - 1),
            subnet: format!("10.244.{net}.0/24"),
            ip: format!("10.244.{net}.1"),
            containerd_sock: dir.join("containerd/containerd.sock"),
            nri_sock: dir.join("containerd/nri.sock"),
            runc_root: dir.join("containerd/runc"),
            proxy_sock: dir.join("cri-proxy.sock"),
            decisions_sock: dir.join("nri-decisions.sock"),
            kubelet_kubeconfig: dir.join("kubelet.kubeconfig"),
            name,
            sfx,
            dir,
        }
    }

    pub(crate) fn nodes(&self) -> Vec<Node> {
        (1..=self.state.nodes).map(|k| self.node(k)).collect()
    }

    /// The node named `name`, or an error that lists the kit's nodes.
    pub(crate) fn node_named(&self, name: &str) -> Result<Node, String> {
        let nodes = self.nodes();
        nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
                format!("the kit has no node {name} (it has {})", names.join(" "))
            })
    }

    /// Whether the node has a regcred node agent (a CRI proxy) in this mode.
    pub(crate) fn has_agent(&self) -> bool {
        !matches!(self.state.mode.as_str(), "credential-provider" | "none")
    }

    /// Every part of the kit, control plane first.
    pub(crate) fn all_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = CONTROL_PARTS.iter().map(|p| (*p).to_owned()).collect();
        for node in self.nodes() {
            parts.push(node.part("containerd"));
            if self.has_agent() {
                parts.push(node.part("cri-proxy"));
            }
            if self.state.mode == "nri" {
                parts.push(node.part("regcred-nri"));
            }
            parts.push(node.part("kubelet"));
        }
        parts
    }

    /// Picks a free port for each name that has none yet: one nothing listens on now and
    /// that the state does not give to another part (a part that is down holds no socket,
    /// but will again).
    pub(crate) fn assign_ports(&mut self) -> Result<(), String> {
        let mut names: Vec<String> = [
            "ETCD",
            "ETCD_PEER",
            "APISERVER",
            "CONTROLLER_MANAGER",
            "SCHEDULER",
        ]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
        for k in 1..=self.state.nodes {
            for p in ["KUBELET", "KUBELET_HEALTHZ", "PROXY_METRICS"] {
                names.push(format!("{p}_{k}"));
            }
        }
        for name in names {
            if self.state.ports.contains_key(&name) {
                continue;
            }
            let port = loop {
                let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
                    .map_err(|e| format!("binding 127.0.0.1:0 for a free port: {e}"))?;
                let port = listener
                    .local_addr()
                    .map_err(|e| format!("a free port: {e}"))?
                    .port();
                if !self.state.ports.values().any(|p| *p == port) {
                    break port;
                }
            };
            self.state.ports.insert(name, port);
        }
        Ok(())
    }

    /// The registries' generated credentials, made at the first `up`.
    pub(crate) fn assign_credentials(&mut self) -> Result<(), String> {
        if !self.state.credentials.password.is_empty() {
            return Ok(());
        }
        let random = || -> Result<String, String> {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(|e| format!("random bytes: {e}"))?;
            Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
        };
        self.state.credentials = Credentials {
            username: "kit-user".to_owned(),
            password: format!("kit-pw-{}", random()?),
            refresh_token: format!("kit-refresh-{}", random()?),
        };
        Ok(())
    }

    /// `DIR/registries.env`, which `regcred-kit-registries` writes once it serves.
    pub(crate) fn registries_env(&self) -> PathBuf {
        self.dir.join("registries.env")
    }

    /// The registries' names and values (addresses, image IDs, logs).
    pub(crate) fn registries(&self) -> Result<BTreeMap<String, String>, String> {
        let path = self.registries_env();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e} (are the registries up?)", path.display()))?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// One value of `registries.env`.
    pub(crate) fn registry_value(
        registries: &BTreeMap<String, String>,
        name: &str,
    ) -> Result<String, String> {
        registries
            .get(name)
            .cloned()
            .ok_or_else(|| format!("registries.env has no {name}"))
    }

    /// host:port of the basic, token and public registries.
    pub(crate) fn registry_hosts(&self) -> Result<Vec<String>, String> {
        let registries = self.registries()?;
        ["BASIC_REGISTRY", "TOKEN_REGISTRY", "PUBLIC_REGISTRY"]
            .iter()
            .map(|name| Self::registry_value(&registries, name))
            .collect()
    }

    /// Runs the build driver (`scripts/cluster ARGS`) for the kit's Kubernetes release;
    /// returns its standard output, trimmed. Its standard error (build progress) is shown.
    pub(crate) fn driver(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(&self.script);
        command.args(args);
        if !self.state.kubernetes.is_empty() {
            command.env("REGCRED_KIT_KUBERNETES", &self.state.kubernetes);
        }
        let output = command
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", self.script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} {} failed ({})",
                self.script.display(),
                args.join(" "),
                output.status
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Learns where the binaries of the kit's release and runtime are.
    pub(crate) fn locate_binaries(&mut self) -> Result<(), String> {
        if self.state.kubernetes.is_empty() {
            self.state.kubernetes = self.driver(&["kubernetes-version"])?;
        }
        self.bin_dir = PathBuf::from(self.driver(&["bin-dir"])?);
        self.runtime_dir = PathBuf::from(self.driver(&["runtime-dir", &self.state.runtime])?);
        Ok(())
    }

    /// A client of the API server as the kit's admin.
    pub(crate) async fn client(&self) -> Result<kube::Client, String> {
        let path = self.admin_kubeconfig();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        kube::Client::try_from(config).map_err(|e| format!("a client of the API server: {e}"))
    }

    /// Runs `ctr ARGS` against `node`'s containerd; its output, or an error with it.
    pub(crate) fn ctr_run(&self, node: &Node, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(self.ctr());
        command
            .arg("--address")
            .arg(&node.containerd_sock)
            .args(args);
        run(&mut command, None)
    }

    /// Runs kubectl as the admin with `args` (and `stdin`), failing with its output; a
    /// request the API server does not answer fails after 60 s.
    pub(crate) fn kubectl_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut command = Command::new(self.kubectl());
        command
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .arg("--request-timeout=60s");
        command.args(args);
        run(&mut command, stdin)
    }
}

/// Runs `command` with `stdin` (if any); its standard output, or an error with both
/// outputs.
pub(crate) fn run(command: &mut Command, stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write as _;
    use std::process::Stdio;
    let program = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {program}: {e}"))?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|text| !text.is_empty())
            .collect();
        Err(format!(
            "`{program}` failed ({}): {}",
            output.status,
            said.join("\n")
        ))
    }
}

/// An environment variable's value, an empty one counted as unset (as `${NAME:-}` in
/// the shell that calls this program).
pub(crate) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The state of a kit directory an older scripts/cluster (bash) made: its choices
/// (`kit-nodes`, `kit-runtime`, `kit-mode`, `kit-kubernetes`, `kit-regcred`), ports
/// (`ports.env`), credentials (`secrets.env`), and what `down` puts back
/// (`ip_forward.orig`, `cgroup-parent.state`), so that `up` resumes it and `down` undoes
/// it as that version would have. A directory without them gives the defaults.
fn legacy_state(dir: &Path) -> State {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let pairs = |name: &str| -> BTreeMap<String, String> {
        read(name)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let mut ports = BTreeMap::new();
    for (name, value) in pairs("ports.env") {
        let Ok(port) = value.parse::<u16>() else {
            continue;
        };
        // NAME_PORT (node 1's, or the control plane's) and NAME_PORT_K (node K's).
        let key = match name.rsplit_once("_PORT") {
            Some((part, "")) if ["KUBELET", "KUBELET_HEALTHZ", "PROXY_METRICS"].contains(&part) => {
                format!("{part}_1")
            }
            Some((part, "")) => part.to_owned(),
            Some((part, node)) => format!("{part}{node}"),
            None => continue,
        };
        ports.insert(key, port);
    }
    let secrets = pairs("secrets.env");
    let secret = |name: &str| secrets.get(name).cloned().unwrap_or_default();
    State {
        profile: String::new(),
        nodes: read("kit-nodes").and_then(|n| n.parse().ok()).unwrap_or(1),
        runtime: read("kit-runtime").unwrap_or_default(),
        mode: read("kit-mode").unwrap_or_default(),
        kubernetes: read("kit-kubernetes").unwrap_or_default(),
        regcred: read("kit-regcred").unwrap_or_default(),
        ports,
        credentials: Credentials {
            username: secret("BASIC_USERNAME"),
            password: secret("BASIC_PASSWORD"),
            refresh_token: secret("REFRESH_TOKEN"),
        },
        ip_forward_before: read("ip_forward.orig"),
        made_cgroup_parent: read("cgroup-parent.state").map(|state| state == "made"),
    }
}
