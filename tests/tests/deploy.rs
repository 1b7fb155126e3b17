//! The Helm chart (deploy/chart) as the real `helm template` renders it, in each of its
//! modes: every object parses into its k8s-openapi type and serializes back to exactly
//! what was rendered (so a misspelt or misplaced field fails here, not in a cluster) and
//! carries the chart's labels in the release namespace; the cert-manager objects have
//! the fields the wiring relies on; the webhook configuration, the Service and the
//! Deployment agree on names, ports and paths; and each certificate mode and node mode
//! renders what it promises, RBAC no more than that.

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

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

#[test]
fn every_rendered_object_parses_into_its_api_type() {
    for variant in VARIANTS {
        let objects = render(variant);
        parse(&objects);
        for object in &objects {
            let name = &object["metadata"]["name"];
            // Selectors: the name label only, as before the chart, so that no upgrade
            // changes an immutable selector.
            let selector = match object["kind"].as_str().unwrap() {
                "Deployment" | "DaemonSet" | "PodDisruptionBudget" => {
                    &object["spec"]["selector"]["matchLabels"]
                }
                "Service" => &object["spec"]["selector"],
                _ => continue,
            };
            assert_eq!(
                *selector,
                json!({ "app.kubernetes.io/name": name }),
                "{variant:?}: {} {name}",
                object["kind"]
            );
            // Pod templates carry none of the chart's version labels: a new chart version
            // alone does not roll the pods.
            let pod_labels = &object["spec"]["template"]["metadata"]["labels"];
            if let Some(pod_labels) = pod_labels.as_object() {
                let keys: BTreeSet<&str> = pod_labels.keys().map(String::as_str).collect();
                assert_eq!(
                    keys,
                    BTreeSet::from(["app.kubernetes.io/name", "app.kubernetes.io/component"]),
                    "{variant:?}: {} {name}",
                    object["kind"]
                );
            }
        }
    }

    let objects = render(CERT_MANAGER);
    assert!(
        objects.iter().all(|o| o["kind"] != "Namespace"),
        "the release namespace is helm's (--create-namespace), not the chart's"
    );
    let rendered = parse(&objects);
    let named = |names: Vec<Option<String>>| {
        names
            .into_iter()
            .flatten()
            .any(|n| n.starts_with("regcred-webhook"))
    };
    assert!(named(
        rendered
            .service_accounts
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect()
    ));
    assert!(named(
        rendered
            .config_maps
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect()
    ));
    assert!(named(
        rendered
            .services
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect()
    ));
    assert!(named(
        rendered
            .deployments
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect()
    ));
    assert!(named(
        rendered
            .budgets
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect()
    ));
    assert!(named(
        rendered
            .webhooks
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect()
    ));
    assert_eq!(
        rendered.cert_manager.len(),
        4,
        "{:?}",
        rendered.cert_manager.keys()
    );
}

/// `helm lint --strict` has nothing to say in any variant: no warning, no error (an INFO,
/// such as "icon is recommended", is not a finding).
#[test]
fn the_chart_lints_clean() {
    for variant in VARIANTS {
        let output = Command::new(helm())
            .args(["lint", "--strict", "--kube-version", &kube_version()])
            .arg(root().join("deploy/chart"))
            .args(sets(variant))
            .output()
            .expect("helm runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success() && !said.contains("[WARNING]") && !said.contains("[ERROR]"),
            "helm lint --set {variant:?}:\n{said}"
        );
    }
}

