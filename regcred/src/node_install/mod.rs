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
pub(crate) use state::{FileStatus, InstallState, Phase, installed_by, record_installer, status};

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
    pub content: Content,
    /// Its permission bits.
    pub mode: u32,
    /// What it is for.
    pub part: Part,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("path", &self.path)
            .field("content", &self.content)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("part", &self.part)
            .finish()
    }
}

/// What a planned file holds: bytes made here (units, drop-ins), or a file copied as it is
/// (the binaries, tens of MiB each: streamed, hashed and compared in pieces, never held
/// in memory, so the installer fits its pod's memory limit on an upgrade too).
#[derive(Clone)]
pub(crate) enum Content {
    /// These bytes.
    Bytes(Vec<u8>),
    /// The bytes of this file (as this process reaches it).
    File(PathBuf),
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "{} bytes", bytes.len()),
            Self::File(path) => write!(f, "the file {}", path.display()),
        }
    }
}

impl Content {
    /// The text of a unit or drop-in.
    fn text(text: impl Into<String>) -> Self {
        Self::Bytes(text.into().into_bytes())
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
    let read = |path: &Path| match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Content::File(path.to_owned())),
        Ok(_) => Err(format!("the binary {} is not a file", path.display())),
        Err(e) => Err(format!("reading the binary {}: {e}", path.display())),
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
            content: Content::text(socket),
            mode: 0o644,
            part: Part::Unit,
        },
        Planned {
            path: unit(AGENT_SERVICE),
            content: Content::text(agent),
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
                content: Content::text(nri_unit),
                mode: 0o644,
                part: Part::Unit,
            });
            files.push(Planned {
                path: layout.containerd_dir.join(CONTAINERD_DROP_IN_NAME),
                content: Content::text(CONTAINERD_DROP_IN),
                mode: 0o644,
                part: Part::Containerd,
            });
            files.push(Planned {
                path: layout.kubelet_dir.join("50-regcred.conf"),
                content: Content::text(KUBELET_DROP_IN_NRI),
                mode: 0o644,
                part: Part::Kubelet,
            });
        }
        Mode::RuntimeProxy => files.push(Planned {
            path: layout.kubelet_dir.join("50-regcred.conf"),
            content: Content::text(KUBELET_DROP_IN_RUNTIME_PROXY),
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
    let Some(args) = process_args(proc_dir, "kubelet") else {
        return KubeletFlags::NotRunning;
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if let Some(dir) = arg.strip_prefix("--config-dir=") {
            return KubeletFlags::ConfigDir(PathBuf::from(dir));
        }
        if arg == "--config-dir"
            && let Some(dir) = rest.next()
        {
            return KubeletFlags::ConfigDir(PathBuf::from(dir));
        }
    }
    KubeletFlags::NoConfigDir
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
        let config = proc_dir
            .and_then(containerd_config_flag)
            .unwrap_or_else(|| PathBuf::from(CONTAINERD_CONFIG));
        containerd_imports_drop_in(layout, &config)?;
    }
    Ok(())
}

/// The file name of regcred's containerd drop-in (NRI mode).
pub(crate) const CONTAINERD_DROP_IN_NAME: &str = "50-regcred.toml";

/// containerd's configuration file when it is started without `--config`.
pub(crate) const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";

/// The arguments (after the program) of the first process in `proc_dir` whose program's
/// file name is `name`.
fn process_args(proc_dir: &Path, name: &str) -> Option<Vec<String>> {
    for entry in std::fs::read_dir(proc_dir).ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let is_it = args
            .next()
            .is_some_and(|program| Path::new(&program).file_name().is_some_and(|n| n == name));
        if is_it {
            return Some(args.collect());
        }
    }
    None
}

/// The running containerd's `--config` (`-c`), if it runs and has one.
pub(crate) fn containerd_config_flag(proc_dir: &Path) -> Option<PathBuf> {
    let args = process_args(proc_dir, "containerd")?;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if let Some(path) = arg
            .strip_prefix("--config=")
            .or_else(|| arg.strip_prefix("-c="))
        {
            return Some(PathBuf::from(path));
        }
        if arg == "--config" || arg == "-c" {
            return rest.next().map(PathBuf::from);
        }
    }
    None
}

