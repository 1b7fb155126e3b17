//! Puts regcred's node side on a host and takes it off again: `regcred node install`,
//! `uninstall` and `status`, run on the node itself or from the Helm chart's privileged
//! DaemonSet (the host's root file system mounted at `--host-root`, systemd reached
//! through `nsenter` into PID 1's namespaces).
//!
//! What goes where, and why it survives `kubeadm upgrade`:
//!
//! | file | host path (defaults) |
//! |---|---|
//! | the `regcred` binary (this one) and `regcred-nri` | `/opt/regcred/bin/` |
//! | `regcred-cri-proxy.socket`, `regcred-cri-proxy.service`, `regcred-nri.service` | `/etc/systemd/system/` |
//! | containerd's NRI validator (NRI mode) | `/etc/containerd/conf.d/50-regcred.toml` |
//! | kubelet's endpoint | `/etc/kubernetes/kubelet.conf.d/50-regcred.conf` |
//!
//! kubelet's change is a drop-in of its `--config-dir`, not an edit of
//! `/var/lib/kubelet/config.yaml` and not a kubeadm patch: `kubeadm upgrade node` rewrites
//! `config.yaml` from the cluster's ConfigMap and applies patches only when it is run
//! with them, but leaves the drop-in directory alone. A kubelet started without
//! `--config-dir` reads no drop-in, so the installer refuses (changing nothing) and says
//! how to add the flag.
//!
//! The change is one transaction ([`install`]): every file is written beside its target and
//! read back, what was there before is kept under the state directory, then the files
//! are switched in by rename and the services restarted in dependency order (the agent
//! and the NRI plugin, then containerd, then kubelet), each checked active. Any failure
//! puts back the files as they were, restarts again what had been restarted and leaves
//! the node as it found it. [`InstallState`] records what was installed so that `uninstall`
//! restores every file byte for byte, in the reverse order.

mod apply;
mod host_exec;
mod state;

use std::path::{Path, PathBuf};

pub(crate) use apply::{Outcome, Systemctl, install, uninstall};
pub(crate) use host_exec::enter_host_namespaces;
pub(crate) use state::{FileStatus, InstallState, Phase, status};

/// The agent's unit as `deploy/cri-proxy` ships it; the installer rewrites its binary path.
const AGENT_UNIT: &str = include_str!("../../../deploy/cri-proxy/regcred-cri-proxy.service");
/// The agent's sockets, held by systemd across the agent's restarts.
const AGENT_SOCKET_UNIT: &str = include_str!("../../../deploy/cri-proxy/regcred-cri-proxy.socket");
/// regcred-nri's unit as `deploy/nri` ships it.
const NRI_UNIT: &str = include_str!("../../../deploy/nri/regcred-nri.service");
/// containerd's drop-in (NRI on, regcred a required validator plugin).
const CONTAINERD_DROP_IN: &str = include_str!("../../../deploy/nri/containerd-regcred.toml");
/// kubelet's drop-in for NRI mode (image calls to the agent).
const KUBELET_DROP_IN_NRI: &str = include_str!("../../../deploy/nri/kubelet-regcred.conf");
/// kubelet's drop-in for the legacy runtime-proxy mode (every CRI call to the agent).
const KUBELET_DROP_IN_RUNTIME_PROXY: &str = "# regcred (legacy runtime-proxy mode, written by \
`regcred node install`): every CRI call of kubelet goes through regcred's node agent.\n\
apiVersion: kubelet.config.k8s.io/v1beta1\n\
kind: KubeletConfiguration\n\
containerRuntimeEndpoint: unix:///run/regcred/cri-proxy.sock\n";

/// The agent's unit name.
pub(crate) const AGENT_SERVICE: &str = "regcred-cri-proxy.service";
/// The agent's socket unit name.
pub(crate) const AGENT_SOCKET: &str = "regcred-cri-proxy.socket";
/// regcred-nri's unit name.
pub(crate) const NRI_SERVICE: &str = "regcred-nri.service";

/// Which node mode to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    /// containerd 2.2 and later: kubelet's image calls to the agent, containerd's NRI
    /// asks regcred-nri at each container creation.
    Nri,
    /// containerd before 2.2: every CRI call of kubelet through the agent.
    RuntimeProxy,
}

/// Where things go, as paths on the host (absolute), and where the host is mounted.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The host's root file system as this process sees it (`/` on the node itself).
    pub host_root: PathBuf,
    /// Binaries (`regcred`, `regcred-nri`).
    pub bin_dir: PathBuf,
    /// systemd units.
    pub unit_dir: PathBuf,
    /// containerd's imported configuration directory.
    pub containerd_dir: PathBuf,
    /// kubelet's `--config-dir`.
    pub kubelet_dir: PathBuf,
    /// The installer's state and the files it replaced.
    pub state_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            bin_dir: PathBuf::from("/opt/regcred/bin"),
            unit_dir: PathBuf::from("/etc/systemd/system"),
            containerd_dir: PathBuf::from("/etc/containerd/conf.d"),
            kubelet_dir: PathBuf::from("/etc/kubernetes/kubelet.conf.d"),
            state_dir: PathBuf::from("/var/lib/regcred/node-install"),
        }
    }
}

