//! The Helm chart (deploy/chart) as the real `helm template` renders it, in each of its
//! modes: every object parses into its k8s-openapi type and serializes back to exactly
//! what was rendered (so a misspelt or misplaced field fails here, not in a cluster) and
//! carries the chart's labels in the release namespace; the cert-manager objects have
//! the fields the wiring relies on; the webhook configuration, the Service and the
//! Deployment agree on names, ports and paths; and each certificate mode and node mode
//! renders what it promises, RBAC no more than that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod chart;
mod node;
mod package;
mod units;
mod webhook;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release namespace of every render (`helm template --namespace`).
const NAMESPACE: &str = "regcred-system";

/// What the opt-in kustomize component webhook/cert-manager gave: cert-manager issues the
/// serving certificate and injects its CA.
const CERT_MANAGER: &[&str] = &["webhook.certificate.mode=certManager"];

/// The runtime proxy's DaemonSet, reading the API with the kubelet's credentials.
const DAEMON_SET: &[&str] = &["node.mode=runtime-proxy", "node.daemonSet.enabled=true"];

/// The same as its own ServiceAccount: what the kustomize component cri-proxy/namespaced
/// gave.
const DAEMON_SET_AS_ACCOUNT: &[&str] = &[
    "node.mode=runtime-proxy",
    "node.daemonSet.enabled=true",
    "node.apiCredentials=serviceAccount",
];

/// Every mode and optional object of the chart, for the checks that hold in each.
const VARIANTS: &[&[&str]] = &[
    &[],
    CERT_MANAGER,
    &[
        "webhook.certificate.mode=certManager",
        "webhook.certificate.certManager.issuerRef.name=corp-ca",
        "webhook.certificate.certManager.issuerRef.kind=ClusterIssuer",
        "webhook.certificate.certManager.issuerRef.group=cert-manager.io",
    ],
    &[
        "webhook.certificate.mode=secret",
        "webhook.certificate.caBundle=not-checked-here",
    ],
    DAEMON_SET,
    DAEMON_SET_AS_ACCOUNT,
    &["node.mode=credential-provider"],
    &[
        "node.mode=none",
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prometheus",
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        "webhook.checkDockerSecrets=true",
        "webhook.logLevel=debug",
        "webhook.replicas=3",
        "webhook.priorityClassName=system-cluster-critical",
        "webhook.nodeSelector.kubernetes\\.io/os=linux",
        "webhook.tolerations[0].key=dedicated",
        "webhook.tolerations[0].operator=Exists",
        "webhook.podAnnotations.example\\.com/team=platform",
        "webhook.policy.maxValueBytes=16384",
        "imagePullSecrets[0].name=registry-pull",
        "webhook.extraArgs[0]=--max-connections=128",
        "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ],
    &["webhook.enabled=false", "webhook.replicas=1"],
    INSTALLER,
    &["node.mode=runtime-proxy", "node.installer.enabled=true"],
];

/// The node installer (NRI mode) and its clean-up hook.
const INSTALLER: &[&str] = &[
    "node.installer.enabled=true",
    "node.installer.nodeSelector.kubernetes\\.io/os=linux",
];

fn helm() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("helm"))
                .find(|p| p.is_file())
        })
        .expect(
            "helm is not on PATH: build it with `scripts/cluster build helm` and put \
             `$(scripts/cluster bin-dir)` on PATH",
        )
}

/// The Kubernetes version the chart is rendered for: the oldest it accepts (Chart.yaml's
/// kubeVersion, `>=X.Y.Z-0`). Without --kube-version, `helm template` assumes v1.20 and
/// refuses the chart.
fn kube_version() -> String {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/chart/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let constraint = chart["kubeVersion"]
        .as_str()
        .expect("Chart.yaml has a kubeVersion");
    constraint
        .strip_prefix(">=")
        .and_then(|v| v.strip_suffix("-0"))
        .unwrap_or_else(|| panic!("Chart.yaml's kubeVersion {constraint}: expected >=X.Y.Z-0"))
        .to_owned()
}

/// `--set VALUE` for each of `values`.
fn sets(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| ["--set".to_owned(), (*v).to_owned()])
        .collect()
}

/// `helm template regcred deploy/chart --namespace regcred-system ARGS`: one JSON value
/// per object, or helm's error output.
fn helm_template(args: &[String]) -> Result<Vec<Value>, String> {
    helm_template_of(&root().join("deploy/chart"), args)
}

