//! The Helm chart's values (`deploy/chart/values.yaml`) as types: their JSON schema is
//! the chart's `values.schema.json` (`regcred schema --chart DIR`), so that `helm
//! install` refuses a wrong value before anything reaches a node; tests keep the file
//! and the chart's defaults in step with these types.

use std::collections::BTreeMap;

use regcred_types::PolicyConfig;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

/// The schema file's name in the chart directory.
pub(crate) const SCHEMA_FILE: &str = "values.schema.json";

/// The chart's values.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "regcred Helm chart values")]
pub(crate) struct Values {
    /// The image every component runs.
    pub image: Image,
    /// Secrets (in the release namespace) to pull the image with.
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The validating admission webhook.
    pub webhook: WebhookValues,
    /// The node side.
    pub node: NodeValues,
    /// Prometheus.
    pub metrics: MetricsValues,
}

/// The image.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Image {
    /// The repository, such as `registry.example.com/regcred`.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// The tag; empty: the chart's appVersion.
    #[serde(default)]
    #[schemars(regex(pattern = r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"))]
    pub tag: String,
    /// A digest (`sha256:` and 64 hex digits); when set the image is pulled by it.
    #[serde(default)]
    #[schemars(regex(pattern = r"^(sha256:[a-f0-9]{64})?$"))]
    pub digest: String,
    /// kubelet's pull policy.
    pub pull_policy: PullPolicy,
}

/// kubelet's image pull policy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs, reason = "Kubernetes' own names")]
pub(crate) enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A Secret's name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LocalObjectReference {
    /// The name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// The admission webhook's values.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct WebhookValues {
    /// Install the webhook.
    pub enabled: bool,
    /// Pods of the Deployment.
    #[schemars(range(min = 1, max = 10))]
    pub replicas: u32,
    /// What the API server does when the webhook does not answer.
    pub failure_policy: FailurePolicy,
    /// Seconds the API server waits for an answer.
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: u32,
    /// Also check `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` Secrets.
    pub check_docker_secrets: bool,
    /// The log level.
    pub log_level: LogLevel,
    /// The site policy (`schemas/policy-config.schema.json`).
    pub policy: PolicyConfig,
    /// The serving certificate.
    pub certificate: CertificateValues,
    /// Extra arguments of `regcred webhook`.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The container's resources.
    pub resources: Resources,
    /// Where the pods may run.
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// The pods' priority class (empty: none).
    pub priority_class_name: String,
    /// Annotations on the pods.
    pub pod_annotations: BTreeMap<String, String>,
    /// The NetworkPolicy admitting only the webhook and probe ports.
    pub network_policy: NetworkPolicyValues,
}

/// `failurePolicy` of the webhook configuration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs, reason = "Kubernetes' own names")]
pub(crate) enum FailurePolicy {
    Fail,
    Ignore,
}

/// A log level.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs, reason = "tracing's names")]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The webhook's serving certificate.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CertificateValues {
    /// Who makes it.
    pub mode: CertificateMode,
    /// The Secret holding it.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub secret_name: String,
    /// Mode `secret`: the PEM CA bundle that signed the Secret's `tls.crt`.
    pub ca_bundle: String,
    /// Mode `certManager`.
    pub cert_manager: CertManagerValues,
}

/// Who makes the webhook's certificate.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum CertificateMode {
    /// The webhook: CA and pair in the Secret, renewed, caBundle kept current.
    SelfManaged,
    /// cert-manager issues the Secret and injects the caBundle.
    CertManager,
    /// The operator provides the Secret and `caBundle`.
    Secret,
}

/// cert-manager's issuer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CertManagerValues {
    /// The issuer; empty: a self-signed CA of the chart's own.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer reference.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssuerRef {
    /// The issuer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Issuer` or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<IssuerKind>,
    /// The issuer's API group (default `cert-manager.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// cert-manager issuer kinds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs, reason = "cert-manager's own names")]
pub(crate) enum IssuerKind {
    Issuer,
    ClusterIssuer,
}

/// The webhook's NetworkPolicy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NetworkPolicyValues {
    /// Install it.
    pub enabled: bool,
    /// Who may scrape the metrics port (9090): NetworkPolicy peers, such as
    /// `{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}`.
    /// Empty: nobody.
    #[serde(default)]
    pub metrics_from: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// A container's resources: quantities by resource name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resources {
    /// Requests, such as `cpu: 100m`.
    #[serde(default)]
    pub requests: BTreeMap<String, Quantity>,
    /// Limits, such as `memory: 256Mi`.
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
}

/// A Kubernetes quantity (`100m`, `64Mi`, `1`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum Quantity {
    /// As text.
    Text(
        #[schemars(regex(
            pattern = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
        ))]
        String,
    ),
    /// As a number.
    Number(f64),
}

/// A pod toleration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Toleration {
    /// The taint's key (empty with `Exists`: every taint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// The value, with `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The effect tolerated (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// With `NoExecute`: how long the pod stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// A toleration's operator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs, reason = "Kubernetes' own names")]
