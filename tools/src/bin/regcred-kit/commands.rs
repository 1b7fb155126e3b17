//! The kit's other commands: `down`, `status`, `proxy`, `restart-runtime`,
//! `kit-objects` and `join-files`.

use std::path::{Path, PathBuf};
use std::process::Command;

use regcred_tests::harness::pki::{self, Authority, CaRef, Credential, Leaf};

use crate::kit::{CONTROL_PARTS, FIRST_NODE, Kit, Node, run};
use crate::start::{start_containerd, start_proxy};
use crate::{config, log, net};

pub(crate) const PROXY_NAMESPACE: &str = "regcred-system";

pub(crate) const PROXY_SA: &str = "regcred-cri-proxy";

/// The CRI proxy's API credentials.
#[derive(Debug)]
pub(crate) enum ProxyAuth {
    /// The kubelet's client certificate (the Node authorizer).
    Node,
    /// A token of the chart's ServiceAccount.
    ServiceAccount,
    /// Any kubeconfig file.
    File(PathBuf),
}

impl ProxyAuth {
    pub(crate) fn name(&self) -> String {
        match self {
            Self::Node => "node".into(),
            Self::ServiceAccount => "sa".into(),
            Self::File(path) => path.display().to_string(),
        }
    }
}

/// The cluster side of every node mode, from the chart (deploy/chart) with its webhook
/// off, applied as plain objects (no Helm release; a test's `helm install
/// --take-ownership` adopts them): the runtime proxy's ServiceAccount with the
/// ServiceAccount mode's roles, NRI mode's admission policy, the credential provider's
/// node RBAC. Server-side: the admission policy's match rules are atomic structs the API
/// server fills in, which a client-side apply followed by a server-side one reports as a
/// conflict; the kit owns them (--force-conflicts).
pub(crate) fn apply_kit_objects(kit: &Kit) -> Result<(), String> {
    let mut objects = String::new();
    for mode in [
        &[
            "runtime-proxy",
            "--set",
            "node.apiCredentials=serviceAccount",
        ][..],
        &["nri"],
        &["credential-provider"],
    ] {
        let mut command = Command::new(kit.helm());
        command
            .args(["template", "regcred"])
            .arg(kit.top.join("deploy/chart"))
            .args([
                "--namespace",
                PROXY_NAMESPACE,
                "--kube-version",
                &kit.state.kubernetes,
                "--set",
                "webhook.enabled=false",
            ])
            .arg(format!("--set=node.mode={}", mode[0]))
            .args(&mode[1..]);
        objects.push_str(&run(&mut command, None)?);
        objects.push('\n');
    }
    let namespace = kit.kubectl_run(
        &[
            "create",
            "namespace",
            PROXY_NAMESPACE,
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    )?;
    kit.kubectl_run(&["apply", "-f", "-"], Some(&namespace))?;
    kit.kubectl_run(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "regcred-kit",
            "-f",
            "-",
        ],
        Some(&objects),
    )
    .map(drop)
}

/// `down`: every process by PID, whatever failed before; then mounts, rules, bridges,
/// forwarding and cgroups as they were. Fails (after doing all) when a step failed.
pub(crate) fn down(kit: &mut Kit) -> Result<(), String> {
    // Every node a kit directory ever had (PID files and node directories name them).
    let mut max = kit.state.nodes.max(1);
    let numbered = |name: &str| {
        name.rsplit('-')
            .next()
            .and_then(|k| k.parse::<usize>().ok())
    };
    if let Ok(entries) = std::fs::read_dir(kit.dir.join("pids")) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".pid")
                .to_owned();
            if let Some(k) = numbered(&name) {
                max = max.max(k);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(kit.dir.join("nodes")) {
        for entry in entries.filter_map(Result::ok) {
            if let Some(k) = numbered(&entry.file_name().to_string_lossy()) {
                max = max.max(k);
            }
        }
    }
    max = max.min(64);
    // runc of the kit's runtime, to kill its containers (no build: down never builds).
    if let Ok(dir) = kit.driver(&["runtime-dir", &kit.state.runtime]) {
        kit.runtime_dir = PathBuf::from(dir);
    }
    let nodes: Vec<Node> = (1..=max).map(|k| kit.node(k)).collect();
    let mut failed = Vec::new();
    let mut stop = |kit: &Kit, part: &str| {
        if let Err(e) = kit.parts.stop(part) {
            failed.push(e);
        }
    };
    for node in &nodes {
        for what in ["kubelet", "cri-proxy", "regcred-nri"] {
            stop(kit, &node.part(what));
        }
    }
    for node in &nodes {
        net::stop_containers(kit, node);
        stop(kit, &node.part("containerd"));
    }
    for part in CONTROL_PARTS.iter().rev() {
        stop(kit, part);
    }
    let left = net::unmount_all(&kit.dir);
    if !left.is_empty() {
        failed.push(format!("cannot unmount {}", left.join(" ")));
    }
    for node in &nodes {
        net::unroute_api_service(node);
        net::remove_bridge(node);
        let _ = std::fs::remove_file(&node.proxy_sock);
        let _ = std::fs::remove_file(&node.decisions_sock);
    }
    net::remove_cgroup_parent(kit);
    net::restore_forwarding(kit);
    if kit.has_state()
        && let Err(e) = kit.save()
    {
        failed.push(e);
    }
    net::remove_container_log_links(&kit.dir);
    for file in ["cluster.env", "registries.env", "kit.json"] {
        let _ = std::fs::remove_file(kit.dir.join(file));
    }
    if failed.is_empty() {
        log(&format!("down: {}", kit.dir.display()));
        Ok(())
    } else {
        Err(format!(
            "down: {}, but these steps failed: {}",
            kit.dir.display(),
            failed.join("; ")
        ))
    }
}

