//! `up`: the kit brought up, or whatever part of it is down.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use regcred_tests::harness::find_on_path;
use regcred_tests::harness::pki::{self, Authority, CaRef, Credential, Leaf};

use crate::commands::{PROXY_NAMESPACE, ProxyAuth, apply_kit_objects};
use crate::kit::{FIRST_NODE, Kit, MAX_NODES, SERVICE_NET, env_nonempty, run};
use crate::start::{
    runtime_version, start_apiserver, start_containerd, start_controllers, start_etcd,
    start_kubelet, start_nri_plugin, start_proxy, start_registries,
};
use crate::{config, describe, log, net};

const RUNTIMES: [&str; 3] = ["containerd-2.3", "containerd-2.4", "containerd-1.6"];

const MODES: [&str; 4] = ["nri", "runtime-proxy", "credential-provider", "none"];

/// `up`'s options.
#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// How many nodes (the first named regcred-kit) [default: 1, or the kit's]
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=MAX_NODES as i64))]
    nodes: Option<u8>,
    /// The container runtime [default: containerd-2.3, or the kit's]
    #[arg(long, value_parser = RUNTIMES)]
    runtime: Option<String>,
    /// regcred's node mode: nri (regcred-nri at each node's NRI socket), runtime-proxy
    /// (kubelet's runtime endpoint is the proxy; the only mode containerd-1.6 has),
    /// credential-provider (no node agent) or none (no regcred on the nodes at all; needs
    /// --regcred bare) [default: REGCRED_KIT_MODE, else nri (runtime-proxy on
    /// containerd-1.6), or the running kit's]
    #[arg(long, value_parser = MODES)]
    mode: Option<String>,
    /// A served Kubernetes release other than the pinned one (v1.N.M), built on first use
    /// [default: REGCRED_KIT_KUBERNETES, else the kit's, else the pinned one]
    #[arg(long)]
    kubernetes: Option<String>,
    /// The CRI proxy's API credentials: node (the kubelet's) or sa (the chart's
    /// ServiceAccount)
    #[arg(long, default_value = "node", value_parser = ["node", "sa"])]
    proxy_auth: String,
    /// Restart the CRI proxy 1 s after it exits, as the systemd unit does
    #[arg(long)]
    proxy_supervise: bool,
    /// More KubeletConfiguration fields, appended to every kubelet's configuration
    #[arg(long, value_name = "FILE")]
    kubelet_config_patch: Option<PathBuf>,
    /// chart: install regcred's Helm chart from regcred's own image; bare: leave it out
    /// [default: REGCRED_KIT_REGCRED, else the kit's, else chart]
    #[arg(long, value_parser = ["chart", "bare"])]
    regcred: Option<String>,
}

fn default_mode(runtime: &str) -> &'static str {
    if runtime == "containerd-1.6" {
        "runtime-proxy"
    } else {
        "nri"
    }
}

pub(crate) fn seconds(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

/// `up`: brings up every part that is down; stops again what it started if it fails or
/// is interrupted (SIGINT, SIGTERM).
pub(crate) async fn up(kit: &mut Kit, args: UpArgs) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let result = tokio::select! {
        result = bring_up(kit, args) => result,
        _ = term.recv() => Err("up: interrupted (SIGTERM)".to_owned()),
        _ = int.recv() => Err("up: interrupted (SIGINT)".to_owned()),
    };
    if result.is_err() {
        let stopped = kit.parts.stop_started();
        if !stopped.is_empty() {
            log(&format!(
                "up failed: stopped what it had started ({}); `scripts/cluster down` stops the rest, \
                 pods' containers included",
                stopped.join(" ")
            ));
        }
    }
    result
}

/// An option's value from the command line, else from the environment variable `env`
/// (checked against `allowed` when given, an empty one counted as unset).
fn option_or_env(
    value: Option<String>,
    env: &str,
    allowed: &[&str],
) -> Result<Option<String>, String> {
    match value.or_else(|| env_nonempty(env)) {
        Some(value) if !allowed.is_empty() && !allowed.contains(&value.as_str()) => Err(format!(
            "up: {env} is one of {}, not {value}",
            allowed.join(", ")
        )),
        value => Ok(value),
    }
}