/// `helm template` of a chart directory or archive.
fn helm_template_of(chart: &Path, args: &[String]) -> Result<Vec<Value>, String> {
    let output = Command::new(helm())
        .args(["template", "regcred"])
        .arg(chart)
        .args(["--namespace", NAMESPACE, "--kube-version", &kube_version()])
        .args(args)
        .output()
        .expect("helm runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect())
}

/// The chart rendered with `values` (each a `--set`), which must succeed.
fn render(values: &[&str]) -> Vec<Value> {
    helm_template(&sets(values))
        .unwrap_or_else(|e| panic!("helm template --set {values:?} failed: {e}"))
}

/// Parses `object` as `T` and checks that nothing was lost on the way: a field the type
/// does not have (a typo, a wrong level) is dropped by the parse and fails the check.
fn typed<T: DeserializeOwned + serde::Serialize>(object: &Value) -> T {
    let name = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let parsed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    let mut lost = Vec::new();
    diff("", object, &back, &mut lost);
    assert!(
        lost.is_empty(),
        "{name}: fields the API type does not know: {lost:?}"
    );
    parsed
}

/// Paths in `rendered` that are missing or different in `parsed`.
fn diff(path: &str, rendered: &Value, parsed: &Value, lost: &mut Vec<String>) {
    match (rendered, parsed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => diff(&format!("{path}.{key}"), value, other, lost),
                    None => lost.push(format!("{path}.{key}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, lost);
            }
        }
        (a, b) if a == b => {}
        _ => lost.push(format!("{path} ({rendered} became {parsed})")),
    }
}

struct Rendered {
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    budgets: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
    webhooks: Vec<ValidatingWebhookConfiguration>,
    secrets: Vec<Secret>,
    /// cert-manager objects by `kind/namespace/name`, as JSON.
    cert_manager: BTreeMap<String, Value>,
    /// prometheus-operator ServiceMonitors, as JSON.
    service_monitors: Vec<Value>,
}

/// The kinds the chart renders that have no namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ClusterRole",
    "ClusterRoleBinding",
];

/// Every object of `objects` parsed (and its metadata checked, [`check_metadata`]).
fn parse(objects: &[Value]) -> Rendered {
    let mut rendered = Rendered {
        service_accounts: Vec::new(),
        config_maps: Vec::new(),
        services: Vec::new(),
        deployments: Vec::new(),
        budgets: Vec::new(),
        network_policies: Vec::new(),
        webhooks: Vec::new(),
        secrets: Vec::new(),
        cert_manager: BTreeMap::new(),
        service_monitors: Vec::new(),
    };
    for object in objects {
        check_metadata(object);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        match (api_version, kind) {
            ("v1", "ServiceAccount") => rendered.service_accounts.push(typed(object)),
            ("v1", "ConfigMap") => rendered.config_maps.push(typed(object)),
            ("v1", "Secret") => rendered.secrets.push(typed(object)),
            ("v1", "Service") => rendered.services.push(typed(object)),
            ("apps/v1", "Deployment") => rendered.deployments.push(typed(object)),
            ("policy/v1", "PodDisruptionBudget") => rendered.budgets.push(typed(object)),
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                rendered.network_policies.push(typed(object));
            }
            ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
                rendered.webhooks.push(typed(object));
            }
            ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                let key = format!(
                    "{kind}/{}/{}",
                    object["metadata"]["namespace"].as_str().unwrap_or_default(),
                    object["metadata"]["name"].as_str().unwrap_or_default()
                );
                rendered.cert_manager.insert(key, object.clone());
            }
            ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                rendered.service_monitors.push(object.clone());
            }
            // Checked against files/prometheus-rules.yaml by
            // the_alerts_and_the_dashboard_query_documented_metrics.
            ("monitoring.coreos.com/v1", "PrometheusRule") => {}
            // Kinds of the node modes and the certificate RBAC: checked for typos here,
            // for what they grant by the tests below.
            ("apps/v1", "DaemonSet") => drop(typed::<DaemonSet>(object)),
            ("batch/v1", "Job") => drop(typed::<Job>(object)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(object)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(typed::<ClusterRoleBinding>(object));
            }
            ("rbac.authorization.k8s.io/v1", "Role") => drop(typed::<Role>(object)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(typed::<RoleBinding>(object)),
            // NRI mode's admission rule; the kit's API server runs it.
            ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
                drop(typed::<ValidatingAdmissionPolicy>(object));
            }
            ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
                drop(typed::<ValidatingAdmissionPolicyBinding>(object));
            }
            // The namespace is helm's (`helm install --create-namespace`), not the chart's.
            _ => panic!("the chart renders {api_version} {kind}, which this test does not check"),
        }
    }
    rendered
}

/// Every object carries the chart's labels, and sits in the release namespace exactly
/// when its kind is namespaced.
fn check_metadata(object: &Value) {
    let name = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let labels = &object["metadata"]["labels"];
    for (key, value) in [
        ("app.kubernetes.io/part-of", "regcred"),
        ("app.kubernetes.io/managed-by", "Helm"),
        ("app.kubernetes.io/instance", "regcred"),
    ] {
        assert_eq!(labels[key], value, "{name}: label {key}");
    }
    for key in ["helm.sh/chart", "app.kubernetes.io/version"] {
        assert!(
            labels[key].as_str().is_some_and(|v| !v.is_empty()),
            "{name}: label {key}"
        );
    }
    if CLUSTER_SCOPED.contains(&object["kind"].as_str().unwrap()) {
        assert!(
            object["metadata"]["namespace"].is_null(),
            "{name} is cluster-scoped"
        );
    } else {
        assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{name}");
    }
}

