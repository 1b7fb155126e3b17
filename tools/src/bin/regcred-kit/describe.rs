//! What a running kit tells the tests: `DIR/kit.json`, the one typed description (schema:
//! tests/cluster/kit.go, `Description`), and `DIR/cluster.env`, the `NAME=value` lines
//! other tools source. Both are written to a temporary name, mode 0600, then renamed.

use serde_json::json;

use crate::kit::{CONTROL_PARTS, IMAGE, Kit};
use regcred_tests::harness::pki::write_private;

/// `DIR/cluster.env`.
pub(crate) fn write_env(kit: &Kit, runtime_version: &str) -> Result<(), String> {
    let registries = kit.registries()?;
    let value = |name: &str| Kit::registry_value(&registries, name);
    let first = kit.node(1);
    let names: Vec<String> = kit.nodes().into_iter().map(|n| n.name).collect();
    let credentials = &kit.state.credentials;
    let lines = [
        ("KUBECONFIG", kit.admin_kubeconfig().display().to_string()),
        ("KUBECTL", kit.kubectl().display().to_string()),
        ("HELM", kit.helm().display().to_string()),
        ("NODE", first.name.clone()),
        ("NODES", names.join(",")),
        // A value with a space is single-quoted: the file stays one a shell can source.
        ("RUNTIME", format!("'containerd {runtime_version}'")),
        ("MODE", kit.state.mode.clone()),
        ("REGCRED", kit.state.regcred.clone()),
        ("CTR", kit.ctr().display().to_string()),
        ("BASIC_REGISTRY", value("BASIC_REGISTRY")?),
        ("TOKEN_REGISTRY", value("TOKEN_REGISTRY")?),
        ("PUBLIC_REGISTRY", value("PUBLIC_REGISTRY")?),
        ("BASIC_USERNAME", credentials.username.clone()),
        ("BASIC_PASSWORD", credentials.password.clone()),
        ("REFRESH_TOKEN", credentials.refresh_token.clone()),
        ("IMAGE", IMAGE.to_owned()),
        (
            "PROXY_LOG",
            kit.parts.log_file("cri-proxy").display().to_string(),
        ),
        ("PROXY_SOCKET", first.proxy_sock.display().to_string()),
        (
            "CONTAINERD_SOCKET",
            first.containerd_sock.display().to_string(),
        ),
    ];
    let text: String = lines
        .iter()
        .map(|(name, value)| format!("REGCRED_CLUSTER_{name}={value}\n"))
        .collect();
    write_private(&kit.dir.join("cluster.env"), &text)
}

