//! The configuration files of a node's programs: containerd's (version 3 for containerd
//! 2.x, version 2 for Debian's 1.6, from the harness's one writer of it), `hosts.toml` per
//! registry, the CNI network, kubelet's configuration and its credential provider
//! configuration.

use std::path::Path;

use regcred_tests::harness::containerd_config::{ContainerdConfig, plain_http_hosts_toml};

use crate::kit::{Kit, Node};

/// `hosts.toml` of each registry (plain HTTP on loopback) and the node's CNI network: the
/// same for every runtime. Pods get a default route through their node's bridge, so that
/// a pod reaches pods on other nodes through the host.
pub(crate) fn write_network(kit: &Kit, node: &Node) -> Result<(), String> {
    let certs = node.dir.join("containerd/certs.d");
    for registry in kit.registry_hosts()? {
        let dir = certs.join(&registry);
        create_dir(&dir)?;
        write(&dir.join("hosts.toml"), &plain_http_hosts_toml(&registry))?;
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

/// containerd's configuration for the kit's runtime (the test tree's one writer of it,
/// `harness::containerd_config`): NRI on at the node's own socket, and in NRI mode the
/// drop-in regcred ships (deploy/nri) imported, as a node installs it; the pulls through
/// the transfer service unless REGCRED_KIT_LOCAL_IMAGE_PULL=1.
pub(crate) fn containerd(kit: &Kit, node: &Node) -> String {
    let dir = node.dir.join("containerd");
    let runc = kit.runtime_dir.join("runc");
    let cni = node.dir.join("cni/net.d");
    let imports = if kit.state.mode == "nri" {
        vec![kit.top.join("deploy/nri/containerd-regcred.toml")]
    } else {
        Vec::new()
    };
    let config = ContainerdConfig {
        dir: &dir,
        socket: &node.containerd_sock,
        runc: &runc,
        runc_root: &node.runc_root,
        cni_conf_dir: &cni,
        sandbox_image: crate::kit::PAUSE_IMAGE,
        local_pull: crate::kit::env_nonempty("REGCRED_KIT_LOCAL_IMAGE_PULL")
            .is_some_and(|v| v == "1"),
        nri_socket: Some(&node.nri_sock),
        imports: &imports,
    };
    if kit.state.runtime == "containerd-1.6" {
        config.version2()
    } else {
        config.version3()
    }
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
    let direct = crate::kit::env_nonempty("REGCRED_KIT_RUNTIME_DIRECT").is_some_and(|v| v == "1");
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
