//! `regcred node install|uninstall|status`: regcred's node side on this host, as a
//! transaction that puts everything back if any step fails (crate::node_install).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::{EXIT_OK, ReportFormat, print_report};
use crate::node_install::{
    self, InstallState, Layout, Mode, Outcome, Phase, Sources, Systemctl, preflight,
};

/// Exit status: the change failed and was rolled back (or an uninstall step failed).
const EXIT_FAILED: u8 = 1;
/// Exit status: refused before anything changed (the host would not read the change).
const EXIT_REFUSED: u8 = 2;

#[derive(Debug, Subcommand)]
pub(super) enum NodeCommand {
    /// Install the node agent (and in NRI mode regcred-nri) as systemd services, with
    /// containerd's and kubelet's drop-ins; restart what must restart, once; roll
    /// everything back if any step fails.
    #[command(
        after_help = "Examples:\n  sudo regcred node install --nri-plugin ./regcred-nri\n  \
                            regcred node install --host-root /host --stay   (the chart's DaemonSet)\n\
                            Exit status: 0 installed (or already), 1 a step failed and the node \
                            was put back, 2 refused before any change."
    )]
    Install(InstallArgs),
    /// Undo `install`: kubelet's drop-in (kubelet restarted), containerd's (containerd
    /// restarted), the services stopped, every file put back as it was.
    #[command(
        after_help = "Exit status: 0 done (or nothing was installed), 1 a step \
                            failed (what it could do was done; run it again)."
    )]
    Uninstall(UninstallArgs),
    /// What the installer wrote on this host, and whether each file is still as written.
    #[command(after_help = "Exit status: 0 shown (and as --expect says), 1 not as \
                            --expect says.")]
    Status(StatusArgs),
    /// Run a host program in the host's namespaces (PID 1's), from a pod with hostPID:
    /// how the installer reaches the host's systemctl.
    #[command(hide = true)]
    HostExec(HostExecArgs),
    /// The Helm chart's pre-delete hook: delete the webhook configuration, run
    /// `uninstall` on every node through a DaemonSet, wait for each, delete it.
    #[command(
        after_help = "Exit status: 0 every node uninstalled, 1 (with the nodes \
                            named) otherwise."
    )]
    Cleanup(super::node_cleanup::CleanupArgs),
}

#[derive(Debug, Args)]
pub(super) struct HostExecArgs {
    /// /proc of the host's PID namespace.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    proc_dir: PathBuf,
    /// The program and its arguments; the program is looked up on the usual system PATH
    /// (`/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`), not this
    /// process's.
    #[arg(trailing_var_arg = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub(super) struct LayoutArgs {
    /// The host's root file system as this process sees it (`/host` in the chart's pod).
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// Host directory of the binaries.
    #[arg(long, value_name = "DIR", default_value = "/opt/regcred/bin")]
    bin_dir: PathBuf,
    /// Host directory of the systemd units.
    #[arg(long, value_name = "DIR", default_value = "/etc/systemd/system")]
    unit_dir: PathBuf,
    /// containerd's imported configuration directory (containerd 2.x imports
    /// /etc/containerd/conf.d/*.toml by default).
    #[arg(long, value_name = "DIR", default_value = "/etc/containerd/conf.d")]
    containerd_config_dir: PathBuf,
    /// kubelet's --config-dir (kubeadm's layout: /etc/kubernetes/kubelet.conf.d).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/kubernetes/kubelet.conf.d"
    )]
    kubelet_config_dir: PathBuf,
    /// Host directory of the installer's state and the files it replaced.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/regcred/node-install"
    )]
    state_dir: PathBuf,
}