/// `status`: each part running or stopped (fails if any is stopped), and the nodes.
pub(crate) fn status(kit: &mut Kit) -> Result<(), String> {
    let mut stopped = 0;
    for part in kit.all_parts() {
        let state = match kit.parts.pid(&part) {
            Some(pid) if kit.parts.alive(&part) => format!("running (pid {pid})"),
            _ => {
                stopped += 1;
                "stopped".to_owned()
            }
        };
        println!("{part:<24} {state}");
    }
    if let Ok(dir) = kit.driver(&["runtime-dir", &kit.state.runtime]) {
        println!("{:<24} {} ({dir})", "runtime", kit.state.runtime);
    }
    println!("{:<24} {}", "mode", kit.state.mode);
    if let Ok(auth) = std::fs::read_to_string(kit.dir.join("proxy-mode")) {
        println!("{:<24} {}", "cri-proxy credentials", auth.trim());
    }
    if kit.admin_kubeconfig().is_file() && kit.parts.alive("kube-apiserver") {
        kit.locate_binaries()?;
        print!(
            "{}",
            kit.kubectl_run(&["get", "nodes", "-o", "wide"], None)?
        );
    }
    if stopped > 0 {
        return Err(format!(
            "status: {stopped} part(s) of the kit in {} stopped",
            kit.dir.display()
        ));
    }
    Ok(())
}

/// `proxy`: restarts a node's CRI proxy.
pub(crate) async fn proxy(
    kit: &mut Kit,
    name: &str,
    auth: &ProxyAuth,
    supervise: bool,
) -> Result<(), String> {
    if !kit.parts.alive("kube-apiserver") {
        return Err(format!("proxy: the kit in {} is not up", kit.dir.display()));
    }
    kit.locate_binaries()?;
    let node = kit.node_named(name).map_err(|e| format!("proxy: {e}"))?;
    start_proxy(kit, &node, auth, supervise).await?;
    log(&format!(
        "cri-proxy of {} restarted ({}{})",
        node.name,
        auth.name(),
        if supervise { ", supervised" } else { "" }
    ));
    Ok(())
}

/// `restart-runtime`: stops a node's containerd and starts it again.
pub(crate) async fn restart_runtime(kit: &mut Kit, name: &str) -> Result<(), String> {
    if !kit.parts.alive("kube-apiserver") {
        return Err(format!(
            "restart-runtime: the kit in {} is not up",
            kit.dir.display()
        ));
    }
    kit.locate_binaries()?;
    let node = kit
        .node_named(name)
        .map_err(|e| format!("restart-runtime: {e}"))?;
    kit.parts.stop(&node.part("containerd"))?;
    start_containerd(kit, &node).await?;
    log(&format!("containerd of {} restarted", node.name));
    Ok(())
}

/// `join-files NAME OUT`: what a node named NAME that runs outside the kit (its own
/// kubelet and containerd, e.g. scripts/nspawn-node up --join) needs to join the kit's API
/// server, in kubeadm's layout under OUT: etc/kubernetes/kubelet.conf (the kubelet's
/// kubeconfig, which regcred's node agent reads too), etc/kubernetes/pki/ca.crt and
/// var/lib/kubelet/pki/kubelet-client-current.pem (certificate and key,
/// system:node:NAME, signed by the kit's CA: the Node authorizer knows the node by it).
pub(crate) fn join_files(kit: &Kit, name: &str, out: &Path) -> Result<(), String> {
    let pki_dir = kit.pki();
    if !kit.has_state() || !pki_dir.join("done").is_file() {
        return Err(format!(
            "join-files: no kit in {} (scripts/cluster up first)",
            kit.dir.display()
        ));
    }
    if name == FIRST_NODE
        || name
            .strip_prefix(&format!("{FIRST_NODE}-"))
            .is_some_and(|k| k.parse::<usize>().is_ok())
    {
        return Err(format!("join-files: {name} is the name of a kit node"));
    }
    let ca = Authority::load(&pki_dir.join("ca.crt"), &pki_dir.join("ca.key"))?;
    let pair = ca.issue(&Leaf::client(
        &format!("system:node:{name}"),
        Some("system:nodes"),
    ))?;
    config::write(&out.join("etc/kubernetes/pki/ca.crt"), ca.cert_pem())?;
    let pem = out.join("var/lib/kubelet/pki/kubelet-client-current.pem");
    pki::write_private(&pem, &format!("{}{}", pair.cert_pem, pair.key_pem))?;
    let on_node = Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem");
    pki::write_private(
        &out.join("etc/kubernetes/kubelet.conf"),
        &pki::kubeconfig(
            FIRST_NODE,
            &kit.apiserver_url(),
            CaRef::File(Path::new("/etc/kubernetes/pki/ca.crt")),
            &format!("system:node:{name}"),
            Credential::Files {
                cert: on_node,
                key: on_node,
            },
        ),
    )
}
