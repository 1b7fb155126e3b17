//! The proxy's Prometheus metrics (served by [`regcred_serve::serve_metrics`]).
//!
//! Labels carry outcomes and method names only: never a pod, image or Secret name (their
//! number is unbounded) and never a value.

use std::time::Duration;

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Latency buckets from 25 µs (a forwarded ImageStatus) to a minute (a large pull).
const BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How a `PullImage` through the proxy ended: the `outcome` label of
/// `regcred_cri_proxy_pulls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullOutcome {
    /// Pulled with credentials from a pull Secret.
    Pulled,
    /// Every candidate was tried and refused.
    AllCandidatesFailed,
    /// The request already had `auth` (kubelet's dockerconfigjson): forwarded untouched.
    ForwardedWithAuth,
    /// No pod metadata, pod unknown, or no candidate: forwarded as it came.
    ForwardedWithoutCredentials,
    /// The pull Secret source failed.
    SecretSourceError,
    /// The policy module failed.
    PolicyError,
    /// The runtime could not be reached.
    RuntimeUnavailable,
}

impl PullOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pulled => "pulled",
            Self::AllCandidatesFailed => "all_candidates_failed",
            Self::ForwardedWithAuth => "forwarded_with_auth",
            Self::ForwardedWithoutCredentials => "forwarded_without_credentials",
            Self::SecretSourceError => "secret_source_error",
            Self::PolicyError => "policy_error",
            Self::RuntimeUnavailable => "runtime_unavailable",
        }
    }
}

/// How a `CreateContainer` decision on an image already on the node went: the
/// `decision` label of `regcred_cri_proxy_image_use_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageUse {
    /// Verification is off (`NeverVerify`).
    NotVerified,
    /// A pull without credentials got the image: public.
    Public,
    /// No records, and on the node when the agent first listed its images.
    Preloaded,
    /// Pulled without a regcred pull record, and in the allowlist.
    Allowlisted,
    /// This pod was allowed the image before, within the record lifetime.
    PodOnRecord,
    /// The pod's credentials are on record for the image.
    Remembered,
    /// The registry accepted the pod's credentials just now.
    Verified,
    /// A pull without credentials succeeded just now.
    Anonymous,
    /// Pulled with credentials kubelet sent itself: left to kubelet's own checks.
    KubeletChecked,
    /// Refused: the container is not created.
    Refused,
    /// The request names no pod or does not parse: forwarded without a decision.
    Undecided,
    /// No decision could be made (the pod's Secrets or the policy failed, or the runtime
    /// was unreachable for a verification pull): the error goes back, the container waits.
    Failed,
}

impl ImageUse {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotVerified => "not_verified",
            Self::Public => "public",
            Self::Preloaded => "preloaded",
            Self::Allowlisted => "allowlisted",
            Self::PodOnRecord => "pod_on_record",
            Self::Remembered => "remembered",
            Self::Verified => "verified",
            Self::Anonymous => "anonymous",
            Self::KubeletChecked => "kubelet_checked",
            Self::Refused => "refused",
            Self::Undecided => "undecided",
            Self::Failed => "failed",
        }
    }
}