impl LayoutArgs {
    fn layout(&self) -> Result<Layout> {
        for (flag, dir) in [
            ("--bin-dir", &self.bin_dir),
            ("--unit-dir", &self.unit_dir),
            ("--containerd-config-dir", &self.containerd_config_dir),
            ("--kubelet-config-dir", &self.kubelet_config_dir),
            ("--state-dir", &self.state_dir),
        ] {
            if !dir.is_absolute() {
                bail!("{flag} {}: a host path must be absolute", dir.display());
            }
        }
        Ok(Layout {
            host_root: self.host_root.clone(),
            bin_dir: self.bin_dir.clone(),
            unit_dir: self.unit_dir.clone(),
            containerd_dir: self.containerd_config_dir.clone(),
            kubelet_dir: self.kubelet_config_dir.clone(),
            state_dir: self.state_dir.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub(super) struct SystemdArgs {
    /// The command that reaches the host's systemctl, split at spaces. Default:
    /// `systemctl` when --host-root is /, otherwise `regcred node host-exec -- systemctl`
    /// (this binary joining PID 1's namespaces, as nsenter does: a pod with hostPID).
    #[arg(long, value_name = "COMMAND")]
    systemctl: Option<String>,
    /// Seconds to wait after a restart before checking the service is still active.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    settle_seconds: u64,
}

impl SystemdArgs {
    fn systemctl(&self, layout: &Layout) -> Result<Systemctl> {
        let argv = match &self.systemctl {
            Some(command) => command.split_whitespace().map(str::to_owned).collect(),
            None if layout.host_root == std::path::Path::new("/") => vec!["systemctl".to_owned()],
            None => vec![
                std::env::current_exe()?.display().to_string(),
                "node".to_owned(),
                "host-exec".to_owned(),
                "--".to_owned(),
                "systemctl".to_owned(),
            ],
        };
        Ok(Systemctl::new(
            argv,
            Duration::from_secs(self.settle_seconds),
        ))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// containerd 2.2 and later: image calls to the agent, NRI at container creation.
    Nri,
    /// containerd before 2.2: every CRI call of kubelet through the agent.
    RuntimeProxy,
}

#[derive(Debug, Args)]
pub(super) struct InstallArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    systemd: SystemdArgs,
    /// The node mode.
    #[arg(long, value_enum, default_value = "nri")]
    mode: ModeArg,
    /// The regcred-nri binary to install (NRI mode); the image has it at
    /// /usr/local/bin/regcred-nri.
    #[arg(long, value_name = "PATH")]
    nri_plugin: Option<PathBuf>,
    /// The regcred binary to install (default: this one).
    #[arg(long, value_name = "PATH")]
    regcred_binary: Option<PathBuf>,
    /// Where to find the running kubelet's flags (/proc of the host's PID namespace),
    /// to refuse when it does not read --kubelet-config-dir; `none` skips the check.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    proc_dir: String,
    /// After installing, stay running until SIGTERM (the DaemonSet's container: its
    /// pod is Ready once the node is installed). Leaving does not uninstall.
    #[arg(long)]
    stay: bool,
    /// Who installs (the chart: the installer pod's UID), recorded on the node after a
    /// successful install, for `status --expect installed --installer-id`.
    #[arg(long, env = "REGCRED_INSTALLER_ID", value_name = "ID")]
    installer_id: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct UninstallArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    #[command(flatten)]
    systemd: SystemdArgs,
    /// After uninstalling, stay running until SIGTERM (the chart's clean-up DaemonSet).
    #[arg(long)]
    stay: bool,
}

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    layout: LayoutArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: ReportFormat,
    /// Exit 1 unless the host is as expected: `installed` (every file as regcred wrote
    /// it; the installer DaemonSet's readiness probe) or `absent` (nothing installed;
    /// the clean-up DaemonSet's).
    #[arg(long, value_enum, value_name = "STATE")]
    expect: Option<Expect>,
    /// With `--expect installed`: also that this installer (`install --installer-id`)
    /// made the install there now (the installer pod's readiness: a new pod is Ready
    /// once it has installed its own version, not while an older install stands).
    #[arg(long, env = "REGCRED_INSTALLER_ID", value_name = "ID")]
    installer_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Expect {
    /// Installed, every file as written.
    Installed,
    /// Nothing installed by `regcred node install`.
    Absent,
}

pub(super) fn run(command: &NodeCommand) -> Result<u8> {
    match command {
        NodeCommand::Install(args) => install(args),
        NodeCommand::Uninstall(args) => uninstall(args),
        NodeCommand::Status(args) => status(args),
        NodeCommand::HostExec(args) => host_exec(args),
        NodeCommand::Cleanup(args) => super::node_cleanup::run(args),
    }
}

fn install(args: &InstallArgs) -> Result<u8> {
    let layout = args.layout.layout()?;
    let mode = match args.mode {
        ModeArg::Nri => Mode::Nri,
        ModeArg::RuntimeProxy => Mode::RuntimeProxy,
    };
    let proc_dir = (args.proc_dir != "none").then(|| PathBuf::from(&args.proc_dir));
    if let Err(refusal) = preflight(&layout, mode, proc_dir.as_deref()) {
        eprintln!("regcred node install: {refusal}");
        return Ok(EXIT_REFUSED);
    }
    let regcred = match &args.regcred_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    let sources = Sources {
        regcred,
        nri_plugin: args.nri_plugin.clone(),
    };
    let files = match node_install::plan(&layout, mode, &sources) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("regcred node install: {e}");
            return Ok(EXIT_REFUSED);
        }
    };
    let systemctl = args.systemd.systemctl(&layout)?;
    let result = node_install::install(&layout, mode, files, &systemctl).and_then(|outcome| {
        if let Some(id) = &args.installer_id {
            node_install::record_installer(&layout, id)?;
        }
        Ok(outcome)
    });
    finish("install", result, args.stay)
}

fn uninstall(args: &UninstallArgs) -> Result<u8> {
    let layout = args.layout.layout()?;
    let systemctl = args.systemd.systemctl(&layout)?;
    finish(
        "uninstall",
        node_install::uninstall(&layout, &systemctl),
        args.stay,
    )
}

/// Reports what `verb` did (or why it failed: exit 1), then with `stay` waits for SIGTERM.
fn finish(verb: &str, result: Result<Outcome, String>, stay_after: bool) -> Result<u8> {
    match result {
        Ok(outcome) => {
            report(&format!("{verb}ed"), &outcome);
            if stay_after {
                stay()?;
            }
            Ok(EXIT_OK)
        }
        Err(e) => {
            eprintln!("regcred node {verb}: {e}");
            Ok(EXIT_FAILED)
        }
    }
}

fn report(done: &str, outcome: &Outcome) {
    if outcome.unchanged {
        println!("{done}: nothing to change");
    }
    for file in &outcome.files {
        println!("wrote {}", file.display());
    }
    for unit in &outcome.restarted {
        println!("restarted {unit}");
    }
    for left in &outcome.left {
        println!("left {left}");
    }
    if !outcome.unchanged {
        println!("{done}");
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusReport {
    installed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<InstallState>,
    files: Vec<node_install::FileStatus>,
}

fn status(args: &StatusArgs) -> Result<u8> {
    let layout = args.layout.layout()?;
    let report = match node_install::status(&layout).map_err(anyhow::Error::msg)? {
        Some((state, files)) => StatusReport {
            installed: true,
            state: Some(state),
            files,
        },
        None => StatusReport {
            installed: false,
            state: None,
            files: Vec::new(),
        },
    };
    print_report(&report, args.output, |report| {
        match &report.state {
            None => println!("regcred is not installed on this host by `regcred node install`"),
            Some(state) => println!(
                "mode {:?}, {:?}, by regcred {}",
                state.mode, state.phase, state.regcred_version
            ),
        }
        for file in &report.files {
            println!(
                "{:<9} {}{}",
                file.state,
                file.path.display(),
                if file.replaced_a_file {
                    " (replaced a file, kept for uninstall)"
                } else {
                    ""
                }
            );
        }
        Ok(())
    })?;
    let whole = report
        .state
        .as_ref()
        .is_some_and(|s| s.phase == Phase::Installed)
        && report.files.iter().all(|f| f.state == "installed");
    let by = node_install::installed_by(&layout);
    let ours = args
        .installer_id
        .as_ref()
        .is_none_or(|id| by.as_ref() == Some(id));
    if args.expect == Some(Expect::Installed) && whole && !ours {
        eprintln!(
            "installed by another installer ({}), not {}",
            by.as_deref().unwrap_or("none recorded"),
            args.installer_id.as_deref().unwrap_or_default()
        );
    }
    let as_expected = match args.expect {
        None => true,
        Some(Expect::Installed) => whole && ours,
        Some(Expect::Absent) => report.state.is_none(),
    };
    Ok(if as_expected { EXIT_OK } else { EXIT_FAILED })
}

/// The PATH a host program is found and run with (systemd's default for services).
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn host_exec(args: &HostExecArgs) -> Result<u8> {
    node_install::enter_host_namespaces(&args.proc_dir).map_err(anyhow::Error::msg)?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("host-exec needs a command"))?;
    // The host's programs are where the host keeps them, not on the image's PATH (which
    // names /usr/local/bin alone): the program is looked up, and runs, with the usual
    // system PATH.
    let status = std::process::Command::new(program)
        .args(rest)
        .env("PATH", HOST_PATH)
        .status()
        .map_err(|e| anyhow::anyhow!("running {program} on the host: {e}"))?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(EXIT_FAILED))
}

/// Blocks until SIGTERM or SIGINT.
fn stay() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