/// `helm install` with the defaults needs no CRDs: the serving certificate is the
/// webhook's own (mode selfManaged), cert-manager's objects come with mode certManager
/// only. Mode certManager is mode secret plus its four objects and the inject-ca-from
/// annotation, less the caBundle (cainjector's to write): the same Deployment, mounting
/// the same Secret.
#[test]
fn the_default_needs_no_crds() {
    let default = render(&[]);
    for object in &default {
        let api_version = object["apiVersion"].as_str().unwrap();
        assert!(
            ["v1", "apps/v1", "policy/v1"].contains(&api_version)
                || api_version.contains(".k8s.io/"),
            "the default renders {api_version} {}",
            object["metadata"]["name"]
        );
    }
    let with_cert_manager = render(CERT_MANAGER);
    let mut without: Vec<Value> = with_cert_manager
        .iter()
        .filter(|o| {
            !o["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("cert-manager.io/")
        })
        .cloned()
        .collect();
    assert_eq!(with_cert_manager.len() - without.len(), 4);
    for object in &mut without {
        if object["kind"] == "ValidatingWebhookConfiguration" {
            let metadata = object["metadata"].as_object_mut().unwrap();
            let annotations = metadata.remove("annotations").unwrap();
            assert_eq!(
                annotations,
                json!({ "cert-manager.io/inject-ca-from": format!("{NAMESPACE}/regcred-webhook") })
            );
            // "CA" in base64.
            object["webhooks"][0]["clientConfig"]["caBundle"] = json!("Q0E=");
        }
    }
    let secret = render(&[
        "webhook.certificate.mode=secret",
        "webhook.certificate.caBundle=CA",
    ]);
    assert_eq!(secret, without);
}

/// The default certificate mode, selfManaged: the webhook makes its CA and serving
/// certificate in a Secret, renews them, and writes the configuration's caBundle itself.
/// So: no TLS volume, the four flags that say which Secret, names and configuration, no
/// caBundle in the manifest (helm's upgrades then leave the webhook's alone), the Secret
/// made empty (the release's, so `helm uninstall` removes it), the token mounted, and RBAC
/// for exactly that: create Secrets; get, update and patch the one Secret; get and patch
/// the one ValidatingWebhookConfiguration. In the other modes the webhook has no token,
/// no role and no Secret of the chart's.
#[test]
fn the_default_webhook_manages_its_own_certificate() {
    let objects = render(&[]);
    let rendered = parse(&objects);
    let deployment = webhook_deployment(&rendered);
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.automount_service_account_token, Some(true));
    let account = rendered
        .service_accounts
        .iter()
        .find(|a| a.metadata.name.as_deref() == pod.service_account_name.as_deref())
        .expect("the webhook's ServiceAccount");
    assert_eq!(
        account.automount_service_account_token,
        Some(false),
        "only the webhook's pods mount the token"
    );
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(
        volumes.iter().all(|v| v.secret.is_none()),
        "no Secret volume: {volumes:?}"
    );
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["policy"]
    );

    let container = webhook_container(deployment);
    assert_eq!(flag(container, "tls-cert"), None);
    assert_eq!(flag(container, "tls-key"), None);
    let certificate_flags: Vec<&str> = container
        .args
        .as_ref()
        .unwrap()
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--tls-") || a.starts_with("--webhook-configuration"))
        .collect();
    assert_eq!(
        certificate_flags,
        [
            "--tls-secret=regcred-system/regcred-webhook-tls",
            "--tls-dns-name=regcred-webhook.regcred-system.svc",
            "--tls-dns-name=regcred-webhook.regcred-system.svc.cluster.local",
            "--webhook-configuration=regcred-webhook",
        ]
    );
    // The names are those of the Service the configuration calls and of the configuration.
    let configuration = webhook_configuration(&rendered);
    let webhook = &configuration.webhooks.as_ref().unwrap()[0];
    let service = webhook.client_config.service.as_ref().unwrap();
    assert_eq!(
        flag(container, "tls-dns-name"),
        Some(format!("{}.{}.svc", service.name, service.namespace).as_str())
    );
    assert_eq!(
        flag(container, "webhook-configuration"),
        configuration.metadata.name.as_deref()
    );
    assert_eq!(configuration.metadata.annotations, None);
    let raw = find(
        &objects,
        "ValidatingWebhookConfiguration",
        "regcred-webhook",
    )
    .unwrap();
    assert!(
        raw["webhooks"][0]["clientConfig"].get("caBundle").is_none(),
        "the manifest sets no caBundle: {}",
        raw["webhooks"][0]["clientConfig"]
    );

    // The Secret is the release's, empty: the webhook writes its data, and `helm
    // uninstall` removes it.
    assert_eq!(rendered.secrets.len(), 1);
    let secret = &rendered.secrets[0];
    assert_eq!(secret.metadata.name.as_deref(), Some("regcred-webhook-tls"));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert!(secret.data.is_none() && secret.string_data.is_none());

    assert_eq!(
        grants_to(&objects, "regcred-webhook"),
        BTreeSet::from(
            [
                "regcred-system: create secrets",
                "regcred-system: get secrets/regcred-webhook-tls",
                "regcred-system: update secrets/regcred-webhook-tls",
                "regcred-system: patch secrets/regcred-webhook-tls",
                "cluster: get admissionregistration.k8s.io/validatingwebhookconfigurations/regcred-webhook",
                "cluster: patch admissionregistration.k8s.io/validatingwebhookconfigurations/regcred-webhook",
            ]
            .map(String::from)
        )
    );

    for values in [
        CERT_MANAGER,
        &[
            "webhook.certificate.mode=secret",
            "webhook.certificate.caBundle=CA",
        ][..],
    ] {
        let objects = render(values);
        assert_eq!(
            grants_to(&objects, "regcred-webhook"),
            BTreeSet::new(),
            "{values:?}"
        );
        let rendered = parse(&objects);
        assert!(
            rendered.secrets.is_empty(),
            "{values:?}: the Secret is not the chart's"
        );
        let container = webhook_container(webhook_deployment(&rendered));
        assert_eq!(flag(container, "tls-secret"), None, "{values:?}");
        assert_eq!(flag(container, "webhook-configuration"), None, "{values:?}");
    }
}

