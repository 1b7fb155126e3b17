//! The configuration files of a node's programs: containerd's (version 3 for containerd
//! 2.x, version 2 for Debian's 1.6), `hosts.toml` per registry, the CNI network, kubelet's
//! configuration and its credential provider configuration.

use std::path::Path;

use crate::kit::{Kit, Node};

/// `hosts.toml` of each registry (plain HTTP on loopback) and the node's CNI network: the
/// same for every runtime. Pods get a default route through their node's bridge, so that
/// a pod reaches pods on other nodes through the host.
pub(crate) fn write_network(kit: &Kit, node: &Node) -> Result<(), String> {
    let certs = node.dir.join("containerd/certs.d");
    for registry in kit.registry_hosts()? {
        let dir = certs.join(&registry);
        create_dir(&dir)?;
        write(
            &dir.join("hosts.toml"),
            &format!(
                "server = \"http://{registry}\"\n[host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
    }
    create_dir(&node.dir.join("cni/net.d"))?;
    create_dir(&node.dir.join("cni/ipam"))?;
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "regcred-kit",
        "plugins": [{
            "type": "bridge",
            "bridge": node.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": node.subnet, "gateway": node.ip }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": node.dir.join("cni/ipam").display().to_string(),
            }
        }]
    });
    write(
        &node.dir.join("cni/net.d/10-regcred-kit.conflist"),
        &format!("{conflist:#}\n"),
    )
}

/// containerd's configuration for the kit's runtime.
pub(crate) fn containerd(kit: &Kit, node: &Node) -> String {
    if kit.state.runtime == "containerd-1.6" {
        containerd_v2(kit, node)
    } else {
        containerd_v3(kit, node)
    }
}

/// containerd 2.x: configuration version 3, where the CRI plugin is split in an image
/// service (io.containerd.cri.v1.images) and a runtime service (io.containerd.cri.v1.runtime).
/// Pulls go through the transfer service (containerd 2.x's default) unless
/// REGCRED_KIT_LOCAL_IMAGE_PULL=1 sets use_local_image_pull; both read hosts.toml from the
/// same config_path. NRI is on, with a socket of the node's own. Version 3 is what 2.2 to
/// 2.4 all read; 2.3 introduced version 4 (server sockets as plugins) and migrates a 3 at
/// start with a warning in its log.
fn containerd_v3(kit: &Kit, node: &Node) -> String {
    let local_pull = std::env::var("REGCRED_KIT_LOCAL_IMAGE_PULL").is_ok_and(|v| v == "1");
    // No drop-ins from the host (containerd 2.x reads only what imports names); in NRI
    // mode the one regcred ships (deploy/nri), as a node installs it.
    let imports = if kit.state.mode == "nri" {
        format!(
            "\"{}\"",
            kit.top.join("deploy/nri/containerd-regcred.toml").display()
        )
    } else {
        String::new()
    };
    let d = node.dir.join("containerd");
    let d = d.display();
    let runtime_dir = kit.runtime_dir.display();
    let pause = crate::kit::PAUSE_IMAGE;
    let sock = node.containerd_sock.display();
    let nri = node.nri_sock.display();
    let runc_root = node.runc_root.display();
    let cni = node.dir.join("cni/net.d");
    let cni = cni.display();
    format!(
        r#"version = 3
root = "{d}/root"
state = "{d}/state"
imports = [{imports}]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins.'io.containerd.internal.v1.opt']
  path = "{d}/opt"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  use_local_image_pull = {local_pull}
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{d}/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This VM refuses negative oom_score_adj (kubelet logs it too); containerd gives the
  # pause container -998, which fails runc inside nsexec ("can't get final child's PID
  # from pipe"). Clamp to containerd's own value instead.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runtime_dir}/runc"
        Root = "{runc_root}"
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = "{nri}"
"#
    )
}