/// Checks that containerd's configuration `config` (a path on the host) imports the
/// drop-in the installer writes into `layout.containerd_dir`.
///
/// containerd 2.x reads `/etc/containerd/conf.d/*.toml` only where its configuration file
/// lists it under `imports`, as `containerd config default` writes it: without that line,
/// or without a configuration file (built-in defaults), it reads no drop-in at all (seen
/// with containerd 2.3.7; its `LoadConfig` follows the `imports` of the files it loads).
///
/// # Errors
/// The file is missing, is not TOML, or imports nothing that matches the drop-in. The
/// message names the file and what to add; it never quotes the file (a containerd
/// configuration may hold registry credentials).
pub(crate) fn containerd_imports_drop_in(layout: &Layout, config: &Path) -> Result<(), String> {
    let dir = layout.containerd_dir.display();
    let drop_in = layout.containerd_dir.join(CONTAINERD_DROP_IN_NAME);
    let add = format!(
        "add \"{dir}/*.toml\" to its top-level `imports` (containerd 2.x reads drop-ins \
         only from what that list names, as `containerd config default` writes it); nothing \
         was changed"
    );
    if !layout.on_host(config).exists() {
        return Err(format!(
            "{} does not exist, so containerd runs on its built-in defaults and reads no \
             drop-in, regcred's NRI requirement included: create it with `version = 3` and \
             `imports = [\"{dir}/*.toml\"]`; nothing was changed",
            config.display()
        ));
    }
    // containerd follows the imports of every file it loads (each once); so does this.
    let mut pending = vec![clean(config)];
    let mut loaded: Vec<PathBuf> = Vec::new();
    let mut named = Vec::new();
    while let Some(file) = pending.pop() {
        if loaded.contains(&file) {
            continue;
        }
        let imports = read_imports(layout, &file)?;
        let base = file.parent().unwrap_or(Path::new("/")).to_owned();
        for import in imports {
            let path = clean(&base.join(&import));
            for staging in [state::STAGED, state::KEPT] {
                if import_matches(&path, &state::beside(&drop_in, staging)) {
                    return Err(format!(
                        "containerd's configuration {} imports {:?}, which would also read \
                         the installer's temporary copies ({}{staging}) while it switches: \
                         import \"{dir}/*.toml\" instead; nothing was changed",
                        file.display(),
                        import,
                        drop_in.display()
                    ));
                }
            }
            if import_matches(&path, &drop_in) {
                return Ok(());
            }
            // A file that exists, imported, is read in turn (a missing one: containerd
            // fails to start, not regcred's business here).
            if !import.contains(['*', '?', '[']) && layout.on_host(&path).is_file() {
                pending.push(path);
            }
            named.push(import);
        }
        loaded.push(file);
    }
    if named.is_empty() {
        Err(format!(
            "containerd's configuration {} has no `imports`, so containerd would not read \
             regcred's drop-in {}: {add}",
            config.display(),
            drop_in.display()
        ))
    } else {
        Err(format!(
            "containerd's configuration {} imports {:?}, which leaves out regcred's drop-in \
             {}: {add}",
            config.display(),
            named,
            drop_in.display()
        ))
    }
}

/// The top-level `imports` of the containerd configuration `file` (a host path).
fn read_imports(layout: &Layout, file: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(layout.on_host(file)).map_err(|e| {
        format!(
            "reading containerd's configuration {}: {e}; nothing was changed",
            file.display()
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The line only, never the text (a configuration may hold registry credentials).
        let line = e.span().map(|span| {
            let end = span.start.min(text.len());
            text.as_bytes()[..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        format!(
            "containerd's configuration {} is not valid TOML{}: containerd would refuse it \
             too; nothing was changed",
            file.display(),
            line.map(|l| format!(" (line {l})")).unwrap_or_default()
        )
    })?;
    match table.get("imports") {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    format!(
                        "containerd's configuration {}: `imports` holds a value that is not a \
                         path; nothing was changed",
                        file.display()
                    )
                })
            })
            .collect(),
        Some(_) => Err(format!(
            "containerd's configuration {}: `imports` is not a list of paths; nothing was \
             changed",
            file.display()
        )),
    }
}

/// `path` with `.`, `..` and repeated separators resolved lexically, as Go's
/// `filepath.Clean` does (containerd cleans each import before it globs).
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether containerd's import `pattern` (cleaned, absolute) names `file`: a path, or a
/// glob whose `*`, `?` and `[...]` never cross a `/` (Go's `filepath.Match`, which
/// containerd's `filepath.Glob` uses, with `[^...]` for a negated class).
fn import_matches(pattern: &Path, file: &Path) -> bool {
    let pattern = pattern.to_string_lossy();
    if !pattern.contains(['*', '?', '[']) {
        return Path::new(pattern.as_ref()) == file;
    }
    // Go has no `**` (it is `*` twice) and negates a class with `^`.
    let mut go_style = pattern.replace("[^", "[!");
    while go_style.contains("**") {
        go_style = go_style.replace("**", "*");
    }
    glob::Pattern::new(&go_style).is_ok_and(|p| {
        p.matches_path_with(
            file,
            glob::MatchOptions {
                require_literal_separator: true,
                ..glob::MatchOptions::new()
            },
        )
    })
}

#[cfg(test)]
mod tests;