/// Mode secret: the operator's Secret and CA. Without webhook.certificate.caBundle the
/// chart does not render (the API server could not trust the webhook); with it, the PEM
/// given is the configuration's caBundle and the Secret is mounted where the flags point.
#[test]
fn the_secret_mode_needs_its_ca_bundle() {
    let error = helm_template(&sets(&["webhook.certificate.mode=secret"]))
        .expect_err("mode secret without a caBundle must not render");
    assert!(
        error.contains(
            "webhook.certificate.caBundle is required with webhook.certificate.mode=secret"
        ),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n";
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, pem).unwrap();
    let mut args = sets(&["webhook.certificate.mode=secret"]);
    args.extend([
        "--set-file".to_owned(),
        format!("webhook.certificate.caBundle={}", ca.display()),
    ]);
    let rendered = parse(&helm_template(&args).unwrap());
    let webhook = &webhook_configuration(&rendered).webhooks.as_ref().unwrap()[0];
    assert_eq!(
        webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice()),
        Some(pem.as_bytes())
    );
    let deployment = webhook_deployment(&rendered);
    let container = webhook_container(deployment);
    assert_eq!(
        flag(container, "tls-cert"),
        Some("/etc/regcred/tls/tls.crt")
    );
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let secret = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find_map(|v| v.secret.as_ref())
        .expect("the Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("regcred-webhook-tls"));
}

/// webhook.checkDockerSecrets: the API server sends the Docker config Secrets too, and the
/// webhook checks them (--check-docker-secrets); by default neither.
#[test]
fn check_docker_secrets_widens_the_match_condition() {
    for (values, types, checks) in [
        (&[][..], &["'kubernetes.io/regcredentials'"][..], false),
        (
            &["webhook.checkDockerSecrets=true"][..],
            &[
                "'kubernetes.io/regcredentials'",
                "'kubernetes.io/dockerconfigjson'",
                "'kubernetes.io/dockercfg'",
            ][..],
            true,
        ),
    ] {
        let rendered = parse(&render(values));
        let webhook = &webhook_configuration(&rendered).webhooks.as_ref().unwrap()[0];
        let conditions = webhook.match_conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].expression,
            format!("has(object.type) && object.type in [{}]", types.join(", ")),
            "{values:?}"
        );
        let container = webhook_container(webhook_deployment(&rendered));
        assert_eq!(
            container
                .args
                .as_ref()
                .unwrap()
                .iter()
                .any(|a| a == "--check-docker-secrets"),
            checks,
            "{values:?}"
        );
    }
}

/// webhook.extraArgs: more `regcred webhook` flags, after the chart's own.
#[test]
fn extra_args_follow_the_charts_own() {
    let rendered = parse(&render(&[
        "webhook.extraArgs[0]=--max-connections=128",
        "webhook.extraArgs[1]=--idle-timeout=30",
    ]));
    let args = webhook_container(webhook_deployment(&rendered))
        .args
        .clone()
        .unwrap();
    assert_eq!(
        args[args.len() - 3..],
        [
            "--log-level=info",
            "--max-connections=128",
            "--idle-timeout=30"
        ]
    );
}