impl Layout {
    /// A host path as this process reaches it (under `host_root`).
    pub(crate) fn on_host(&self, path: &Path) -> PathBuf {
        self.host_root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// What a file is for: decides what restarts when it changes, and the order of switching.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Part {
    /// A binary of a regcred service.
    Binary,
    /// A systemd unit of a regcred service.
    Unit,
    /// containerd's drop-in.
    Containerd,
    /// kubelet's drop-in.
    Kubelet,
}

/// One file the installer writes.
#[derive(Clone)]
pub(crate) struct Planned {
    /// The host path (absolute, as the node sees it).
    pub path: PathBuf,
    /// Its bytes.
    pub content: Vec<u8>,
    /// Its permission bits.
    pub mode: u32,
    /// What it is for.
    pub part: Part,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .field("part", &self.part)
            .finish()
    }
}

/// The binaries to install, as this process reaches them.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The `regcred` binary (normally this process's own).
    pub regcred: PathBuf,
    /// The `regcred-nri` binary (NRI mode only).
    pub nri_plugin: Option<PathBuf>,
}

/// The files of `mode`, with their content; nothing is written.
///
/// # Errors
/// A binary cannot be read, NRI mode without `regcred-nri`, or a shipped unit no longer
/// has the line the installer rewrites (a packaging mistake, named).
pub(crate) fn plan(layout: &Layout, mode: Mode, sources: &Sources) -> Result<Vec<Planned>, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("reading the binary {}: {e}", path.display()))
    };
    let bin = |name: &str| layout.bin_dir.join(name);
    let unit = |name: &str| layout.unit_dir.join(name);
    let bin_text = layout.bin_dir.display().to_string();

    let mut agent = replace_once(
        AGENT_UNIT,
        "ExecStart=/usr/local/bin/regcred ",
        &format!("ExecStart={bin_text}/regcred "),
        AGENT_SERVICE,
    )?;
    let mut socket = AGENT_SOCKET_UNIT.to_owned();
    if mode == Mode::RuntimeProxy {
        agent = replace_once(
            &agent,
            " \\\n    --nri-decisions unix:///run/regcred/nri-decisions.sock",
            "",
            AGENT_SERVICE,
        )?;
        socket = replace_once(
            &socket,
            "ListenStream=/run/regcred/nri-decisions.sock\n",
            "",
            AGENT_SOCKET,
        )?;
    }
    let mut files = vec![
        Planned {
            path: bin("regcred"),
            content: read(&sources.regcred)?,
            mode: 0o755,
            part: Part::Binary,
        },
        Planned {
            path: unit(AGENT_SOCKET),
            content: socket.into_bytes(),
            mode: 0o644,
            part: Part::Unit,
        },
        Planned {
            path: unit(AGENT_SERVICE),
            content: agent.into_bytes(),
            mode: 0o644,
            part: Part::Unit,
        },
    ];
    match mode {
        Mode::Nri => {
            let plugin = sources.nri_plugin.as_deref().ok_or(
                "NRI mode needs the regcred-nri binary (--nri-plugin PATH; the image has it at \
                 /usr/local/bin/regcred-nri)",
            )?;
            let nri_unit = replace_once(
                NRI_UNIT,
                "ExecStart=/usr/local/bin/regcred-nri ",
                &format!("ExecStart={bin_text}/regcred-nri "),
                NRI_SERVICE,
            )?;
            files.push(Planned {
                path: bin("regcred-nri"),
                content: read(plugin)?,
                mode: 0o755,
                part: Part::Binary,
            });
            files.push(Planned {
                path: unit(NRI_SERVICE),
                content: nri_unit.into_bytes(),
                mode: 0o644,
                part: Part::Unit,
            });
            files.push(Planned {
                path: layout.containerd_dir.join("50-regcred.toml"),
                content: CONTAINERD_DROP_IN.as_bytes().to_vec(),
                mode: 0o644,
                part: Part::Containerd,
            });
            files.push(Planned {
                path: layout.kubelet_dir.join("50-regcred.conf"),
                content: KUBELET_DROP_IN_NRI.as_bytes().to_vec(),
                mode: 0o644,
                part: Part::Kubelet,
            });
        }
        Mode::RuntimeProxy => files.push(Planned {
            path: layout.kubelet_dir.join("50-regcred.conf"),
            content: KUBELET_DROP_IN_RUNTIME_PROXY.as_bytes().to_vec(),
            mode: 0o644,
            part: Part::Kubelet,
        }),
    }
    files.sort_by_key(|file| file.part);
    Ok(files)
}