/// The proxy's metrics, in their own registry (several proxies can live in one process).
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    registry: Registry,
    pulls: IntCounterVec,
    image_use: IntCounterVec,
    injected: IntCounter,
    resolution: Histogram,
    runtime_call: HistogramVec,
    decision: Histogram,
    records_write_failures: IntCounter,
    records_unwritten: IntGauge,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let pulls = IntCounterVec::new(
            Opts::new(
                "regcred_cri_proxy_pulls_total",
                "PullImage requests through the proxy, by outcome.",
            ),
            &["outcome"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let image_use = IntCounterVec::new(
            Opts::new(
                "regcred_cri_proxy_image_use_total",
                "CreateContainer decisions on whether the pod may use the image, by decision.",
            ),
            &["decision"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let injected = IntCounter::new(
            "regcred_cri_proxy_credentials_injected_total",
            "PullImage attempts sent to the runtime with credentials from a pull Secret.",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let resolution = Histogram::with_opts(
            HistogramOpts::new(
                "regcred_cri_proxy_resolution_duration_seconds",
                "Finding a pod's pull Secrets and resolving candidates with the policy.",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let runtime_call = HistogramVec::new(
            HistogramOpts::new(
                "regcred_cri_proxy_runtime_call_duration_seconds",
                "Calls to the runtime until its response headers, by CRI method.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let decision = Histogram::with_opts(
            HistogramOpts::new(
                "regcred_cri_proxy_nri_decision_duration_seconds",
                "NRI mode: one decision for regcred-nri, from its question to the answer \
                 (refusals at the budget included).",
            )
            .buckets(BUCKETS.to_vec()),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let records_write_failures = IntCounter::new(
            "regcred_cri_proxy_records_write_failures_total",
            "Writes of the pulled-image records that failed (each keeps private images \
             refused until a write succeeds).",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let records_unwritten = IntGauge::new(
            "regcred_cri_proxy_records_unwritten",
            "1 while the last write of the pulled-image records failed: private images are \
             refused until one succeeds.",
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        for collector in [
            Box::new(pulls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(image_use.clone()),
            Box::new(injected.clone()),
            Box::new(resolution.clone()),
            Box::new(runtime_call.clone()),
            Box::new(decision.clone()),
            Box::new(records_write_failures.clone()),
            Box::new(records_unwritten.clone()),
        ] {
            registry
                .register(collector)
                .unwrap_or_else(|e| unreachable!("distinct metric names: {e}"));
        }
        Self {
            registry,
            pulls,
            image_use,
            injected,
            resolution,
            runtime_call,
            decision,
            records_write_failures,
            records_unwritten,
        }
    }

    pub(crate) fn records_write_failed(&self) {
        self.records_write_failures.inc();
    }

    pub(crate) fn records_unwritten(&self, unwritten: bool) {
        self.records_unwritten.set(i64::from(unwritten));
    }

    pub(crate) fn decision(&self, took: Duration) {
        self.decision.observe(took.as_secs_f64());
    }

    pub(crate) fn pull(&self, outcome: PullOutcome) {
        self.pulls.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(crate) fn image_use(&self, decision: ImageUse) {
        self.image_use.with_label_values(&[decision.as_str()]).inc();
    }

    /// How many CreateContainer decisions were `decision` so far.
    pub fn image_uses(&self, decision: ImageUse) -> u64 {
        self.image_use.with_label_values(&[decision.as_str()]).get()
    }

    pub(crate) fn injected(&self) {
        self.injected.inc();
    }

    pub(crate) fn resolution(&self, took: Duration) {
        self.resolution.observe(took.as_secs_f64());
    }

    pub(crate) fn runtime_call(&self, path: &str, took: Duration) {
        self.runtime_call
            .with_label_values(&[method_label(path)])
            .observe(took.as_secs_f64());
    }

    /// How many pulls ended with `outcome` so far.
    pub fn pulls(&self, outcome: PullOutcome) -> u64 {
        self.pulls.with_label_values(&[outcome.as_str()]).get()
    }

    /// Serves `collector` with these metrics (a source's own, such as
    /// [`crate::KubeSource::stale_answers`]); one already there is logged and
    /// left out.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(err) = self.registry.register(collector) {
            tracing::warn!(error = %err, "a metric could not be registered");
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only for invalid metric families, which these are not.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The method name of a known ImageService path or of CreateContainer,
/// `runtime_other` for the RuntimeService's other calls, `other` for anything else
/// (bounded label values).
fn method_label(path: &str) -> &'static str {
    use regcred_cri_api::methods::*;
    match path {
        LIST_IMAGES => "ListImages",
        IMAGE_STATUS => "ImageStatus",
        PULL_IMAGE => "PullImage",
        REMOVE_IMAGE => "RemoveImage",
        IMAGE_FS_INFO => "ImageFsInfo",
        CREATE_CONTAINER => "CreateContainer",
        _ if path.starts_with("/runtime.v1.RuntimeService/") => "runtime_other",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_and_labelled_by_outcome_and_method() {
        let metrics = ProxyMetrics::new();
        metrics.pull(PullOutcome::Pulled);
        metrics.pull(PullOutcome::Pulled);
        metrics.injected();
        metrics.resolution(Duration::from_micros(80));
        metrics.runtime_call(
            regcred_cri_api::methods::IMAGE_STATUS,
            Duration::from_micros(60),
        );
        metrics.runtime_call("/runtime.v1.ImageService/Future", Duration::from_micros(60));
        metrics.runtime_call(
            "/runtime.v1.RuntimeService/Version",
            Duration::from_micros(60),
        );
        metrics.image_use(ImageUse::Refused);
        assert_eq!(metrics.pulls(PullOutcome::Pulled), 2);
        let text = metrics.encode();
        for expected in [
            "regcred_cri_proxy_pulls_total{outcome=\"pulled\"} 2",
            "regcred_cri_proxy_credentials_injected_total 1",
            "regcred_cri_proxy_resolution_duration_seconds_count 1",
            "regcred_cri_proxy_runtime_call_duration_seconds_count{method=\"ImageStatus\"} 1",
            "regcred_cri_proxy_runtime_call_duration_seconds_count{method=\"other\"} 1",
            "regcred_cri_proxy_runtime_call_duration_seconds_count{method=\"runtime_other\"} 1",
            "regcred_cri_proxy_image_use_total{decision=\"refused\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
    }

    /// Every family the agent serves is in METRICS.md, with each label it has.
    #[test]
    fn every_metric_is_documented() {
        let metrics = ProxyMetrics::new();
        metrics.pull(PullOutcome::Pulled);
        metrics.image_use(ImageUse::Refused);
        metrics.runtime_call(
            regcred_cri_api::methods::PULL_IMAGE,
            Duration::from_micros(1),
        );
        metrics.decision(Duration::from_micros(1));
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../METRICS.md"),
        )
        .unwrap();
        let text = metrics.encode();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(names.len(), 8, "{text}");
        for name in names {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "{name} is not in METRICS.md"
            );
        }
        for label in ["outcome", "decision", "method"] {
            assert!(doc.contains(&format!("`{label}`:")), "label {label}");
        }
        for decision in [
            ImageUse::NotVerified,
            ImageUse::Public,
            ImageUse::Preloaded,
            ImageUse::Allowlisted,
            ImageUse::PodOnRecord,
            ImageUse::Remembered,
            ImageUse::Verified,
            ImageUse::Anonymous,
            ImageUse::KubeletChecked,
            ImageUse::Refused,
            ImageUse::Undecided,
            ImageUse::Failed,
        ] {
            assert!(
                doc.contains(&format!("`{}`", decision.as_str())),
                "{decision:?}"
            );
        }
    }
}