/// webhook.policy is the ConfigMap's policy-config.yaml (valid against
/// schemas/policy-config.schema.json), and the pods' checksum/policy annotation is the
/// sha256 of exactly that file: a policy change rolls the pods.
#[test]
fn a_policy_value_lands_in_the_config_map_and_rolls_the_pods() {
    let schema = std::fs::read_to_string(root().join("schemas/policy-config.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&schema).unwrap()).unwrap();
    let policy_of = |values: &[&str]| {
        let rendered = parse(&render(values));
        let map = rendered
            .config_maps
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some("regcred-webhook-policy"))
            .expect("the ConfigMap regcred-webhook-policy");
        let file = map.data.as_ref().unwrap()["policy-config.yaml"].clone();
        let deployment = webhook_deployment(&rendered);
        let annotations = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        let checksum = annotations["checksum/policy"].clone();
        let digest = regcred_tests::harness::sha256_digest(file.as_bytes());
        assert_eq!(
            Some(checksum.as_str()),
            digest.strip_prefix("sha256:"),
            "{values:?}: checksum/policy is the file's sha256"
        );
        let policy: Value = serde_yaml::from_str(&file).unwrap();
        assert!(validator.is_valid(&policy), "{values:?}: {file}");
        (policy, checksum)
    };
    let (default, default_checksum) = policy_of(&[]);
    assert_eq!(default, json!({}));
    let (policy, checksum) = policy_of(&[
        "webhook.policy.allowedRegistries[0]=registry.example.com",
        "webhook.policy.allowedRegistries[1]=*.corp.example",
        "webhook.policy.maxValueBytes=16384",
    ]);
    assert_eq!(
        policy,
        json!({
            "allowedRegistries": ["registry.example.com", "*.corp.example"],
            "maxValueBytes": 16384
        })
    );
    assert_ne!(checksum, default_checksum);
}

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

/// metrics.serviceMonitor: a ServiceMonitor of the webhook Service's metrics port, with
/// the interval and extra labels given.
#[test]
fn the_service_monitor_scrapes_the_webhook_metrics_port() {
    assert!(parse(&render(&[])).service_monitors.is_empty());
    let rendered = parse(&render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.interval=15s",
        "metrics.serviceMonitor.labels.release=prometheus",
    ]));
    assert_eq!(rendered.service_monitors.len(), 1);
    let monitor = &rendered.service_monitors[0];
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let service = rendered
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("regcred-webhook"))
        .unwrap();
    let service_labels = service.metadata.labels.as_ref().unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            service_labels.get(key).map(String::as_str),
            value.as_str(),
            "{key}"
        );
    }
    let endpoints = monitor["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["interval"], "15s");
    assert_eq!(endpoints[0]["path"], "/metrics");
    let port = endpoints[0]["port"].as_str().unwrap();
    assert!(
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some(port) && p.port == 9090),
        "the Service's port {port} is metrics (9090)"
    );
}

