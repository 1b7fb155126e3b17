//! Prometheus metrics of the webhook. Labels have a fixed, small set of values
//! (operation, outcome, field error type): no names, no field paths, no values.

use std::time::Duration;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Seconds: from a tenth of a millisecond (a warm review) to a second (a stuck one).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The webhook's counters and histograms, in their own registry.
#[derive(Debug, Clone)]
pub(crate) struct WebhookMetrics {
    registry: Registry,
    reviews: IntCounterVec,
    latency: HistogramVec,
    violations: IntCounterVec,
    tls_reloads: IntCounterVec,
    certificate_expiry: IntGaugeVec,
}

impl WebhookMetrics {
    pub(crate) fn new() -> Self {
        // A constant, valid prefix: `new_custom` refuses only empty or invalid ones.
        let registry = Registry::new_custom(Some("regcred_webhook".into()), None)
            .unwrap_or_else(|e| unreachable!("static metric prefix: {e}"));
        let reviews = IntCounterVec::new(
            Opts::new(
                "reviews_total",
                "Admission reviews answered, by operation and outcome \
                 (allowed, denied, skipped, bad_request, too_large, error).",
            ),
            &["operation", "outcome"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "review_duration_seconds",
                "Time from the request's arrival to the answer, by outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        let violations = IntCounterVec::new(
            Opts::new(
                "violations_total",
                "Rule violations in denied Secrets, by Kubernetes field error type.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "tls_reloads_total",
                "Reloads of the TLS certificate and key after the files changed, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "certificate_expiry_timestamp_seconds",
                "When the certificate in service ends (Unix seconds), by certificate \
                 (serving; ca where the webhook manages its own).",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(certificate_expiry.clone()))
            .expect("unique metric");
        for collector in [&reviews, &violations, &tls_reloads] {
            registry
                .register(Box::new(collector.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(latency.clone()))
            .expect("unique metric");
        Self {
            registry,
            reviews,
            latency,
            violations,
            tls_reloads,
            certificate_expiry,
        }
    }

    /// The end of the `certificate` in service (`serving` or `ca`), in Unix seconds.
    pub(crate) fn certificate_expiry(&self, certificate: &str, not_after: i64) {
        self.certificate_expiry
            .with_label_values(&[certificate])
            .set(not_after);
    }

    pub(crate) fn review(&self, operation: &str, outcome: &str, elapsed: Duration) {
        self.reviews.with_label_values(&[operation, outcome]).inc();
        self.latency
            .with_label_values(&[outcome])
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn violation(&self, reason: &str) {
        self.violations.with_label_values(&[reason]).inc();
    }

    pub(crate) fn tls_reload(&self, ok: bool) {
        self.tls_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family the webhook serves is in METRICS.md, with its labels and outcomes.
    #[test]
    fn every_metric_is_documented() {
        let metrics = WebhookMetrics::new();
        metrics.review("CREATE", "allowed", Duration::from_micros(1));
        metrics.violation("FieldValueRequired");
        metrics.tls_reload(true);
        metrics.certificate_expiry("serving", 1);
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../METRICS.md"),
        )
        .unwrap();
        let text = metrics.render();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(names.len(), 5, "{text}");
        for name in names {
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "{name} is not in METRICS.md"
            );
        }
        for outcome in [
            "allowed",
            "denied",
            "skipped",
            "bad_request",
            "too_large",
            "busy",
            "timeout",
            "error",
        ] {
            assert!(doc.contains(&format!("`{outcome}`")), "{outcome}");
        }
    }
}