/// Whether `version` is a Kubernetes release: v1.N.M.
fn is_release(version: &str) -> bool {
    version.strip_prefix("v1.").is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

async fn bring_up(kit: &mut Kit, mut args: UpArgs) -> Result<(), String> {
    args.mode = option_or_env(args.mode, "REGCRED_KIT_MODE", &MODES)?;
    args.regcred = option_or_env(args.regcred, "REGCRED_KIT_REGCRED", &["chart", "bare"])?;
    args.kubernetes = option_or_env(args.kubernetes, "REGCRED_KIT_KUBERNETES", &[])?;
    // The patch is read first: a file that is not there ends `up` before it starts anything.
    let patch = match &args.kubelet_config_patch {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("up: --kubelet-config-patch {}: {e}", file.display()))?,
        ),
        None => None,
    };
    let had_state = kit.has_state();
    let running = kit.parts.alive("kube-apiserver");
    // Without --regcred, a kit keeps the choice it was first brought up with: an `up` that
    // only restarts a part must not install the chart into a bare kit.
    let regcred = match args.regcred {
        Some(choice) => choice,
        None if had_state && !kit.state.regcred.is_empty() => kit.state.regcred.clone(),
        None => "chart".to_owned(),
    };
    if !rustix::process::geteuid().is_root() {
        return Err("up needs root (containerd, kubelet, the pod bridges)".into());
    }
    // A kit that is up keeps its runtime and release; its node count may grow.
    if let Some(runtime) = &args.runtime
        && had_state
        && running
        && *runtime != kit.state.runtime
    {
        return Err(format!(
            "up: the kit in {} runs {}; bring it down before choosing {runtime}",
            kit.dir.display(),
            kit.state.runtime
        ));
    }
    if let Some(kubernetes) = &args.kubernetes {
        if !is_release(kubernetes) {
            return Err(format!(
                "up: a Kubernetes version is v1.N.M, not {kubernetes}"
            ));
        }
        if had_state
            && running
            && !kit.state.kubernetes.is_empty()
            && *kubernetes != kit.state.kubernetes
        {
            return Err(format!(
                "up: the kit in {} runs Kubernetes {}; bring it down before choosing {kubernetes}",
                kit.dir.display(),
                kit.state.kubernetes
            ));
        }
        kit.state.kubernetes = kubernetes.clone();
    }
    if let Some(runtime) = args.runtime {
        kit.state.runtime = runtime;
    }
    if let Some(nodes) = args.nodes {
        kit.state.nodes = usize::from(nodes);
    }
    match args.mode {
        Some(mode) => {
            if had_state && running && !kit.state.mode.is_empty() && mode != kit.state.mode {
                return Err(format!(
                    "up: the kit in {} runs in {} mode; bring it down before choosing {mode}",
                    kit.dir.display(),
                    kit.state.mode
                ));
            }
            kit.state.mode = mode;
        }
        None if had_state && running && !kit.state.mode.is_empty() => {}
        None => kit.state.mode = default_mode(&kit.state.runtime).to_owned(),
    }
    if kit.state.mode == "none" && regcred != "bare" {
        return Err(
            "up: --mode none is a kit without regcred; bring it up with --regcred bare".into(),
        );
    }
    if kit.state.runtime == "containerd-1.6" && kit.state.mode != "runtime-proxy" {
        return Err(
            "up: containerd 1.6 has no NRI validators; use --mode runtime-proxy with it".into(),
        );
    }
    kit.state.regcred = regcred;
    kit.locate_binaries()?;
    if kit.all_parts().iter().all(|p| kit.parts.alive(p))
        && kit.dir.join("cluster.env").is_file()
        && all_nodes_ready(kit).await
    {
        log(&format!(
            "already up in {} ({} node(s) Ready, {})",
            kit.dir.display(),
            kit.state.nodes,
            kit.state.runtime
        ));
        return Ok(());
    }
    let t0 = Instant::now();
    for (program, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("umount", "mount"),
    ] {
        if find_on_path(program).is_none() {
            return Err(format!(
                "{program} is missing: run scripts/setup (Debian package {package})"
            ));
        }
    }
    for (file, package) in [
        ("/bin/busybox", "busybox-static"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ] {
        if !Path::new(file).exists() {
            return Err(format!("{file} is missing: run scripts/setup ({package})"));
        }
    }

    let t = Instant::now();
    let mut build = vec![
        "build",
        "kubectl",
        "kubelet",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
        "helm",
    ];
    let runtime = kit.state.runtime.clone();
    build.push(&runtime);
    let no_build = env_nonempty("REGCRED_KIT_NO_BUILD").is_some_and(|v| v == "1");
    if kit.state.mode == "nri" && (!no_build || !kit.nri_plugin().is_file()) {
        build.push("regcred-nri");
    }
    kit.driver(&build)?;
    for binary in ["regcred", "regcred-kit-registries"] {
        if !kit.rust_bin.join(binary).is_file() {
            return Err(format!(
                "missing {} (scripts/cluster up builds it)",
                kit.rust_bin.join(binary).display()
            ));
        }
    }
    log(&format!("binaries: {}", seconds(t)));
    kit.assign_ports()?;
    kit.assign_credentials()?;
    kit.save()?;
    std::fs::write(
        kit.dir.join("kit-profile"),
        format!("{}\n", kit.state.profile),
    )
    .map_err(|e| format!("writing kit-profile: {e}"))?;

    let t = Instant::now();
    make_pki(kit)?;
    log(&format!("certificates: {}", seconds(t)));

    let t = Instant::now();
    start_registries(kit).await?;
    log(&format!("registries: {}", seconds(t)));
    let t = Instant::now();
    start_etcd(kit).await?;
    log(&format!("etcd: {}", seconds(t)));
    let t = Instant::now();
    start_apiserver(kit).await?;
    log(&format!("kube-apiserver: {}", seconds(t)));
    let t = Instant::now();
    start_controllers(kit)?;
    log(&format!("controller-manager, scheduler: {}", seconds(t)));

    let t = Instant::now();
    // What the API server must let the kubelet API caller do.
    let binding = kit.kubectl_run(
        &[
            "create",
            "clusterrolebinding",
            "kit-apiserver-kubelet-client",
            "--clusterrole",
            "system:kubelet-api-admin",
            "--user",
            "kube-apiserver-kubelet-client",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    )?;
    kit.kubectl_run(&["apply", "-f", "-"], Some(&binding))?;
    // What 0.1 shipped (a ClusterRole reading every Secret) is not pruned by apply: a kit
    // directory from then still has it in etcd; removed as deploy/cri-proxy/README.md tells
    // operators to on upgrade.
    kit.kubectl_run(
        &[
            "delete",
            "clusterrolebinding,clusterrole",
            "regcred-cri-proxy",
            "--ignore-not-found",
        ],
        None,
    )
    .map_err(|e| format!("removing 0.1's regcred-cri-proxy ClusterRole failed: {e}"))?;
    apply_kit_objects(kit)
        .map_err(|e| format!("applying the chart's node-side objects failed: {e}"))?;
    log(&format!(
        "node-side objects from deploy/chart: {}",
        seconds(t)
    ));
    remove_stale_nodes(kit).await?;

    net::enable_forwarding(kit)?;
    net::note_cgroup_parent(kit)?;
    // A kubelet this `up` starts must report Ready anew; one already running (a kit that
    // lost another part) reports only every few minutes when nothing changed.
    let kubelets_started = now_seconds();
    let proxy_auth = if args.proxy_auth == "sa" {
        ProxyAuth::ServiceAccount
    } else {
        ProxyAuth::Node
    };
    let mut fresh_since = Vec::new();
    for node in kit.nodes() {
        let t = Instant::now();
        net::make_bridge(&node)?;
        net::route_api_service(kit, &node)?;
        start_containerd(kit, &node).await?;
        log(&format!(
            "{}: containerd ({}): {}",
            node.name,
            kit.state.runtime,
            seconds(t)
        ));
        if kit.has_agent() {
            let t = Instant::now();
            if !kit.parts.alive(&node.part("cri-proxy")) {
                start_proxy(kit, &node, &proxy_auth, args.proxy_supervise).await?;
            }
            log(&format!(
                "{}: cri-proxy ({}): {}",
                node.name,
                proxy_auth.name(),
                seconds(t)
            ));
        }
        if kit.state.mode == "nri" {
            let t = Instant::now();
            start_nri_plugin(kit, &node).await?;
            log(&format!("{}: regcred-nri: {}", node.name, seconds(t)));
        }
        let kubelet = node.part("kubelet");
        fresh_since.push(if kit.parts.alive(&kubelet) {
            0
        } else {
            kubelets_started
        });
        start_kubelet(kit, &node, patch.as_deref())?;
    }
    let t = Instant::now();
    let client = kit.client().await?;
    for (node, since) in kit.nodes().iter().zip(fresh_since) {
        let name = node.name.clone();
        wait_for(
            kit,
            &format!("node {name} Ready"),
            180,
            Some(&node.part("kubelet")),
            || node_ready(&client, &name, since),
        )
        .await?;
    }
    log(&format!(
        "kubelets, {} node(s) Ready: {}",
        kit.state.nodes,
        seconds(t)
    ));
    let runtime_version = runtime_version(kit, &kit.node(1))?;
    if kit.state.regcred == "chart" {
        install_chart_unless_there(kit)?;
    }
    let toleration = nri_toleration(kit)?;
    describe::write_env(kit, &runtime_version)?;
    describe::write_description(kit, &runtime_version, &toleration)?;
    log(&format!(
        "up in {}: {dir}/kubeconfig, {dir}/cluster.env, {dir}/kit.json",
        seconds(t0),
        dir = kit.dir.display()
    ));
    Ok(())
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Waits until `check` answers true; fails with the part's log tail when the part exits
/// first or time runs out.
pub(crate) async fn wait_for<F, Fut>(
    kit: &Kit,
    what: &str,
    timeout_secs: u64,
    part: Option<&str>,
    mut check: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        if check().await {
            return Ok(());
        }
        if let Some(part) = part
            && !kit.parts.alive(part)
        {
            eprintln!("{}", kit.parts.tail(part, 40));
            return Err(format!(
                "{part} exited while waiting for {what} (log: {})",
                kit.parts.log_file(part).display()
            ));
        }
        if Instant::now() >= deadline {
            let log = part.map(|part| {
                eprintln!("{}", kit.parts.tail(part, 40));
                format!(" (log: {})", kit.parts.log_file(part).display())
            });
            return Err(format!(
                "timed out after {timeout_secs}s waiting for {what}{}",
                log.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The kit's CA and the control plane's certificates (made once), a kubelet client
/// certificate per node (the Node authorizer knows a node by it), and every kubeconfig.
fn make_pki(kit: &Kit) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = kit.pki();
    config::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = if dir.join("done").is_file() {
        Authority::load(&dir.join("ca.crt"), &dir.join("ca.key"))?
    } else {
        let ca = Authority::generate("regcred-kit-ca")?;
        ca.write(&dir)?;
        let service_ip = format!("{SERVICE_NET}.1");
        ca.issue(&Leaf::server(
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "127.0.0.1",
                &service_ip,
            ],
        ))?
        .write(&dir, "apiserver")?;
        for (name, user, group) in [
            ("admin", "kubernetes-admin", Some("system:masters")),
            ("controller-manager", "system:kube-controller-manager", None),
            ("scheduler", "system:kube-scheduler", None),
            (
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                None,
            ),
        ] {
            ca.issue(&Leaf::client(user, group))?.write(&dir, name)?;
        }
        let (sa_key, sa_pub) = pki::signing_key()?;
        pki::write_private(&dir.join("sa.key"), &sa_key)?;
        config::write(&dir.join("sa.pub"), &sa_pub)?;
        config::write(&dir.join("done"), "")?;
        ca
    };
    for node in kit.nodes() {
        let name = format!("kubelet{}", node.sfx);
        if !dir.join(format!("{name}.crt")).is_file() {
            ca.issue(&Leaf::client(
                &format!("system:node:{}", node.name),
                Some("system:nodes"),
            ))?
            .write(&dir, &name)?;
        }
    }
    let kubeconfig = |file: &Path, user: &str, name: &str| {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        pki::write_private(
            file,
            &pki::kubeconfig(
                FIRST_NODE,
                &kit.apiserver_url(),
                CaRef::File(&dir.join("ca.crt")),
                user,
                Credential::Files {
                    cert: &cert,
                    key: &key,
                },
            ),
        )
    };
    kubeconfig(&kit.admin_kubeconfig(), "admin", "admin")?;
    kubeconfig(
        &kit.dir.join("controller-manager.kubeconfig"),
        "controller-manager",
        "controller-manager",
    )?;
    kubeconfig(
        &kit.dir.join("scheduler.kubeconfig"),
        "scheduler",
        "scheduler",
    )?;
    for node in kit.nodes() {
        kubeconfig(
            &node.kubelet_kubeconfig,
            &format!("system:node:{}", node.name),
            &format!("kubelet{}", node.sfx),
        )?;
    }
    Ok(())
}

/// A kit directory that once had more nodes keeps their Node objects in etcd: removes the
/// ones this `up` does not run, so that the API server lists exactly the kit's nodes.
async fn remove_stale_nodes(kit: &Kit) -> Result<(), String> {
    let api: kube::Api<NodeObject> = kube::Api::all(kit.client().await?);
    let nodes = api
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing the nodes: {e}"))?;
    let stale: Vec<String> = nodes
        .items
        .into_iter()
        .filter_map(|node| node.metadata.name)
        .filter(|name| {
            name.strip_prefix(&format!("{FIRST_NODE}-"))
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(|k| k > kit.state.nodes)
        })
        .collect();
    if !stale.is_empty() {
        let mut args = vec!["delete", "node", "--ignore-not-found"];
        args.extend(stale.iter().map(String::as_str));
        kit.kubectl_run(&args, None).map_err(|e| {
            format!(
                "removing the Node objects of nodes this kit no longer runs ({}) failed: {e}",
                stale.join(" ")
            )
        })?;
        log(&format!(
            "removed the Node objects of {} (the kit now has {} node(s))",
            stale.join(" "),
            kit.state.nodes
        ));
    }
    Ok(())
}

/// The node is Ready, and its kubelet said so at or after `since` (seconds since the
/// epoch; 0 for any time): a warm `up` finds the Node objects of the last run still Ready
/// in etcd, which says nothing of the kubelet just started.
pub(crate) async fn node_ready(client: &kube::Client, name: &str, since: i64) -> bool {
    let api: kube::Api<NodeObject> = kube::Api::all(client.clone());
    let Ok(node) = api.get(name).await else {
        return false;
    };
    node.status
        .and_then(|status| status.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .is_some_and(|ready| {
            ready.status == "True"
                && ready
                    .last_heartbeat_time
                    .is_some_and(|beat| beat.0.as_second() >= since)
        })
}

/// Every node is Ready (whenever its kubelet last said so).
async fn all_nodes_ready(kit: &Kit) -> bool {
    let Ok(client) = kit.client().await else {
        return false;
    };
    for node in kit.nodes() {
        if !node_ready(&client, &node.name, 0).await {
            return false;
        }
    }
    true
}

/// The annotation containerd's default validator reads to let a pod's containers start
/// while regcred-nri is not connected, as the drop-in deploy/nri ships names it.
fn nri_toleration(kit: &Kit) -> Result<String, String> {
    let file = kit.top.join("deploy/nri/containerd-regcred.toml");
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    text.lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("tolerate_missing_plugins_annotation = ")
        })
        .map(|v| v.trim_matches('"').to_owned())
        .ok_or_else(|| {
            format!(
                "{} names no tolerate_missing_plugins_annotation",
                file.display()
            )
        })
}

/// `up --regcred chart`: regcred as an operator installs it, unless a release that pulls
/// from this kit's registry is there. One of a kit resumed from its directory pulls from
/// the port its registry had before (the registries take new ports at every start), so
/// `helm upgrade --install` points it at this `up`'s registry and image.
fn install_chart_unless_there(kit: &Kit) -> Result<(), String> {
    let public = Kit::registry_value(&kit.registries()?, "PUBLIC_REGISTRY")?;
    let repository = format!("{public}/regcred");
    let mut values = Command::new(kit.helm());
    values
        .args(["get", "values", "regcred", "--namespace", PROXY_NAMESPACE])
        .env("KUBECONFIG", kit.admin_kubeconfig());
    if run(&mut values, None).is_ok_and(|text| {
        text.lines()
            .any(|line| line == format!("  repository: {repository}"))
    }) {
        log(
            "regcred: release regcred already installed from this kit's registry (helm upgrade it to change it)",
        );
        return Ok(());
    }
    let t = Instant::now();
    // regcred's image (scripts/image, the kit's profile, glibc: the binary the kit already
    // built, --prebuilt) goes into the kit's public registry as regcred:kit-up, from where
    // kubelet pulls it on whichever node a pod lands; then `helm upgrade --install` of
    // deploy/chart with the kit's node mode, adopting the node-side objects `up` applied.
    let archive = kit.dir.join("image/regcred-oci.tar");
    let name = "regcred.local/regcred:kit-up";
    config::create_dir(&kit.dir.join("image"))?;
    let mut image = Command::new(kit.top.join("scripts/image"));
    image
        .args([
            "--profile",
            &kit.state.profile,
            "--libc",
            "gnu",
            "--prebuilt",
            "--out",
        ])
        .arg(&archive)
        .args(["--name", name]);
    run(&mut image, None).map_err(|e| format!("up --regcred chart: scripts/image failed: {e}"))?;
    let node = kit.node(1);
    let ctr = |args: &[&str]| {
        let args: Vec<&str> = ["-n", "regcred-kit-up"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        kit.ctr_run(&node, &args)
    };
    let tagged = format!("{repository}:kit-up");
    ctr(&["images", "import", &archive.display().to_string()])
        .and_then(|_| ctr(&["images", "tag", "--force", name, &tagged]))
        .and_then(|_| ctr(&["images", "push", "--plain-http", &tagged]))
        .map_err(|e| {
            format!("up --regcred chart: pushing the image to {repository} failed: {e}")
        })?;
    let mut helm = Command::new(kit.helm());
    helm.args(["upgrade", "--install", "regcred"])
        .arg(kit.top.join("deploy/chart"))
        .args([
            "--namespace",
            PROXY_NAMESPACE,
            "--take-ownership",
            "--wait",
            "--timeout",
            "4m",
        ])
        .arg(format!("--set=image.repository={repository}"))
        .args([
            "--set",
            "image.tag=kit-up",
            "--set",
            "image.pullPolicy=Always",
        ])
        .arg(format!("--set=node.mode={}", kit.state.mode))
        .env("KUBECONFIG", kit.admin_kubeconfig());
    run(&mut helm, None)
        .map_err(|e| format!("up --regcred chart: helm upgrade --install failed: {e}"))?;
    log(&format!("regcred from deploy/chart (helm): {}", seconds(t)));
    Ok(())
}