#[test]
fn the_webhook_configuration_service_and_deployment_agree() {
    let rendered = parse_all();
    let namespace = NAMESPACE;
    let configuration = webhook_configuration(&rendered);
    let webhooks = configuration.webhooks.as_ref().unwrap();
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];

    // What the API server is told.
    assert_eq!(webhook.admission_review_versions, ["v1"]);
    assert_eq!(webhook.side_effects, "None");
    assert!(matches!(
        webhook.failure_policy.as_deref(),
        Some("Fail" | "Ignore")
    ));
    let timeout = webhook.timeout_seconds.expect("timeoutSeconds is set");
    assert!((1..=30).contains(&timeout), "timeoutSeconds {timeout}");
    let rules = webhook.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(rule.api_versions.as_deref(), Some(&["v1".to_string()][..]));
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["secrets".to_string()][..])
    );
    let mut operations = rule.operations.clone().unwrap();
    operations.sort();
    assert_eq!(operations, ["CREATE", "UPDATE"]);
    let conditions = webhook.match_conditions.as_ref().expect("matchConditions");
    assert!(
        conditions
            .iter()
            .any(|c| c.expression.contains("object.type")
                && c.expression.contains("'kubernetes.io/regcredentials'")),
        "{conditions:?}"
    );

    // The Service it calls.
    let target = webhook
        .client_config
        .service
        .as_ref()
        .expect("a service reference");
    assert_eq!(target.namespace, namespace);
    assert_eq!(target.path.as_deref(), Some("/validate"));
    let service = rendered
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(target.name.as_str()))
        .unwrap_or_else(|| panic!("no Service {}", target.name));
    assert_eq!(service.metadata.namespace.as_deref(), Some(namespace));
    let service_spec = service.spec.as_ref().unwrap();
    let port = service_spec
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.port == target.port.unwrap_or(443))
        .expect("the Service has the port the webhook configuration names");

    // The Deployment behind it.
    let deployment = webhook_deployment(&rendered);
    assert_eq!(deployment.metadata.namespace.as_deref(), Some(namespace));
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selector = service_spec.selector.as_ref().unwrap();
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "Service selector {key}={value}"
        );
    }
    for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "Deployment selector {key}={value}"
        );
    }
    let container = webhook_container(deployment);
    let https_port = container_port(
        container,
        port.target_port
            .as_ref()
            .expect("the Service names a target port"),
    );
    let addr = flag(container, "addr").expect("--addr");
    assert!(
        addr.ends_with(&format!(":{https_port}")),
        "--addr={addr} vs port {https_port}"
    );

    // Probes: the paths the server answers, over plain HTTP, on --probe-addr's port,
    // which is not the reviews' port (issue 23, finding 6).
    let probe_addr = flag(container, "probe-addr").expect("--probe-addr");
    for (probe, path) in [
        (container.readiness_probe.as_ref(), "/readyz"),
        (container.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .expect("an httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref().unwrap_or("HTTP"), "HTTP");
        let port = container_port(container, &get.port);
        assert_ne!(port, https_port, "probes share the reviews' port");
        assert!(
            probe_addr.ends_with(&format!(":{port}")),
            "--probe-addr={probe_addr} vs port {port}"
        );
    }

    // Metrics: the flag, the container port and the Service port agree.
    let metrics_addr = flag(container, "metrics-addr").expect("--metrics-addr");
    let metrics_port = container_port(container, &IntOrString::String("metrics".into()));
    assert!(metrics_addr.ends_with(&format!(":{metrics_port}")));

    // The policy configuration is mounted where --policy-config points.
    let policy_config = flag(container, "policy-config").expect("--policy-config");
    let pod = spec.template.spec.as_ref().unwrap();
    let mounts = container.volume_mounts.as_ref().unwrap();
    let mount_of = |file: &str| {
        mounts
            .iter()
            .find(|m| file.starts_with(&format!("{}/", m.mount_path)))
            .unwrap_or_else(|| panic!("nothing is mounted at {file}"))
    };
    let policy_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount_of(policy_config).name)
        .unwrap();
    let config_map = policy_volume
        .config_map
        .as_ref()
        .expect("a ConfigMap volume");
    let rendered_map = rendered
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some(config_map.name.as_str()))
        .expect("the mounted ConfigMap is rendered");
    let file = Path::new(policy_config)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(rendered_map.data.as_ref().unwrap().contains_key(file));

    // The serving certificate: the Secret cert-manager writes is the one mounted where
    // --tls-cert and --tls-key point, for the Service's DNS name, and its CA is injected.
    let tls_cert = flag(container, "tls-cert").expect("--tls-cert");
    let tls_key = flag(container, "tls-key").expect("--tls-key");
    assert_eq!(mount_of(tls_cert).name, mount_of(tls_key).name);
    assert!(tls_cert.ends_with("/tls.crt") && tls_key.ends_with("/tls.key"));
    let tls_volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount_of(tls_cert).name)
        .unwrap();
    let tls_secret = tls_volume
        .secret
        .as_ref()
        .unwrap()
        .secret_name
        .clone()
        .unwrap();
    let inject = configuration
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cert-manager.io/inject-ca-from"))
        .expect("the cert-manager.io/inject-ca-from annotation");
    let certificate = rendered
        .cert_manager
        .get(&format!("Certificate/{inject}"))
        .unwrap_or_else(|| panic!("inject-ca-from names {inject}, which is not rendered"));
    assert_eq!(certificate["spec"]["secretName"], tls_secret.as_str());
    let dns_names = certificate["spec"]["dnsNames"].as_array().unwrap();
    assert!(dns_names.contains(&Value::from(format!("{}.{namespace}.svc", target.name))));
    let issuer = &certificate["spec"]["issuerRef"];
    assert_eq!(issuer["kind"], "Issuer");
    let issuer = rendered
        .cert_manager
        .get(&format!(
            "Issuer/{namespace}/{}",
            issuer["name"].as_str().unwrap()
        ))
        .expect("the serving certificate's Issuer is rendered");
    // A CA issuer whose CA certificate is itself rendered and self-signed.
    let ca_secret = issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("a CA Issuer");
    let ca = rendered
        .cert_manager
        .values()
        .find(|o| o["kind"] == "Certificate" && o["spec"]["secretName"] == ca_secret)
        .expect("the CA Certificate");
    assert_eq!(ca["spec"]["isCA"], true);
    let root_issuer = rendered
        .cert_manager
        .get(&format!(
            "Issuer/{namespace}/{}",
            ca["spec"]["issuerRef"]["name"].as_str().unwrap()
        ))
        .expect("the CA's Issuer");
    assert!(root_issuer["spec"]["selfSigned"].is_object());
}

