//! The node modes' objects, the runtime proxy's DaemonSet and credentials, and the node installer with its clean-up hook.

use super::*;

/// node.mode: each mode's cluster objects, and only those; the NRI binding exempts the
/// release namespace and node.tolerationNamespaces, each once; the DaemonSet is the
/// runtime proxy's, refused with any other mode.
#[test]
fn each_node_mode_renders_its_own_objects() {
    let node_objects = |values: &[&str]| -> BTreeSet<String> {
        render(values)
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .filter(|o| !o.contains(" regcred-webhook"))
            .collect()
    };
    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| (*n).to_owned()).collect() };
    assert_eq!(
        node_objects(&[]),
        set(&[
            "ValidatingAdmissionPolicy regcred-nri-toleration",
            "ValidatingAdmissionPolicyBinding regcred-nri-toleration",
        ])
    );
    assert_eq!(
        node_objects(&["node.mode=runtime-proxy"]),
        set(&["ServiceAccount regcred-cri-proxy"])
    );
    assert_eq!(
        node_objects(&[
            "node.mode=runtime-proxy",
            "node.apiCredentials=serviceAccount"
        ]),
        set(&[
            "ServiceAccount regcred-cri-proxy",
            "ClusterRole regcred-cri-proxy-pods",
            "ClusterRoleBinding regcred-cri-proxy-pods",
            "ClusterRole regcred-cri-proxy-secrets",
        ])
    );
    assert_eq!(
        node_objects(DAEMON_SET),
        set(&[
            "ServiceAccount regcred-cri-proxy",
            "DaemonSet regcred-cri-proxy"
        ])
    );
    assert_eq!(
        node_objects(&["node.mode=credential-provider"]),
        set(&[
            "ClusterRole regcred-credential-provider-audience",
            "ClusterRoleBinding regcred-credential-provider-audience",
        ])
    );
    assert_eq!(node_objects(&["node.mode=none"]), BTreeSet::new());

    // The credential provider's audience is the resource nodes may request tokens for.
    for (values, audience) in [
        (
            &["node.mode=credential-provider"][..],
            "https://kubernetes.default.svc.cluster.local",
        ),
        (
            &[
                "node.mode=credential-provider",
                "node.credentialProvider.audience=regcred.example.com",
            ][..],
            "regcred.example.com",
        ),
    ] {
        let objects = render(values);
        let role = find(
            &objects,
            "ClusterRole",
            "regcred-credential-provider-audience",
        )
        .unwrap();
        assert_eq!(
            role["rules"],
            json!([{
                "apiGroups": [""],
                "resources": [audience],
                "verbs": ["request-serviceaccounts-token-audience"]
            }])
        );
        let binding = find(
            &objects,
            "ClusterRoleBinding",
            "regcred-credential-provider-audience",
        )
        .unwrap();
        assert_eq!(
            binding["subjects"],
            json!([{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes" }])
        );
    }

    // Where the NRI toleration annotation is allowed.
    for (args, exempt) in [
        (vec![], &["kube-system", "regcred-system"][..]),
        (
            sets(&["node.tolerationNamespaces={kube-system,regcred-system,calico-system}"]),
            &["kube-system", "regcred-system", "calico-system"][..],
        ),
        (
            vec![
                "--set-json".to_owned(),
                "node.tolerationNamespaces=[]".to_owned(),
            ],
            &["regcred-system"][..],
        ),
    ] {
        let objects = helm_template(&args).unwrap();
        let binding = find(
            &objects,
            "ValidatingAdmissionPolicyBinding",
            "regcred-nri-toleration",
        )
        .unwrap();
        let expression =
            &binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(expression["key"], "kubernetes.io/metadata.name");
        assert_eq!(expression["operator"], "NotIn");
        assert_eq!(expression["values"], json!(exempt), "{args:?}");
    }

    for mode in ["nri", "credential-provider", "none"] {
        let mode = format!("node.mode={mode}");
        let error = helm_template(&sets(&[mode.as_str(), "node.daemonSet.enabled=true"]))
            .expect_err("the DaemonSet needs node.mode=runtime-proxy");
        assert!(
            error.contains("node.daemonSet.enabled") && error.contains("node.mode=runtime-proxy"),
            "{error}"
        );
    }
}

/// Issue 23, finding 14: the DaemonSet mounts from the node only what the agent reads,
/// read-only, and writes only to its own directories (its socket's and its records').
#[test]
fn the_cri_proxy_daemonset_writes_only_its_own_host_directories() {
    for values in [DAEMON_SET, DAEMON_SET_AS_ACCOUNT] {
        let objects = render(values);
        let daemonset = find(&objects, "DaemonSet", "regcred-cri-proxy").expect("the DaemonSet");
        let pod = &daemonset["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().unwrap();
        let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
        let writable: Vec<String> = mounts
            .iter()
            .filter(|m| m["readOnly"] != true)
            .map(|m| {
                let volume = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
                volume["hostPath"]["path"]
                    .as_str()
                    .unwrap_or("(not a hostPath)")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            writable,
            ["/run/regcred", "/var/lib/regcred"],
            "{values:?}: {mounts:?}"
        );
        for mount in mounts {
            let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
            let path = volume["hostPath"]["path"].as_str().unwrap();
            assert!(
                [
                    "/run/regcred",
                    "/var/lib/regcred",
                    "/run/containerd",
                    "/etc/kubernetes/kubelet.conf",
                    "/var/lib/kubelet/pki"
                ]
                .contains(&path),
                "an unexpected host path: {path}"
            );
        }
    }
}

// Issue 14, finding 1: the default node credentials read no more than the Node
// authorizer lets the node read. The proxy authenticates with the kubelet's kubeconfig,
// mounted read-only; nothing is bound to its ServiceAccount, no role of the chart grants
// anything on Secrets (but the webhook's own certificate Role), and the proxy's pods carry
// no ServiceAccount token.
#[test]
fn the_cri_proxy_reads_the_api_as_its_node_by_default() {
    let objects = render(DAEMON_SET);
    assert_eq!(secret_grants(&objects), Vec::<String>::new());
    assert_eq!(grants_to(&objects, "regcred-cri-proxy"), BTreeSet::new());
    let daemonset = find(&objects, "DaemonSet", "regcred-cri-proxy").expect("the DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    let kubeconfig = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "KUBECONFIG")
        .expect("KUBECONFIG is set")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mounts = container["volumeMounts"].as_array().unwrap();
    for path in [kubeconfig.as_str(), "/var/lib/kubelet/pki"] {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{path} is not mounted"));
        assert_eq!(mount["readOnly"], true, "{path} must be read-only");
        let volume = volume_of(pod, mount);
        assert_eq!(
            volume["hostPath"]["path"], path,
            "{path} comes from the node"
        );
    }
    // The pulled-image records are on the node, where --pull-records-dir points, and so is
    // their hash key beside the directory (DIR.key): the parent directory is mounted.
    let records_dir = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--pull-records-dir="))
        .expect("--pull-records-dir");
    let records = Path::new(records_dir)
        .parent()
        .and_then(Path::to_str)
        .expect("a records directory with a parent");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == records)
        .unwrap_or_else(|| panic!("{records} (the parent of {records_dir}) is not mounted"));
    let volume = volume_of(pod, mount);
    assert_eq!(
        volume["hostPath"]["path"], records,
        "the records outlive the pod"
    );
    let account = find(&objects, "ServiceAccount", "regcred-cri-proxy").unwrap();
    assert_eq!(account["automountServiceAccountToken"], false);
}

// The alternative, node.apiCredentials=serviceAccount (the kustomize component
// cri-proxy/namespaced before the chart): the proxy runs as its ServiceAccount, may get
// any pod, and gets Secrets only where a namespace binds the Secret role (the chart binds
// it nowhere); the kubelet's files are not mounted.
#[test]
fn the_service_account_credentials_grant_secrets_only_per_namespace() {
    let objects = render(DAEMON_SET_AS_ACCOUNT);
    let grants = secret_grants(&objects);
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(
        grants[0].contains("regcred-cri-proxy-secrets"),
        "{grants:?}"
    );
    assert!(
        objects.iter().all(
            |o| !(o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
                || o["roleRef"]["name"] != "regcred-cri-proxy-secrets"
        ),
        "the Secret role must not be bound by the chart"
    );
    // Pods to read, Events to write on them (the agent's RegcredPullSecretSkipped, ...).
    assert_eq!(
        grants_to(&objects, "regcred-cri-proxy"),
        BTreeSet::from([
            "cluster: get pods".to_owned(),
            "cluster: create events".to_owned(),
            "cluster: patch events".to_owned()
        ])
    );
    let pods = find(&objects, "ClusterRole", "regcred-cri-proxy-pods").unwrap();
    assert_eq!(pods["rules"][0]["verbs"], json!(["get"]));
    let account = find(&objects, "ServiceAccount", "regcred-cri-proxy").unwrap();
    assert_eq!(account["automountServiceAccountToken"], true);
    let daemonset = find(&objects, "DaemonSet", "regcred-cri-proxy").unwrap();
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert!(pod["containers"][0]["env"].is_null(), "no KUBECONFIG");
    let volumes = pod["volumes"].to_string();
    assert!(!volumes.contains("kubelet"), "{volumes}");
    // The per-namespace binding the chart's notes document names that role and the
    // proxy's account.
    let binding: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/cri-proxy/secrets-rolebinding.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(binding["kind"], "RoleBinding");
    assert_eq!(binding["roleRef"]["name"], "regcred-cri-proxy-secrets");
    assert_eq!(binding["subjects"][0]["name"], "regcred-cri-proxy");
}

/// The node installer's pod as rendered: `regcred node ARGS` on each node with the host
/// at /host, hostPID (systemd through `regcred node host-exec`), privileged, tolerated by
/// NRI while regcred-nri is away, Ready only when `node status --expect` holds.
fn installer_pod<'a>(template: &'a Value, verb: &str, expect: &str) -> &'a Value {
    let pod = &template["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(
        template["metadata"]["annotations"]["tolerate-missing-plugins.nri.regcred.dev/pod"],
        "true"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/host");
    assert_eq!(pod["volumes"][0]["hostPath"]["path"], "/");
    let args: Vec<&str> = strings(&container["args"]);
    assert_eq!(args[..2], ["node", verb]);
    assert!(
        args.contains(&"--host-root=/host") && args.contains(&"--stay"),
        "{args:?}"
    );
    let probe: Vec<&str> = strings(&container["readinessProbe"]["exec"]["command"]);
    assert_eq!(
        probe.last().copied(),
        Some(format!("--expect={expect}").as_str())
    );
    container
}

/// The rendered commands run as the regcred binary takes them: with the host root
/// swapped for an empty directory, `install` is refused before any change (exit 2, no
/// kubelet drop-in directory) and `uninstall` has nothing to do; the readiness probes
/// say "not installed" for the installer and "ready" for the clean-up.
fn run_rendered(args: &[&str], host: &Path) -> std::process::Output {
    let args: Vec<String> = args
        .iter()
        .filter(|a| **a != "--stay")
        .map(|a| {
            a.replace(
                "--host-root=/host",
                &format!("--host-root={}", host.display()),
            )
        })
        .collect();
    Command::new(regcred_tests::harness::regcred_binary())
        .args(&args)
        .output()
        .unwrap()
}

#[test]
fn the_node_installer_installs_on_every_node_and_cleans_up_before_uninstall() {
    let objects = render(INSTALLER);
    let daemonset = find(&objects, "DaemonSet", "regcred-node-installer").expect("the installer");
    assert_eq!(
        daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1,
        "one node at a time"
    );
    let install = installer_pod(&daemonset["spec"]["template"], "install", "installed");
    let args = strings(&install["args"]);
    assert!(
        args.contains(&"--mode=nri") && args.contains(&"--nri-plugin=/usr/local/bin/regcred-nri"),
        "{args:?}"
    );

    // The clean-up: every object a pre-delete hook, deleted when it succeeded; the Job
    // runs after its ServiceAccount, roles and ConfigMap exist.
    let hooks: Vec<&Value> = objects
        .iter()
        .filter(|o| o["metadata"]["name"] == "regcred-node-cleanup")
        .collect();
    let kinds: BTreeSet<&str> = hooks.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Job",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ])
    );
    for hook in &hooks {
        let annotations = &hook["metadata"]["annotations"];
        assert_eq!(
            annotations["helm.sh/hook"], "pre-delete",
            "{}",
            hook["kind"]
        );
        assert_eq!(
            annotations["helm.sh/hook-delete-policy"],
            "before-hook-creation,hook-succeeded"
        );
        let weight: i32 = annotations["helm.sh/hook-weight"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(weight < 0, hook["kind"] != "Job", "{}", hook["kind"]);
    }
    let job = find(&objects, "Job", "regcred-node-cleanup").unwrap();
    let job_args = strings(&job["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(
        job_args,
        [
            "node",
            "cleanup",
            "--daemonset=/etc/regcred/daemonset.yaml",
            "--webhook-configuration=regcred-webhook",
            "--installer-daemonset=regcred-node-installer",
            "--timeout-seconds=300"
        ]
    );
    // Its ClusterRole deletes regcred's webhook configuration and nothing else.
    let role = find(&objects, "ClusterRole", "regcred-node-cleanup").unwrap();
    assert_eq!(role["rules"].as_array().unwrap().len(), 1);
    assert_eq!(role["rules"][0]["resourceNames"][0], "regcred-webhook");
    assert_eq!(strings(&role["rules"][0]["verbs"]), ["delete"]);

    // The uninstalling DaemonSet in the ConfigMap: the same nodes, `uninstall`.
    let config = find(&objects, "ConfigMap", "regcred-node-cleanup").unwrap();
    let manifest: Value =
        serde_yaml::from_str(config["data"]["daemonset.yaml"].as_str().unwrap()).unwrap();
    let uninstaller: DaemonSet = typed(&manifest);
    assert_eq!(uninstaller.metadata.namespace.as_deref(), Some(NAMESPACE));
    let uninstall = installer_pod(&manifest["spec"]["template"], "uninstall", "absent");

    // The real binary takes every rendered flag.
    let host = tempfile::tempdir().unwrap();
    let refused = run_rendered(&strings(&install["args"]), host.path());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("nothing was changed"), "{said}");
    let undone = run_rendered(&strings(&uninstall["args"]), host.path());
    assert!(
        undone.status.success()
            && String::from_utf8_lossy(&undone.stdout).contains("nothing to change"),
        "{undone:?}"
    );
    let probe = |container: &Value| {
        run_rendered(
            &strings(&container["readinessProbe"]["exec"]["command"])[1..],
            host.path(),
        )
        .status
        .code()
    };
    assert_eq!(
        probe(install),
        Some(1),
        "not installed: the installer is not Ready"
    );
    assert_eq!(
        probe(uninstall),
        Some(0),
        "nothing installed: the clean-up is Ready"
    );
}

#[test]
fn the_node_installer_refuses_values_that_cannot_work() {
    for (values, says) in [
        (
            &[
                "node.installer.enabled=true",
                "node.mode=credential-provider",
            ][..],
            "node.installer.enabled installs the node agent as a host service",
        ),
        (
            &[
                "node.installer.enabled=true",
                "node.mode=runtime-proxy",
                "node.daemonSet.enabled=true",
            ][..],
            "choose one",
        ),
        (
            &["node.installer.kubeletConfigDir=etc/kubelet.d"][..],
            "/node/installer/kubeletConfigDir",
        ),
        (
            &["node.installer.cleanupTimeoutSeconds=1"][..],
            "/node/installer/cleanupTimeoutSeconds",
        ),
    ] {
        let error = helm_template(&sets(values)).expect_err("must not render");
        assert!(error.contains(says), "{values:?}: {error}");
    }
}