/// The chart in mode certManager, parsed: the objects most tests look at.
fn parse_all() -> Rendered {
    parse(&render(CERT_MANAGER))
}

/// The names of `objects`.
fn names<T: k8s_openapi::Metadata<Ty = ObjectMeta>>(objects: &[T]) -> Vec<Option<String>> {
    objects.iter().map(|o| o.metadata().name.clone()).collect()
}

/// A Deployment's pod spec.
fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

/// The volume a rendered pod's mount names.
fn volume_of<'a>(pod: &'a Value, mount: &Value) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {} for the mount", mount["name"]))
}

/// The Deployment that runs `regcred webhook`.
fn webhook_deployment(rendered: &Rendered) -> &Deployment {
    rendered
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("regcred-webhook"))
        .expect("the regcred-webhook Deployment")
}

/// The ValidatingWebhookConfiguration regcred-webhook.
fn webhook_configuration(rendered: &Rendered) -> &ValidatingWebhookConfiguration {
    rendered
        .webhooks
        .iter()
        .find(|w| w.metadata.name.as_deref() == Some("regcred-webhook"))
        .expect("the regcred-webhook ValidatingWebhookConfiguration")
}

fn webhook_container(deployment: &Deployment) -> &Container {
    let spec = deployment.spec.as_ref().unwrap();
    spec.template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|c| {
            c.args
                .as_ref()
                .is_some_and(|a| a.first().is_some_and(|a| a == "webhook"))
        })
        .expect("a container runs `regcred webhook`")
}

/// `--flag=value` from a container's args.
fn flag<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    container
        .args
        .as_ref()?
        .iter()
        .find_map(|a| a.strip_prefix(&prefix))
}

/// The container port a Service target port or probe port names.
fn container_port(container: &Container, port: &IntOrString) -> i32 {
    let ports = container
        .ports
        .as_ref()
        .expect("the container declares ports");
    match port {
        IntOrString::Int(n) => {
            ports
                .iter()
                .find(|p| p.container_port == *n)
                .unwrap_or_else(|| panic!("no container port {n}"))
                .container_port
        }
        IntOrString::String(name) => {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"))
                .container_port
        }
    }
}

/// The objects of `kind` named `name` in `objects`.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Every rule of every ClusterRole and Role in `objects` that grants something on Secrets,
/// but the webhook's own certificate Role (mode selfManaged: its one Secret, checked
/// exactly by the_default_webhook_manages_its_own_certificate).
fn secret_grants(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .filter(|o| {
            !(o["kind"] == "Role" && o["metadata"]["name"] == "regcred-webhook-certificate")
        })
        .flat_map(|o| {
            o["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    r["resources"]
                        .as_array()
                        .is_some_and(|res| res.iter().any(|x| x == "secrets" || x == "*"))
                })
                .map(move |r| format!("{} {}: {r}", o["kind"], o["metadata"]["name"]))
        })
        .collect()
}

/// The strings of a JSON array (none for anything else).
fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// What the ServiceAccount `account` of the release namespace is granted, through every
/// RoleBinding and ClusterRoleBinding in `objects` that names it: one line per verb,
/// resource and resource name, `SCOPE: VERB [GROUP/]RESOURCE[/NAME]`, SCOPE being the
/// binding's namespace or `cluster`.
fn grants_to(objects: &[Value], account: &str) -> BTreeSet<String> {
    let mut grants = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let names_account = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == NAMESPACE
            });
        if !names_account {
            continue;
        }
        let scope = binding["metadata"]["namespace"]
            .as_str()
            .unwrap_or("cluster");
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let role = find(objects, role_kind, role_name).unwrap_or_else(|| {
            panic!(
                "{} binds {role_kind} {role_name}, which is not rendered",
                binding["metadata"]["name"]
            )
        });
        if role_kind == "Role" {
            assert_eq!(
                role["metadata"]["namespace"],
                binding["metadata"]["namespace"]
            );
        }
        for rule in role["rules"].as_array().unwrap() {
            let names: Vec<String> = match rule["resourceNames"].as_array() {
                Some(names) => names
                    .iter()
                    .map(|n| format!("/{}", n.as_str().unwrap()))
                    .collect(),
                None => vec![String::new()],
            };
            for group in strings(&rule["apiGroups"]) {
                let group = if group.is_empty() {
                    String::new()
                } else {
                    format!("{group}/")
                };
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        for name in &names {
                            grants.insert(format!("{scope}: {verb} {group}{resource}{name}"));
                        }
                    }
                }
            }
        }
    }
    grants
}