/// webhook.certificate.certManager.issuerRef: the serving certificate from an issuer of
/// the operator's; the chart then makes no CA of its own.
#[test]
fn cert_manager_uses_the_given_issuer() {
    let rendered = parse(&render(&[
        "webhook.certificate.mode=certManager",
        "webhook.certificate.certManager.issuerRef.name=corp-ca",
        "webhook.certificate.certManager.issuerRef.kind=ClusterIssuer",
        "webhook.certificate.certManager.issuerRef.group=cert-manager.io",
    ]));
    assert_eq!(
        rendered.cert_manager.keys().collect::<Vec<_>>(),
        [&format!("Certificate/{NAMESPACE}/regcred-webhook")]
    );
    let certificate = rendered.cert_manager.values().next().unwrap();
    assert_eq!(
        certificate["spec"]["issuerRef"],
        json!({ "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" })
    );
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!([
            "regcred-webhook.regcred-system.svc",
            "regcred-webhook.regcred-system.svc.cluster.local"
        ])
    );
}

#[test]
fn the_webhook_pods_run_locked_down() {
    // The token is mounted only where the webhook manages its certificate (selfManaged,
    // the default; the_default_webhook_manages_its_own_certificate checks its RBAC).
    for (values, token) in [(CERT_MANAGER, false), (&[][..], true)] {
        let rendered = parse(&render(values));
        let deployment = webhook_deployment(&rendered);
        let pod = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod.automount_service_account_token,
            Some(token),
            "{values:?}"
        );
        let account = pod.service_account_name.as_deref().unwrap();
        assert!(
            rendered
                .service_accounts
                .iter()
                .any(|a| a.metadata.name.as_deref() == Some(account))
        );
        let container = webhook_container(deployment);
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let requests = container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        let budget = rendered
            .budgets
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some("regcred-webhook"))
            .expect("the webhook's PodDisruptionBudget");
        let budget_selector = budget.spec.as_ref().unwrap().selector.as_ref().unwrap();
        let labels = deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (key, value) in budget_selector.match_labels.as_ref().unwrap() {
            assert_eq!(labels.get(key), Some(value));
        }
    }
    // One replica: no budget of minAvailable 1, which would block every drain of its node.
    let single = parse(&render(&["webhook.replicas=1"]));
    assert!(single.budgets.is_empty());
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
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
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
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
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

/// Issue 14, finding 3: the webhook pods admit ingress to their HTTPS port only.
#[test]
fn the_network_policy_admits_only_the_webhook_and_probe_ports() {
    let rendered = parse_all();
    let deployment = webhook_deployment(&rendered);
    let pod_labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let policy = rendered
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("regcred-webhook"))
        .expect("the regcred-webhook NetworkPolicy");
    let spec = policy.spec.as_ref().unwrap();
    let selector = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone());
    let selector = selector.expect("the policy selects by labels");
    assert!(!selector.is_empty());
    for (key, value) in &selector {
        assert_eq!(pod_labels.get(key), Some(value), "{key}");
    }
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );
    let rules = spec.ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    let ports = rules[0].ports.as_ref().unwrap();
    let port_named = |name: &str| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.containers[0].ports.as_ref())
            .and_then(|p| p.iter().find(|p| p.name.as_deref() == Some(name)))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("the {name} container port"))
    };
    // The reviews' port and the probes' port; never metrics.
    let admitted: Vec<_> = ports.iter().map(|p| p.port.clone()).collect();
    assert_eq!(
        admitted,
        vec![
            Some(IntOrString::Int(port_named("https"))),
            Some(IntOrString::Int(port_named("probes")))
        ]
    );
    // webhook.networkPolicy.metricsFrom admits the metrics port from those peers only.
    let scraped = helm_template(&[
        "--set-json".to_owned(),
        r#"webhook.networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#.to_owned(),
    ])
    .unwrap();
    let scraped = parse(&scraped);
    let rules = scraped.network_policies[0]
        .spec
        .as_ref()
        .and_then(|s| s.ingress.clone())
        .unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[1].ports.as_ref().unwrap()[0].port,
        Some(IntOrString::Int(port_named("metrics")))
    );
    let from = rules[1].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].namespace_selector.is_some() && from[0].pod_selector.is_none());
    // webhook.networkPolicy.enabled=false leaves it out.
    let without = parse(&render(&["webhook.networkPolicy.enabled=false"]));
    assert!(without.network_policies.is_empty());
}

