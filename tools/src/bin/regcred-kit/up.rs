//! The kit's commands: `up`, `down`, `status`, `proxy`, `restart-runtime`, `kit-objects`
//! and `join-files`.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use regcred_tests::harness::pki::{self, Authority, CaRef, Credential, Leaf};

use crate::kit::{
    CONTROL_PARTS, FIRST_NODE, IMAGE, Kit, MAX_NODES, Node, PAUSE_IMAGE, PRELOADED_IMAGE,
    SERVICE_NET, env_nonempty, run,
};
use crate::{config, describe, log, net};

const RUNTIMES: [&str; 3] = ["containerd-2.3", "containerd-2.4", "containerd-1.6"];
const MODES: [&str; 4] = ["nri", "runtime-proxy", "credential-provider", "none"];
const PROXY_NAMESPACE: &str = "regcred-system";
const PROXY_SA: &str = "regcred-cri-proxy";

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
    fn name(&self) -> String {
        match self {
            Self::Node => "node".into(),
            Self::ServiceAccount => "sa".into(),
            Self::File(path) => path.display().to_string(),
        }
    }
}

fn default_mode(runtime: &str) -> &'static str {
    if runtime == "containerd-1.6" {
        "runtime-proxy"
    } else {
        "nri"
    }
}

fn seconds(since: Instant) -> String {
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
        && all_nodes_ready(kit, 0).await
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
        if !on_path(program) {
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
    for (node, since) in kit.nodes().iter().zip(fresh_since) {
        let client = kit.client().await?;
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

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Waits until `check` answers true; fails with the part's log tail when the part exits
/// first or time runs out.
async fn wait_for<F, Fut>(
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

async fn start_registries(kit: &Kit) -> Result<(), String> {
    let state = kit.registries_env();
    if kit.parts.alive("registries") && state.is_file() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&state);
    let tmp = kit.dir.join("registries");
    config::create_dir(&tmp)?;
    let credentials = &kit.state.credentials;
    let dir = |name: &str| kit.dir.join(name).into_os_string();
    kit.parts.start(
        "registries",
        &kit.rust_bin.join("regcred-kit-registries"),
        &[
            "--state".into(),
            state.clone().into_os_string(),
            "--pause-archive".into(),
            dir("pause.oci.tar"),
            "--pause-name".into(),
            PAUSE_IMAGE.into(),
            "--image".into(),
            IMAGE.into(),
            "--busybox".into(),
            "/bin/busybox".into(),
            "--preloaded-archive".into(),
            dir("preloaded.oci.tar"),
            "--preloaded-name".into(),
            PRELOADED_IMAGE.into(),
        ],
        &[
            ("REGCRED_KIT_USERNAME", credentials.username.clone().into()),
            ("REGCRED_KIT_PASSWORD", credentials.password.clone().into()),
            (
                "REGCRED_KIT_REFRESH_TOKEN",
                credentials.refresh_token.clone().into(),
            ),
            ("TMPDIR", tmp.into_os_string()),
        ],
    )?;
    wait_for(kit, "the registries", 60, Some("registries"), || async {
        state.is_file()
    })
    .await
}

/// An HTTP GET that succeeds (2xx): a program's own health endpoint.
async fn healthy(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))
}

async fn start_etcd(kit: &Kit) -> Result<(), String> {
    if kit.parts.alive("etcd") {
        return Ok(());
    }
    let client = format!("http://127.0.0.1:{}", kit.state.port("ETCD"));
    let peer = format!("http://127.0.0.1:{}", kit.state.port("ETCD_PEER"));
    start_control_part(
        kit,
        "etcd",
        &[
            "--name",
            "kit",
            "--data-dir",
            &kit.dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("kit={peer}"),
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
    )?;
    let http = http_client()?;
    let health = format!("{client}/health");
    wait_for(kit, "etcd", 60, Some("etcd"), || healthy(&http, &health)).await
}

async fn start_apiserver(kit: &Kit) -> Result<(), String> {
    if kit.parts.alive("kube-apiserver") {
        return Ok(());
    }
    let pki = |name: &str| kit.pki().join(name).display().to_string();
    start_control_part(
        kit,
        "kube-apiserver",
        &[
            "--etcd-servers",
            &format!("http://127.0.0.1:{}", kit.state.port("ETCD")),
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &kit.state.port("APISERVER").to_string(),
            "--advertise-address",
            &kit.node(1).ip,
            "--tls-cert-file",
            &pki("apiserver.crt"),
            "--tls-private-key-file",
            &pki("apiserver.key"),
            "--client-ca-file",
            &pki("ca.crt"),
            "--authorization-mode",
            "Node,RBAC",
            "--enable-admission-plugins",
            "NodeRestriction",
            "--service-account-issuer",
            "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file",
            &pki("sa.pub"),
            "--service-account-signing-key-file",
            &pki("sa.key"),
            "--service-cluster-ip-range",
            &format!("{SERVICE_NET}.0/24"),
            "--kubelet-client-certificate",
            &pki("apiserver-kubelet-client.crt"),
            "--kubelet-client-key",
            &pki("apiserver-kubelet-client.key"),
            "--kubelet-preferred-address-types",
            "InternalIP",
            "--endpoint-reconciler-type",
            "none",
            "--enable-aggregator-routing=true",
            "--allow-privileged=true",
            "--profiling=false",
            "--cert-dir",
            &kit.dir.join("apiserver-certs").display().to_string(),
        ],
    )?;
    wait_for(
        kit,
        "kube-apiserver /readyz",
        120,
        Some("kube-apiserver"),
        || async {
            kit.kubectl_run(&["get", "--raw", "/readyz"], None)
                .is_ok_and(|text| text.trim() == "ok")
        },
    )
    .await
}

/// Starts the Kubernetes binary `name` (etcd, the API server, ...) as the part `name`.
fn start_control_part(kit: &Kit, name: &str, args: &[&str]) -> Result<(), String> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    kit.parts.start(name, &kit.bin_dir.join(name), &args, &[])
}

fn start_controllers(kit: &Kit) -> Result<(), String> {
    let pki = |name: &str| kit.pki().join(name).display().to_string();
    if !kit.parts.alive("kube-controller-manager") {
        let kubeconfig = kit
            .dir
            .join("controller-manager.kubeconfig")
            .display()
            .to_string();
        start_control_part(
            kit,
            "kube-controller-manager",
            &[
                "--kubeconfig",
                &kubeconfig,
                "--authentication-kubeconfig",
                &kubeconfig,
                "--authorization-kubeconfig",
                &kubeconfig,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &kit.state.port("CONTROLLER_MANAGER").to_string(),
                "--service-account-private-key-file",
                &pki("sa.key"),
                "--root-ca-file",
                &pki("ca.crt"),
                "--cluster-signing-cert-file",
                &pki("ca.crt"),
                "--cluster-signing-key-file",
                &pki("ca.key"),
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--profiling=false",
                "--cert-dir",
                &kit.dir
                    .join("controller-manager-certs")
                    .display()
                    .to_string(),
            ],
        )?;
    }
    if !kit.parts.alive("kube-scheduler") {
        let kubeconfig = kit.dir.join("scheduler.kubeconfig").display().to_string();
        start_control_part(
            kit,
            "kube-scheduler",
            &[
                "--kubeconfig",
                &kubeconfig,
                "--authentication-kubeconfig",
                &kubeconfig,
                "--authorization-kubeconfig",
                &kubeconfig,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &kit.state.port("SCHEDULER").to_string(),
                "--leader-elect=false",
                "--profiling=false",
                "--cert-dir",
                &kit.dir.join("scheduler-certs").display().to_string(),
            ],
        )?;
    }
    Ok(())
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

async fn start_containerd(kit: &Kit, node: &Node) -> Result<(), String> {
    let part = node.part("containerd");
    if kit.parts.alive(&part) {
        return Ok(());
    }
    config::write_network(kit, node)?;
    let config_file = node.dir.join("containerd/config.toml");
    config::write(&config_file, &config::containerd(kit, node))?;
    // The shim and runc are found next to containerd (PATH first), not Debian's.
    let mut path = OsString::from(kit.runtime_dir.as_os_str());
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    kit.parts.start(
        &part,
        &kit.runtime_dir.join("containerd"),
        &["--config".into(), config_file.into_os_string()],
        &[("PATH", path)],
    )?;
    let ctr = |args: &[&str]| {
        let mut command = Command::new(kit.ctr());
        command
            .arg("--address")
            .arg(&node.containerd_sock)
            .args(args);
        run(&mut command, None)
    };
    wait_for(
        kit,
        &format!("containerd of {}", node.name),
        30,
        Some(&part),
        || async { ctr(&["version"]).is_ok() },
    )
    .await?;
    // The pause image and the kit's preloaded image: on the node before regcred first
    // starts there, as a node image build leaves them, so that regcred counts them as
    // preloaded. (ctr repeats containerd's cgroup v1 deprecation warning on stderr: shown
    // only on failure.)
    for archive in ["pause.oci.tar", "preloaded.oci.tar"] {
        let file = kit.dir.join(archive).display().to_string();
        ctr(&["-n", "k8s.io", "images", "import", &file]).map_err(|e| {
            format!(
                "importing {archive} into containerd of {} failed: {e}",
                node.name
            )
        })?;
    }
    Ok(())
}

/// (Re)starts the node's CRI proxy with `auth`, supervised or not.
async fn start_proxy(
    kit: &Kit,
    node: &Node,
    auth: &ProxyAuth,
    supervise: bool,
) -> Result<(), String> {
    let kubeconfig = match auth {
        ProxyAuth::Node => node.kubelet_kubeconfig.clone(),
        ProxyAuth::ServiceAccount => {
            let token = kit
                .kubectl_run(
                    &[
                        "create",
                        "token",
                        PROXY_SA,
                        "-n",
                        PROXY_NAMESPACE,
                        "--duration",
                        "720h",
                    ],
                    None,
                )
                .map_err(|e| {
                    format!("cannot make a token for {PROXY_NAMESPACE}/{PROXY_SA}: {e}")
                })?;
            let file = kit.dir.join("cri-proxy-sa.kubeconfig");
            pki::write_private(
                &file,
                &pki::kubeconfig(
                    FIRST_NODE,
                    &kit.apiserver_url(),
                    CaRef::File(&kit.pki().join("ca.crt")),
                    PROXY_SA,
                    Credential::Token(token.trim()),
                ),
            )?;
            file
        }
        ProxyAuth::File(file) => file
            .canonicalize()
            .map_err(|e| format!("proxy: no kubeconfig {}: {e}", file.display()))?,
    };
    let part = node.part("cri-proxy");
    kit.parts.stop(&part)?;
    let _ = std::fs::remove_file(&node.proxy_sock);
    let _ = std::fs::remove_file(kit.parts.pid_file(&node.proxy_child_part()));
    config::write(&node.dir.join("proxy-mode"), &format!("{}\n", auth.name()))?;
    // The log is appended to across restarts, so one file holds every line the proxy wrote.
    {
        use std::io::Write as _;
        let log = kit.parts.log_file(&part);
        config::create_dir(log.parent().unwrap_or(Path::new("/")))?;
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let _ = writeln!(
            file,
            "=== regcred-kit: cri-proxy of {} ({}{}) started {}",
            node.name,
            auth.name(),
            if supervise { ", supervised" } else { "" },
            k8s_openapi::jiff::Timestamp::now()
        );
    }
    // REGCRED_KIT_AGENT_BIN: another build of regcred as the node agents (scripts/scale-bench
    // node runs the static musl release build, the one nodes run; a later `proxy` restart
    // without it goes back to the kit's own build).
    let agent = env_nonempty("REGCRED_KIT_AGENT_BIN")
        .map_or_else(|| kit.rust_bin.join("regcred"), PathBuf::from);
    let env_or =
        |name: &str, default: &str| env_nonempty(name).unwrap_or_else(|| default.to_owned());
    let mut args: Vec<OsString> = vec![
        "cri-proxy".into(),
        "--listen".into(),
        format!("unix://{}", node.proxy_sock.display()).into(),
        "--runtime".into(),
        format!("unix://{}", node.containerd_sock.display()).into(),
        "--secrets-from".into(),
        "kube".into(),
        "--metrics-addr".into(),
        format!(
            "127.0.0.1:{}",
            kit.state.port(&format!("PROXY_METRICS_{}", node.index))
        )
        .into(),
        "--kube-cache-ttl".into(),
        env_or("REGCRED_KIT_PROXY_CACHE_TTL", "1").into(),
        "--node-name".into(),
        node.name.clone().into(),
        "--pull-records-dir".into(),
        node.dir.join("cri-proxy-records").into_os_string(),
    ];
    args.extend(
        env_or("REGCRED_KIT_PROXY_ARGS", "")
            .split_whitespace()
            .map(OsString::from),
    );
    if kit.state.mode == "nri" {
        args.push("--nri-decisions".into());
        args.push(format!("unix://{}", node.decisions_sock.display()).into());
    }
    args.extend([
        "--log-level".into(),
        env_or("REGCRED_KIT_PROXY_LOG_LEVEL", "debug").into(),
        "--log-format".into(),
        "json".into(),
    ]);
    let env = [("KUBECONFIG", kubeconfig.into_os_string())];
    if supervise {
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let mut supervised: Vec<OsString> = vec![
            "supervise".into(),
            "--pid-file".into(),
            kit.parts
                .pid_file(&node.proxy_child_part())
                .into_os_string(),
            "--".into(),
            agent.into_os_string(),
        ];
        supervised.extend(args);
        kit.parts.start(&part, &exe, &supervised, &env)?;
    } else {
        kit.parts.start(&part, &agent, &args, &env)?;
    }
    let sock = node.proxy_sock.clone();
    wait_for(
        kit,
        &format!("the CRI proxy socket of {}", node.name),
        30,
        Some(&part),
        || async {
            std::fs::metadata(&sock)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        },
    )
    .await
}

/// How often regcred-nri's log says it started (registered and configured by containerd).
fn nri_starts(kit: &Kit, part: &str) -> usize {
    std::fs::read_to_string(kit.parts.log_file(part))
        .map_or(0, |text| text.matches("Started plugin").count())
}

/// regcred-nri at the node's NRI socket (NRI mode); it reconnects by itself after a
/// containerd restart. Ready once containerd has registered and configured it.
async fn start_nri_plugin(kit: &Kit, node: &Node) -> Result<(), String> {
    let part = node.part("regcred-nri");
    if kit.parts.alive(&part) {
        return Ok(());
    }
    let before = nri_starts(kit, &part);
    kit.parts.start(
        &part,
        &kit.nri_plugin(),
        &[
            "--nri-socket".into(),
            node.nri_sock.clone().into_os_string(),
            "--agent".into(),
            format!("unix://{}", node.decisions_sock.display()).into(),
            "--log-format".into(),
            "json".into(),
        ],
        &[],
    )?;
    wait_for(
        kit,
        &format!("regcred-nri of {} registered with containerd", node.name),
        30,
        Some(&part),
        || async { nri_starts(kit, &part) > before },
    )
    .await
}

fn start_kubelet(kit: &Kit, node: &Node, patch: Option<&str>) -> Result<(), String> {
    let part = node.part("kubelet");
    if kit.parts.alive(&part) {
        return Ok(());
    }
    config::write(&node.dir.join("resolv.conf"), "nameserver 127.0.0.1\n")?;
    let config_file = node.dir.join("kubelet/config.yaml");
    config::write(&config_file, &config::kubelet(kit, node, patch))?;
    let mut args: Vec<OsString> = vec!["--config".into(), config_file.into_os_string()];
    // Mode none: a kubelet with nothing of regcred, not even the credential provider.
    if kit.state.mode != "none" {
        let bin_dir = node.dir.join("kubelet/credential-providers");
        config::create_dir(&bin_dir)?;
        let link = bin_dir.join("regcred");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(kit.rust_bin.join("regcred"), &link)
            .map_err(|e| format!("linking {}: {e}", link.display()))?;
        let provider = node.dir.join("kubelet/credential-providers.yaml");
        config::write(&provider, &config::credential_provider(kit, node)?)?;
        args.extend([
            "--image-credential-provider-config".into(),
            provider.into_os_string(),
            "--image-credential-provider-bin-dir".into(),
            bin_dir.into_os_string(),
        ]);
    }
    args.extend([
        "--kubeconfig".into(),
        node.kubelet_kubeconfig.clone().into_os_string(),
        "--root-dir".into(),
        node.dir.join("kubelet/root").into_os_string(),
        "--hostname-override".into(),
        node.name.clone().into(),
        "--node-ip".into(),
        node.ip.clone().into(),
        "--v".into(),
        env_nonempty("REGCRED_KIT_KUBELET_VERBOSITY")
            .unwrap_or_else(|| "2".into())
            .into(),
    ]);
    kit.parts
        .start(&part, &kit.bin_dir.join("kubelet"), &args, &[])
}

/// The node is Ready, and its kubelet said so at or after `since` (seconds since the
/// epoch; 0 for any time): a warm `up` finds the Node objects of the last run still Ready
/// in etcd, which says nothing of the kubelet just started.
async fn node_ready(client: &kube::Client, name: &str, since: i64) -> bool {
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

async fn all_nodes_ready(kit: &Kit, since: i64) -> bool {
    let Ok(client) = kit.client().await else {
        return false;
    };
    for node in kit.nodes() {
        if !node_ready(&client, &node.name, since).await {
            return false;
        }
    }
    true
}

/// containerd's version as its server reports it.
fn runtime_version(kit: &Kit, node: &Node) -> Result<String, String> {
    let mut command = Command::new(kit.ctr());
    command
        .arg("--address")
        .arg(&node.containerd_sock)
        .arg("version");
    let text = run(&mut command, None)?;
    text.split("Server:")
        .nth(1)
        .and_then(|server| {
            server
                .lines()
                .find_map(|line| line.trim().strip_prefix("Version:"))
        })
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "cannot read the version of containerd of {} ({} version)",
                node.name,
                kit.ctr().display()
            )
        })
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
        let mut command = Command::new(kit.ctr());
        command
            .arg("--address")
            .arg(&node.containerd_sock)
            .args(["-n", "regcred-kit-up"])
            .args(args);
        run(&mut command, None)
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
    let mut stop = |part: String| {
        if let Err(e) = kit.parts.stop(&part) {
            failed.push(e);
        }
    };
    for node in &nodes {
        for what in ["kubelet", "cri-proxy", "regcred-nri"] {
            stop(node.part(what));
        }
    }
    for node in &nodes {
        net::stop_containers(kit, node);
        if let Err(e) = kit.parts.stop(&node.part("containerd")) {
            failed.push(e);
        }
    }
    for part in CONTROL_PARTS.iter().rev() {
        if let Err(e) = kit.parts.stop(part) {
            failed.push(e);
        }
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
    config::create_dir(pem.parent().unwrap_or(out))?;
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