fn replace_once(text: &str, from: &str, to: &str, what: &str) -> Result<String, String> {
    if text.matches(from).count() != 1 {
        return Err(format!(
            "the shipped {what} does not have exactly one {from:?} to rewrite (a packaging \
             mistake: report it)"
        ));
    }
    Ok(text.replacen(from, to, 1))
}

/// The services of `mode`, in the order they start.
pub(crate) fn services(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Nri => &[AGENT_SERVICE, NRI_SERVICE],
        Mode::RuntimeProxy => &[AGENT_SERVICE],
    }
}

/// What this host's running kubelet says about `--config-dir`, read from `proc_dir`
/// (`/proc` of a process that shares the host's PID namespace).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KubeletFlags {
    /// No kubelet process is running (a node being set up): nothing to check.
    NotRunning,
    /// kubelet runs without `--config-dir`.
    NoConfigDir,
    /// kubelet runs with this `--config-dir`.
    ConfigDir(PathBuf),
}

/// Finds kubelet among `proc_dir`'s processes and reads its `--config-dir`.
pub(crate) fn kubelet_flags(proc_dir: &Path) -> KubeletFlags {
    let Ok(entries) = std::fs::read_dir(proc_dir) else {
        return KubeletFlags::NotRunning;
    };
    for entry in entries.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        let is_kubelet = args
            .first()
            .and_then(|a| {
                Path::new(std::str::from_utf8(a).ok()?)
                    .file_name()
                    .map(|n| n == "kubelet")
            })
            .unwrap_or(false);
        if !is_kubelet {
            continue;
        }
        let mut rest = args.iter().skip(1).map(|a| String::from_utf8_lossy(a));
        while let Some(arg) = rest.next() {
            if let Some(dir) = arg.strip_prefix("--config-dir=") {
                return KubeletFlags::ConfigDir(PathBuf::from(dir));
            }
            if arg == "--config-dir"
                && let Some(dir) = rest.next()
            {
                return KubeletFlags::ConfigDir(PathBuf::from(dir.as_ref()));
            }
        }
        return KubeletFlags::NoConfigDir;
    }
    KubeletFlags::NotRunning
}

/// Checks, before anything is written, that the host will read what is installed.
///
/// # Errors
/// The message says what is missing and what the operator does about it.
pub(crate) fn preflight(
    layout: &Layout,
    mode: Mode,
    proc_dir: Option<&Path>,
) -> Result<(), String> {
    let kubelet_dir = &layout.kubelet_dir;
    let how = format!(
        "add --config-dir={dir} to kubelet's flags (kubeadm: KUBELET_EXTRA_ARGS in \
         /etc/default/kubelet or /etc/sysconfig/kubelet) and create the directory, or pass \
         --kubelet-config-dir with the directory your kubelet reads; nothing was changed",
        dir = kubelet_dir.display()
    );
    if let Some(proc_dir) = proc_dir {
        match kubelet_flags(proc_dir) {
            KubeletFlags::NotRunning => {}
            KubeletFlags::NoConfigDir => {
                return Err(format!(
                    "kubelet runs without --config-dir, so it would not read regcred's drop-in: {how}"
                ));
            }
            KubeletFlags::ConfigDir(dir) if dir != *kubelet_dir => {
                return Err(format!(
                    "kubelet reads drop-ins from {} but the installer would write to {}: pass \
                     --kubelet-config-dir {}; nothing was changed",
                    dir.display(),
                    kubelet_dir.display(),
                    dir.display()
                ));
            }
            KubeletFlags::ConfigDir(_) => {}
        }
    }
    if !layout.on_host(kubelet_dir).is_dir() {
        return Err(format!(
            "{} does not exist on the host: regcred changes kubelet only through a drop-in \
             there, which kubelet reads when started with --config-dir: {how}",
            kubelet_dir.display()
        ));
    }
    if mode == Mode::Nri {
        let config = layout.on_host(Path::new("/etc/containerd/config.toml"));
        if let Ok(text) = std::fs::read_to_string(&config) {
            let imports = text
                .lines()
                .map(str::trim_start)
                .find(|line| line.starts_with("imports"));
            let dir = layout.containerd_dir.display().to_string();
            if let Some(line) = imports
                && !line.contains(&dir)
            {
                return Err(format!(
                    "/etc/containerd/config.toml sets `{line}`, which leaves out {dir}: add \
                     \"{dir}/*.toml\" to it (containerd 2.x imports that directory only by \
                     default); nothing was changed"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