/// `DIR/kit.json`.
pub(crate) fn write_description(
    kit: &Kit,
    runtime_version: &str,
    toleration: &str,
) -> Result<(), String> {
    let registries = kit.registries()?;
    let value = |name: &str| Kit::registry_value(&registries, name);
    let parts = &kit.parts;
    // (Paths as text: serde_json refuses a path that is not UTF-8, and `json!` would
    // panic on it.)
    let show = |p: &std::path::Path| p.display().to_string();
    let nodes: Vec<serde_json::Value> = kit
        .nodes()
        .iter()
        .map(|node| {
            json!({
                "name": node.name,
                "ip": node.ip,
                "dir": show(&node.dir),
                "containerdSocket": show(&node.containerd_sock),
                "nriSocket": show(&node.nri_sock),
                "proxySocket": show(&node.proxy_sock),
                "decisionsSocket": show(&node.decisions_sock),
                "proxyMetrics": format!("127.0.0.1:{}", kit.state.port(&format!("PROXY_METRICS_{}", node.index))),
                "kubeletKubeconfig": show(&node.kubelet_kubeconfig),
                "kubeletConfig": show(&node.dir.join("kubelet/config.yaml")),
                "proxyRecordsDir": show(&node.dir.join("cri-proxy-records")),
                "proxyModeFile": show(&node.dir.join("proxy-mode")),
                "logs": {
                    "kubelet": show(&parts.log_file(&node.part("kubelet"))),
                    "containerd": show(&parts.log_file(&node.part("containerd"))),
                    "proxy": show(&parts.log_file(&node.part("cri-proxy"))),
                    "nri": show(&parts.log_file(&node.part("regcred-nri"))),
                },
                "pidFiles": {
                    "kubelet": show(&parts.pid_file(&node.part("kubelet"))),
                    "containerd": show(&parts.pid_file(&node.part("containerd"))),
                    "proxy": show(&parts.pid_file(&node.part("cri-proxy"))),
                    "proxyChild": show(&parts.pid_file(&node.proxy_child_part())),
                    "nri": show(&parts.pid_file(&node.part("regcred-nri"))),
                },
            })
        })
        .collect();
    let mut logs = serde_json::Map::new();
    let mut pid_files = serde_json::Map::new();
    for part in CONTROL_PARTS {
        logs.insert(part.into(), show(&parts.log_file(part)).into());
        pid_files.insert(part.into(), show(&parts.pid_file(part)).into());
    }
    for (key, name) in [
        ("basicRegistry", "BASIC_REGISTRY_LOG"),
        ("tokenRegistry", "TOKEN_REGISTRY_LOG"),
        ("publicRegistry", "PUBLIC_REGISTRY_LOG"),
        ("tokenServer", "TOKEN_SERVER_LOG"),
    ] {
        logs.insert(key.into(), value(name)?.into());
    }
    let credentials = &kit.state.credentials;
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let description = json!({
        "version": 1,
        "dir": show(&kit.dir),
        "kubeconfig": show(&kit.admin_kubeconfig()),
        "apiServer": kit.apiserver_url(),
        "profile": kit.state.profile,
        "mode": kit.state.mode,
        "nriTolerationAnnotation": toleration,
        "binaries": {
            "kubectl": show(&kit.kubectl()),
            "helm": show(&kit.helm()),
            "ctr": show(&kit.ctr()),
            "runc": show(&kit.runtime_dir.join("runc")),
            "regcredNri": show(&kit.nri_plugin()),
            "kit": show(&exe),
        },
        "kubernetes": kit.state.kubernetes,
        "ca": { "cert": show(&kit.pki().join("ca.crt")), "key": show(&kit.pki().join("ca.key")) },
        "runtime": { "name": kit.state.runtime, "version": runtime_version, "binDir": show(&kit.runtime_dir) },
        "registries": {
            "basic": value("BASIC_REGISTRY")?,
            "token": value("TOKEN_REGISTRY")?,
            "public": value("PUBLIC_REGISTRY")?,
            "tokenRealm": value("TOKEN_REALM")?,
        },
        "credentials": {
            "username": credentials.username,
            "password": credentials.password,
            "refreshToken": credentials.refresh_token,
        },
        "images": {
            "hello": { "name": IMAGE, "id": value("IMAGE_ID")?, "digest": value("IMAGE_DIGEST")? },
            "cached": { "name": value("CACHED_IMAGE")?, "id": value("CACHED_IMAGE_ID")? },
            "open": { "name": value("OPEN_IMAGE")?, "id": value("OPEN_IMAGE_ID")? },
            "preloaded": {
                "name": value("PRELOADED_IMAGE")?,
                "id": value("PRELOADED_IMAGE_ID")?,
                "archive": show(&kit.dir.join("preloaded.oci.tar")),
            },
            "pause": { "id": value("PAUSE_IMAGE_ID")? },
        },
        "logs": logs,
        "pidFiles": pid_files,
        "nodes": nodes,
    });
    let text = serde_json::to_string_pretty(&description)
        .map_err(|e| format!("the description of the kit in {}: {e}", kit.dir.display()))?;
    write_private(&kit.dir.join("kit.json"), &format!("{text}\n"))
}
