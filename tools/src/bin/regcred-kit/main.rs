//! The kit: a Kubernetes cluster of real programs on one machine, for regcred's tests and
//! for anyone who wants to try regcred on throwaway nodes. `scripts/cluster` is the
//! command people type; it builds the binaries and runs this program for everything else.
//!
//! This program owns every process of a kit (the registries, etcd, the API server, the
//! controller manager and scheduler, and per node containerd, the regcred node agent,
//! regcred-nri and kubelet): it starts each in its own process group with its own log,
//! waits until the program's own health check answers, stops each by its PID, and stops
//! again what a failed or interrupted `up` started. It makes the kit's one CA and every
//! certificate and kubeconfig of the test tree (`harness::pki`), and writes the one typed
//! description of a running kit, `DIR/kit.json`, with `DIR/cluster.env` for the tools that
//! read names. See tests/cluster/README.md.

mod commands;
mod config;
mod describe;
mod kit;
mod net;
mod parts;
mod start;
mod up;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regcred_tests::harness::pki;

use kit::Kit;

#[derive(Debug, Parser)]
#[command(
    name = "regcred-kit",
    about = "Runs regcred's kit: a cluster of real programs on this machine (scripts/cluster runs it)"
)]
struct Cli {
    /// The kit's directory [default: REGCRED_CLUSTER_DIR, else target/cluster of the
    /// checkout]
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The build driver the kit asks for its binaries [default: REGCRED_KIT_SCRIPT, else
    /// the checkout's scripts/cluster]
    #[arg(long, global = true, hide = true)]
    script: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Brings the kit up, or whatever part of it is down
    Up(up::UpArgs),
    /// Stops every process of the kit by PID and removes its mounts, bridges and rules
    Down,
    /// Shows each part of the kit and the API server's nodes
    Status,
    /// Restarts a node's CRI proxy (the first node's by default)
    Proxy {
        /// The node whose proxy to restart
        #[arg(long, default_value = kit::FIRST_NODE)]
        node: String,
        /// Restart it 1 s after it exits, as the systemd unit does
        #[arg(long)]
        supervise: bool,
        /// A kubeconfig file for the proxy (instead of sa or node)
        #[arg(long, conflicts_with = "auth")]
        kubeconfig: Option<PathBuf>,
        /// The proxy's API credentials: node (the kubelet's) or sa (the chart's
        /// ServiceAccount)
        #[arg(value_parser = ["sa", "node"])]
        auth: Option<String>,
    },
    /// Stops a node's containerd (SIGTERM; its containers and shims go on) and starts it
    /// again, as a runtime upgrade does
    RestartRuntime {
        /// The node whose containerd to restart
        #[arg(long, default_value = kit::FIRST_NODE)]
        node: String,
    },
    /// Applies again the node-side objects `up` applies from deploy/chart
    KitObjects,
    /// Writes what a node NAME outside the kit needs to join its API server, in kubeadm's
    /// layout under OUT
    JoinFiles {
        /// The node's name
        name: String,
        /// Where to write etc/kubernetes and var/lib/kubelet
        out: PathBuf,
    },
    /// Issues a certificate from the kit's CA (or another CA's files) into OUT/NAME.crt
    /// and OUT/NAME.key
    Cert {
        /// The directory of the CA's ca.crt and ca.key [default: the kit's]
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
        /// Where to write the certificate and key
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The files' name
        #[arg(long)]
        name: String,
        /// The subject's common name
        #[arg(long)]
        cn: String,
        /// The subject's organization (a Kubernetes client's group)
        #[arg(long)]
        org: Option<String>,
        /// A serving certificate for these names (IP addresses or DNS names; repeat or
        /// separate with commas); without it, a client certificate
        #[arg(long, value_delimiter = ',')]
        server: Vec<String>,
        /// Valid from a minute ago for this many seconds [default: until 2036]
        #[arg(long, value_name = "SECONDS")]
        valid_for: Option<u64>,
    },
    /// Makes a new CA (not the kit's) as OUT/ca.crt and OUT/ca.key
    Ca {
        /// Where to write it
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Its common name
        #[arg(long)]
        cn: String,
        /// Valid from a minute ago for this many seconds [default: until 2036]
        #[arg(long, value_name = "SECONDS")]
        valid_for: Option<u64>,
    },
    /// Runs a command and starts it again 1 s after it exits (the kit's stand-in for
    /// systemd's Restart=always)
    #[command(hide = true)]
    Supervise {
        /// Where to write the command's PID at each start
        #[arg(long)]
        pid_file: PathBuf,
        /// The command
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cluster: a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cluster: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A progress line on standard error.
pub(crate) fn log(message: &str) {
    eprintln!("cluster: {message}");
}

async fn run(cli: Cli) -> Result<(), String> {
    let top = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the checkout")?
        .to_path_buf();
    // (An empty variable counts as unset, as the shell's ${NAME:-} does.)
    let script = cli
        .script
        .clone()
        .or_else(|| kit::env_nonempty("REGCRED_KIT_SCRIPT").map(PathBuf::from))
        .unwrap_or_else(|| top.join("scripts/cluster"));
    let top = script
        .parent()
        .and_then(|scripts| scripts.parent())
        .map_or(top, PathBuf::from);
    let dir = cli
        .dir
        .clone()
        .or_else(|| kit::env_nonempty("REGCRED_CLUSTER_DIR").map(PathBuf::from))
        .unwrap_or_else(|| top.join("target/cluster"));
    match cli.command {
        Cmd::Cert {
            ca_dir,
            out,
            name,
            cn,
            org,
            server,
            valid_for,
        } => {
            let ca_dir = ca_dir.unwrap_or_else(|| dir.join("pki"));
            let ca = pki::Authority::load(&ca_dir.join("ca.crt"), &ca_dir.join("ca.key"))?;
            let mut leaf = if server.is_empty() {
                pki::Leaf::client(&cn, org.as_deref())
            } else {
                let names: Vec<&str> = server.iter().map(String::as_str).collect();
                let mut leaf = pki::Leaf::server(&cn, &names);
                leaf.organization = org;
                leaf
            };
            leaf.valid_for = valid_for.map(std::time::Duration::from_secs);
            config::create_dir(&out)?;
            ca.issue(&leaf)?.write(&out, &name)
        }
        Cmd::Ca { out, cn, valid_for } => {
            config::create_dir(&out)?;
            pki::Authority::generate_for(&cn, valid_for.map(std::time::Duration::from_secs))?
                .write(&out)
        }
        Cmd::Supervise { pid_file, command } => parts::supervise(&pid_file, &command).await,
        Cmd::Up(args) => up::up(&mut Kit::open(top, script, &dir)?, args).await,
        Cmd::Down => commands::down(&mut Kit::open(top, script, &dir)?),
        Cmd::Status => commands::status(&mut Kit::open(top, script, &dir)?),
        Cmd::Proxy {
            node,
            supervise,
            kubeconfig,
            auth,
        } => {
            let auth = match (kubeconfig, auth.as_deref()) {
                (Some(file), _) => commands::ProxyAuth::File(file),
                (None, Some("sa")) => commands::ProxyAuth::ServiceAccount,
                (None, Some(_)) => commands::ProxyAuth::Node,
                (None, None) => return Err("proxy: say sa, node or --kubeconfig FILE".into()),
            };
            commands::proxy(&mut Kit::open(top, script, &dir)?, &node, &auth, supervise).await
        }
        Cmd::RestartRuntime { node } => {
            commands::restart_runtime(&mut Kit::open(top, script, &dir)?, &node).await
        }
        Cmd::KitObjects => {
            let mut kit = Kit::open(top, script, &dir)?;
            kit.locate_binaries()?;
            commands::apply_kit_objects(&kit).map_err(|e| {
                format!("kit-objects: applying the chart's node-side objects failed: {e}")
            })
        }
        Cmd::JoinFiles { name, out } => {
            commands::join_files(&Kit::open(top, script, &dir)?, &name, &out)
        }
    }
}