/// deploy/cri-proxy's systemd unit, checked by Debian's systemd-analyze without a running
/// systemd: `verify` has nothing to say about it (a misspelt or unknown key is only a
/// warning there, so any output fails the test; `ExecStart` is pointed at the binary this
/// suite built, which verify wants to exist), and `security --offline=true` rates its
/// exposure "OK" (at most 2.0 of 10; it was 8.9 before the hardening). What it does not
/// show: the unit running under systemd, which these machines do not boot.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let binary = regcred_tests::harness::regcred_binary();
    unit_verifies_and_is_hardened(
        "deploy/cri-proxy/regcred-cri-proxy.service",
        "/usr/local/bin/regcred cri-proxy",
        "/usr/local/bin/regcred",
        &binary,
    );
}

/// The same for regcred-nri's unit (deploy/nri). `verify` checks the unit and that its
/// program is an executable file; cargo does not build the Go plugin, so the regcred
/// binary stands in for that check (the kit runs the real plugin).
#[test]
fn the_nri_plugin_unit_verifies_and_is_hardened() {
    let binary = regcred_tests::harness::regcred_binary();
    unit_verifies_and_is_hardened(
        "deploy/nri/regcred-nri.service",
        "/usr/local/bin/regcred-nri --nri-socket /var/run/nri/nri.sock",
        "/usr/local/bin/regcred-nri",
        &binary,
    );
}

fn unit_verifies_and_is_hardened(
    path: &str,
    exec_start: &str,
    program: &str,
    binary: &std::path::Path,
) {
    let unit = std::fs::read_to_string(root().join(path)).unwrap();
    unit_text_verifies_and_is_hardened(path, &unit, exec_start, program, binary);
}

fn unit_text_verifies_and_is_hardened(
    path: &str,
    unit: &str,
    exec_start: &str,
    program: &str,
    binary: &std::path::Path,
) {
    let analyze =
        regcred_tests::harness::require_program("systemd-analyze", "systemd (systemd-analyze)");
    assert!(
        unit.replace("\\\n    ", "")
            .contains(&format!("ExecStart={exec_start}")),
        "{path}: the unit's ExecStart moved: update this test"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir
        .path()
        .join(std::path::Path::new(path).file_name().unwrap());
    std::fs::write(&copy, unit.replace(program, &binary.display().to_string())).unwrap();

    let verify = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "{path}: systemd-analyze verify: {}\n{said}",
        verify.status
    );

    let security = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("{path}: systemd-analyze security: exposure {exposure}");
    assert!(
        exposure <= 2.0,
        "{path}: exposure {exposure} (want at most 2.0):\n{report}"
    );
}

/// The units as `regcred node install` writes them (their programs under
/// /opt/regcred/bin): what the installer puts on a node verifies and keeps its hardening.
#[test]
fn the_units_the_node_installer_writes_verify_and_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("etc/kubernetes/kubelet.conf.d")).unwrap();
    let binary = regcred_tests::harness::regcred_binary();
    let output = Command::new(&binary)
        .args([
            "node",
            "install",
            "--systemctl",
            "true",
            "--settle-seconds",
            "0",
        ])
        .args(["--proc-dir", "none", "--host-root"])
        .arg(&host)
        .arg("--nri-plugin")
        .arg(&binary)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (unit, exec_start, program) in [
        (
            "regcred-cri-proxy.service",
            "/opt/regcred/bin/regcred cri-proxy",
            "/opt/regcred/bin/regcred",
        ),
        (
            "regcred-nri.service",
            "/opt/regcred/bin/regcred-nri --nri-socket /var/run/nri/nri.sock",
            "/opt/regcred/bin/regcred-nri",
        ),
    ] {
        let text = std::fs::read_to_string(host.join("etc/systemd/system").join(unit)).unwrap();
        unit_text_verifies_and_is_hardened(unit, &text, exec_start, program, &binary);
    }
}