pub(crate) enum TolerationOperator {
    Exists,
    Equal,
}

/// A taint's effect.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs, reason = "Kubernetes' own names")]
pub(crate) enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// The node side's values.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NodeValues {
    /// Which node mode the cluster objects are for.
    pub mode: NodeMode,
    /// Mode `nri`: namespaces (besides the release's) whose pods may carry the toleration
    /// annotation.
    pub toleration_namespaces: Vec<String>,
    /// How the node agent reads the API.
    pub api_credentials: ApiCredentials,
    /// Mode `credential-provider`.
    pub credential_provider: CredentialProviderValues,
    /// The node installer's DaemonSet and its clean-up hook (`regcred node install`).
    pub installer: InstallerValues,
    /// The DaemonSet for trying the runtime proxy (mode `runtime-proxy`).
    pub daemon_set: DaemonSetValues,
}

/// The node installer (`regcred node install` from a privileged DaemonSet).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InstallerValues {
    /// Install the node side on every selected node.
    pub enabled: bool,
    /// The nodes it runs on.
    pub node_selector: BTreeMap<String, String>,
    /// Taints its pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// Its pods' priority class.
    pub priority_class_name: String,
    /// kubelet's `--config-dir` on the nodes (an absolute path).
    #[schemars(regex(pattern = r"^/"))]
    pub kubelet_config_dir: String,
    /// The directory containerd imports (an absolute path).
    #[schemars(regex(pattern = r"^/"))]
    pub containerd_config_dir: String,
    /// How long `helm uninstall` waits for every node's clean-up.
    #[schemars(range(min = 10))]
    pub cleanup_timeout_seconds: u32,
    /// The container's resources.
    pub resources: Resources,
}

/// The node modes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum NodeMode {
    /// The NRI plugin and the node agent (containerd 2.2 and later).
    Nri,
    /// The legacy CRI image-service proxy.
    RuntimeProxy,
    /// kubelet's credential provider plugin.
    CredentialProvider,
    /// Nothing on the node side.
    None,
}

/// How the node agent reads the API.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum ApiCredentials {
    /// kubelet's kubeconfig (the Node authorizer).
    Node,
    /// Its own ServiceAccount.
    ServiceAccount,
}

/// The credential provider's values.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CredentialProviderValues {
    /// The service-account token audience kubelet requests for the plugin.
    #[schemars(length(min = 1))]
    pub audience: String,
}

/// The runtime proxy's DaemonSet.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DaemonSetValues {
    /// Install it.
    pub enabled: bool,
    /// The nodes it runs on.
    pub node_selector: BTreeMap<String, String>,
    /// Taints its pods tolerate.
    pub tolerations: Vec<Toleration>,
    /// Its pods' priority class.
    pub priority_class_name: String,
    /// The container's resources.
    pub resources: Resources,
}

/// Prometheus values.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricsValues {
    /// The prometheus-operator ServiceMonitor.
    pub service_monitor: ServiceMonitorValues,
    /// The alerts as a prometheus-operator PrometheusRule.
    pub prometheus_rule: LabelledToggle,
    /// The Grafana dashboard in a ConfigMap.
    pub grafana_dashboard: LabelledToggle,
}

/// An object the chart may add, with extra labels.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LabelledToggle {
    /// Install it.
    pub enabled: bool,
    /// Extra labels (the ones your Prometheus or Grafana selects).
    pub labels: BTreeMap<String, String>,
}

/// The ServiceMonitor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ServiceMonitorValues {
    /// Install it (needs the prometheus-operator CRDs).
    pub enabled: bool,
    /// The scrape interval, such as `30s`.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
    /// Extra labels (the ones your Prometheus selects).
    pub labels: BTreeMap<String, String>,
}

/// The chart's `values.schema.json`, draft 2020-12.
pub(crate) fn values_schema() -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Values>();
    schema.insert(
        "$id".into(),
        format!("{}chart-values.schema.json", regcred_types::schema::ID_BASE).into(),
    );
    schema
}

/// The schema file's text: pretty JSON with a final newline.
pub(crate) fn values_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&values_schema())
        .unwrap_or_else(|_| unreachable!("a schema is plain JSON"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::path::PathBuf;

    fn chart() -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/chart")
    }

    /// The chart's defaults are values these types accept.
    #[test]
    fn the_charts_defaults_parse() {
        let text = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
        let values: Values = serde_yaml::from_str(&text).unwrap();
        assert!(values.webhook.enabled);
        assert!(matches!(
            values.webhook.certificate.mode,
            CertificateMode::SelfManaged
        ));
        assert!(matches!(values.node.mode, NodeMode::Nri));
    }

    /// values.schema.json is what these types generate (`regcred schema --chart
    /// deploy/chart` writes it).
    #[test]
    fn the_committed_schema_is_current() {
        let committed = std::fs::read_to_string(chart().join(SCHEMA_FILE)).unwrap();
        assert!(
            committed == values_schema_text(),
            "deploy/chart/values.schema.json is stale: run `cargo run -p regcred -- schema --chart deploy/chart`"
        );
    }
}
