//! Each part of the kit started and waited for: the registries, etcd, the API server,
//! the controllers, and per node containerd, the CRI proxy, regcred-nri and kubelet.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regcred_tests::harness::pki::{self, CaRef, Credential};

use crate::commands::{PROXY_NAMESPACE, PROXY_SA, ProxyAuth};
use crate::config;
use crate::kit::{
    FIRST_NODE, IMAGE, Kit, Node, PAUSE_IMAGE, PRELOADED_IMAGE, SERVICE_NET, env_nonempty,
};
use crate::up::wait_for;

pub(crate) async fn start_registries(kit: &Kit) -> Result<(), String> {
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

pub(crate) async fn start_etcd(kit: &Kit) -> Result<(), String> {
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

pub(crate) async fn start_apiserver(kit: &Kit) -> Result<(), String> {
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

pub(crate) fn start_controllers(kit: &Kit) -> Result<(), String> {
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

pub(crate) async fn start_containerd(kit: &Kit, node: &Node) -> Result<(), String> {
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
    let ctr = |args: &[&str]| kit.ctr_run(node, args);
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
pub(crate) async fn start_proxy(
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
pub(crate) async fn start_nri_plugin(kit: &Kit, node: &Node) -> Result<(), String> {
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

pub(crate) fn start_kubelet(kit: &Kit, node: &Node, patch: Option<&str>) -> Result<(), String> {
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

/// containerd's version as its server reports it.
pub(crate) fn runtime_version(kit: &Kit, node: &Node) -> Result<String, String> {
    let text = kit.ctr_run(node, &["version"])?;
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