/// containerd 1.6 (Debian 12): configuration version 2, the CRI plugin in one section.
fn containerd_v2(kit: &Kit, node: &Node) -> String {
    let d = node.dir.join("containerd");
    let d = d.display();
    let runtime_dir = kit.runtime_dir.display();
    let pause = crate::kit::PAUSE_IMAGE;
    let sock = node.containerd_sock.display();
    let runc_root = node.runc_root.display();
    let cni = node.dir.join("cni/net.d");
    let cni = cni.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # See the version 3 configuration.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runtime_dir}/runc"
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
    )
}

/// kubelet's configuration of `node`.
///
/// Both of kubelet's CRI endpoints go through the proxy in runtime-proxy mode: it decides
/// at CreateContainer whether a pod may use a private image already on the node.
/// REGCRED_KIT_RUNTIME_DIRECT=1 gives kubelet containerd's socket for the RuntimeService
/// instead (the 0.1 layout, for comparisons). In NRI mode (the default) kubelet's runtime
/// endpoint is containerd's own socket, and the decision is made by regcred-nri inside
/// containerd's container creation. In credential-provider mode there is no node agent:
/// both endpoints are containerd's, and kubelet gets the pods' credentials from `regcred
/// credential-provider`. `patch` (`--kubelet-config-patch`) is appended: later keys win.
pub(crate) fn kubelet(kit: &Kit, node: &Node, patch: Option<&str>) -> String {
    let direct = std::env::var("REGCRED_KIT_RUNTIME_DIRECT").is_ok_and(|v| v == "1");
    let mode = kit.state.mode.as_str();
    let runtime = if mode == "runtime-proxy" && !direct {
        &node.proxy_sock
    } else {
        &node.containerd_sock
    };
    let image = if matches!(mode, "credential-provider" | "none") {
        &node.containerd_sock
    } else {
        &node.proxy_sock
    };
    let ip = &node.ip;
    let port = kit.state.port(&format!("KUBELET_{}", node.index));
    let healthz = kit.state.port(&format!("KUBELET_HEALTHZ_{}", node.index));
    let ca = kit.pki().join("ca.crt");
    let d = node.dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{runtime}
imageServiceEndpoint: unix://{image}
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
resolvConf: {d}/resolv.conf
clusterDomain: cluster.local
podLogsDir: {d}/kubelet/pod-logs
volumePluginDir: {d}/kubelet/volume-plugins
registerNode: true
rotateCertificates: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}}
{patch}"#,
        ca = ca.display(),
        runtime = runtime.display(),
        image = image.display(),
        patch = patch.unwrap_or_default(),
    )
}

/// Every kubelet of the kit has regcred's credential provider plugin (KEP-4412), as
/// deploy/credential-provider ships its configuration: kubelet runs it only for pods whose
/// service account carries the regcred.dev/pull-secrets annotation, so it changes nothing
/// for the others. The plugin reads the Secrets with the pod's own token, naming the API
/// server by the node's kubeconfig (cluster and CA only). kubelet matches a registry's port
/// exactly: each of the kit's registries by host:port.
pub(crate) fn credential_provider(kit: &Kit, node: &Node) -> Result<String, String> {
    let template = kit
        .top
        .join("deploy/credential-provider/credential-provider-config.yaml");
    let text = std::fs::read_to_string(&template)
        .map_err(|e| format!("reading {}: {e}", template.display()))?;
    let registries: Vec<String> = kit
        .registry_hosts()?
        .iter()
        .map(|host| format!("\"{host}\""))
        .collect();
    let cache =
        crate::kit::env_nonempty("REGCRED_KIT_PROVIDER_CACHE").unwrap_or_else(|| "5".to_owned());
    Ok(text
        .replace(
            "__KUBECONFIG__",
            &node.kubelet_kubeconfig.display().to_string(),
        )
        .replace("__MATCH_IMAGES__", &registries.join(", "))
        .replace("__CACHE_SECONDS__", &cache)
        .replace("__CACHE__", &format!("{cache}s")))
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