/// `scripts/package-chart`: `helm package` made reproducible. Two runs, with the chart's
/// files touched in between (new modification times, as a fresh checkout has), give the
/// same bytes; the archive lints, and renders the objects the chart directory renders.
#[test]
fn the_packaged_chart_is_reproducible_and_renders_as_the_directory() {
    let package = |out: &Path| {
        let output = Command::new(root().join("scripts/package-chart"))
            .arg("--out")
            .arg(out)
            .arg("--helm")
            .arg(helm())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/package-chart: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let mut lines = stdout.lines();
        let path = PathBuf::from(lines.next().unwrap());
        let digest = lines.next().unwrap().to_owned();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{stdout}"
        );
        (path, digest)
    };
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (archive, digest) = package(first.path());
    let values = root().join("deploy/chart/values.yaml");
    let file = std::fs::File::options().write(true).open(&values).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(7))
        .unwrap();
    drop(file);
    let (again, digest_again) = package(second.path());
    assert_eq!(digest, digest_again, "two packages of one commit differ");
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );
    assert_eq!(
        archive.file_name().unwrap().to_str().unwrap(),
        "regcred-0.1.0.tgz"
    );
    let from_archive = helm_template_of(&archive, &[]).unwrap();
    assert_eq!(from_archive, helm_template(&[]).unwrap());
}

/// The alerts and the dashboard. The PrometheusRule's spec is
/// `files/prometheus-rules.yaml` as it is, which Debian's promtool checks (`check rules`)
/// and tests (`test rules tests/prometheus/rules-test.yaml`: every alert fires on the
/// series that should fire it, with its message, and not on healthy ones); the dashboard
/// ConfigMap holds `files/grafana-dashboard.json`; every regcred metric the rules and the
/// dashboard query is one METRICS.md documents (the unit tests keep METRICS.md complete
/// the other way).
#[test]
fn the_alerts_and_the_dashboard_query_documented_metrics() {
    let files = root().join("deploy/chart/files");
    let rules_text = std::fs::read_to_string(files.join("prometheus-rules.yaml")).unwrap();
    let dashboard_text = std::fs::read_to_string(files.join("grafana-dashboard.json")).unwrap();
    let objects = render(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
    ]);
    let rule = find(&objects, "PrometheusRule", "regcred").expect("the PrometheusRule");
    let rules: Value = serde_yaml::from_str(&rules_text).unwrap();
    assert_eq!(rule["spec"], rules);
    let dashboard =
        find(&objects, "ConfigMap", "regcred-grafana-dashboard").expect("the dashboard");
    assert_eq!(
        dashboard["data"]["regcred.json"].as_str().unwrap().trim(),
        dashboard_text.trim()
    );
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert!(
        find(&render(&[]), "PrometheusRule", "regcred").is_none(),
        "off by default"
    );

    let mut exprs: Vec<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exprs.len(), 9);
    let board: Value = serde_json::from_str(&dashboard_text).unwrap();
    for panel in board["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let metrics_doc = std::fs::read_to_string(root().join("METRICS.md")).unwrap();
    let name = metric_families(&exprs);
    assert!(name.len() >= 8, "{name:?}");
    for metric in &name {
        assert!(
            metrics_doc.contains(&format!("| `{metric}` |")),
            "{metric} is queried but not in METRICS.md"
        );
    }

    let promtool = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        })
        .expect("promtool is not installed: run scripts/setup (Debian's prometheus)");
    for args in [
        vec![
            "check".to_owned(),
            "rules".to_owned(),
            files.join("prometheus-rules.yaml").display().to_string(),
        ],
        vec![
            "test".to_owned(),
            "rules".to_owned(),
            root()
                .join("tests/prometheus/rules-test.yaml")
                .display()
                .to_string(),
        ],
    ] {
        let output = Command::new(&promtool).args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The regcred metric names in PromQL expressions (histogram series by their family).
fn metric_families(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("regcred_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(family.to_owned());
            rest = &tail[end..];
        }
    }
    names
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
