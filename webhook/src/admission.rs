//! The admission decision itself, without a server: an `admission.k8s.io/v1`
//! AdmissionReview body in, an AdmissionReview answer out.

use std::collections::BTreeMap;

use kube_core::DynamicObject;
use kube_core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube_core::response::{StatusCause, StatusDetails, StatusSummary};
use regcred_types::{
    DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE, PolicyConfig, REGCREDENTIALS_TYPE, SecretManifest,
    SecretMetadata, ValidationReport,
};
use serde::Deserialize;

use regcred_host::{EvalError, PolicyRunner};

/// The longest piece of request text (an apiVersion, say) an error message quotes.
const MAX_QUOTED: usize = 64;

/// Checks the Secrets in admission reviews with the policy: the part of the webhook that
/// decides, usable without its server.
///
/// For a Secret of type `kubernetes.io/regcredentials` (and, when asked, Docker config
/// Secrets) on CREATE and UPDATE, it runs the policy's validation and denies the request
/// when a rule is broken, the way the API server reports its own validation errors:
/// code 422, reason `Invalid`, one `status.details.causes` entry per violation. Warnings
/// become the response's `warnings`. Everything else is allowed untouched.
///
/// ```
/// use regcred_host::PolicyRunner;
/// use regcred_webhook::{Outcome, SecretAdmission};
///
/// let admission = SecretAdmission::new(PolicyRunner::Native);
/// let body = br#"{
///   "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
///   "request": {
///     "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
///     "kind": {"group": "", "version": "v1", "kind": "Secret"},
///     "resource": {"group": "", "version": "v1", "resource": "secrets"},
///     "name": "quay", "namespace": "apps", "operation": "CREATE",
///     "userInfo": {"username": "admin"},
///     "object": {
///       "apiVersion": "v1", "kind": "Secret",
///       "metadata": {"name": "quay", "namespace": "apps"},
///       "type": "kubernetes.io/regcredentials",
///       "stringData": {"serverAddress": "quay.io", "username": "a:b", "password": "pw"}
///     },
///     "oldObject": null, "dryRun": false
///   }
/// }"#;
/// let decision = admission.review(body)?;
/// assert_eq!(decision.outcome(), Outcome::Denied);
/// let answer: serde_json::Value = serde_json::from_slice(&decision.to_json())?;
/// assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
/// assert_eq!(answer["response"]["status"]["details"]["causes"][0]["field"], "stringData[username]");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SecretAdmission {
    runner: PolicyRunner,
    config: PolicyConfig,
    check_docker_secrets: bool,
}

/// What the webhook made of one review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A checked Secret that passed the rules.
    Allowed,
    /// A checked Secret that broke a rule.
    Denied,
    /// Not a Secret the webhook checks (another kind or type, another operation, or an
    /// object being deleted): allowed untouched.
    Skipped,
}

impl Outcome {
    /// The metric label: `allowed`, `denied`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Skipped => "skipped",
        }
    }
}

/// The answer to one review, with what logs and metrics may say about it (field paths
/// and error types, never values).
#[derive(Debug, Clone)]
pub struct Decision {
    review: AdmissionReview<DynamicObject>,
    outcome: Outcome,
    operation: &'static str,
    secret: Option<String>,
    causes: Vec<String>,
}

impl Decision {
    /// Allowed, denied or skipped.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The request's operation: `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The request's uid, which the answer carries too.
    pub fn uid(&self) -> &str {
        self.review.response.as_ref().map_or("", |r| r.uid.as_str())
    }

    /// `NAMESPACE/NAME` of the checked Secret; `None` when nothing was checked.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// `FIELD TYPE` of every violation (no messages, no values).
    pub fn causes(&self) -> &[String] {
        &self.causes
    }

    /// The answer: an `admission.k8s.io/v1` AdmissionReview with only `response` set.
    pub fn review(&self) -> &AdmissionReview<DynamicObject> {
        &self.review
    }

    /// The answer as the JSON body the API server reads.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and maps: serializing it cannot fail.
        serde_json::to_vec(&self.review).unwrap_or_default()
    }
}

/// Why a review could not be answered with a verdict. The server answers these with an
/// HTTP error and an AdmissionReview whose status says what is wrong (and, when the body
/// named one, the request's uid).
///
/// Messages never quote the request's string values: JSON errors keep their position
/// and category only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// The body is not JSON, or not shaped like an AdmissionReview.
    #[error("the request body is not an admission.k8s.io/v1 AdmissionReview: {reason}")]
    NotAReview {
        /// The request's uid, when the body has one.
        uid: Option<String>,
        /// What is wrong, without values.
        reason: String,
    },
    /// An AdmissionReview of another version.
    #[error(
        "unsupported AdmissionReview apiVersion \"{api_version}\": this webhook answers \
         admission.k8s.io/v1 only (set admissionReviewVersions: [v1])"
    )]
    WrongApiVersion {
        /// The request's uid.
        uid: Option<String>,
        /// The version the body names (shortened).
        api_version: String,
    },
    /// An AdmissionReview without `request`.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// A CREATE or UPDATE request without `object`.
    #[error("the {operation} request has no object to check")]
    MissingObject {
        /// The request's uid.
        uid: String,
        /// `CREATE` or `UPDATE`.
        operation: &'static str,
    },
    /// The policy could not judge the Secret (a limit, a misbehaving module, a refused
    /// configuration).
    #[error("the policy could not evaluate the Secret: {source}")]
    Policy {
        /// The request's uid.
        uid: String,
        /// What went wrong.
        source: EvalError,
    },
}

impl ReviewError {
    /// The request's uid, when it could be read.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Self::NotAReview { uid, .. } | Self::WrongApiVersion { uid, .. } => uid.as_deref(),
            Self::MissingRequest => None,
            Self::MissingObject { uid, .. } | Self::Policy { uid, .. } => Some(uid),
        }
    }

    /// True when the request is at fault (HTTP 400); false when the webhook is (500).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, Self::Policy { .. })
    }
}

impl SecretAdmission {
    /// Checks `kubernetes.io/regcredentials` Secrets with `runner` and the default policy
    /// configuration.
    pub fn new(runner: PolicyRunner) -> Self {
        Self {
            runner,
            config: PolicyConfig::default(),
            check_docker_secrets: false,
        }
    }

    /// The site policy (allowed registries, limits) to apply.
    #[must_use]
    pub fn policy_config(mut self, config: PolicyConfig) -> Self {
        self.config = config;
        self
    }

    /// Also check `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg` Secrets.
    #[must_use]
    pub fn check_docker_secrets(mut self, check: bool) -> Self {
        self.check_docker_secrets = check;
        self
    }

    fn checks(&self, secret_type: &str) -> bool {
        secret_type == REGCREDENTIALS_TYPE
            || (self.check_docker_secrets
                && (secret_type == DOCKER_CONFIG_JSON_TYPE || secret_type == DOCKERCFG_TYPE))
    }

    /// Answers one AdmissionReview body. This runs the policy: call it where blocking for
    /// tens of microseconds is fine (`spawn_blocking` in async code).
    ///
    /// # Errors
    ///
    /// A [`ReviewError`] when the body is not an `admission.k8s.io/v1` AdmissionReview
    /// with a request (and an object on CREATE and UPDATE), or when the policy fails.
    pub fn review(&self, body: &[u8]) -> Result<Decision, ReviewError> {
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(body).map_err(|err| ReviewError::NotAReview {
                uid: probe_uid(body),
                reason: describe_json_error(&err),
            })?;
        if review.types.kind != META_KIND {
            return Err(ReviewError::NotAReview {
                uid: probe_uid(body),
                reason: format!(
                    "kind is \"{}\", not AdmissionReview",
                    shorten(&review.types.kind)
                ),
            });
        }
        if review.types.api_version != META_API_VERSION_V1 {
            return Err(ReviewError::WrongApiVersion {
                uid: review.request.as_ref().map(|r| r.uid.clone()),
                api_version: shorten(&review.types.api_version),
            });
        }
        let mut request: AdmissionRequest<DynamicObject> =
            review.try_into().map_err(|_| ReviewError::MissingRequest)?;
        let operation = operation_name(&request.operation);
        let skipped = |request: &AdmissionRequest<DynamicObject>| Decision {
            review: AdmissionResponse::from(request).into_review(),
            outcome: Outcome::Skipped,
            operation,
            secret: None,
            causes: Vec::new(),
        };
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Ok(skipped(&request));
        }
        let Some(object) = request.object.take() else {
            return Err(ReviewError::MissingObject {
                uid: request.uid.clone(),
                operation,
            });
        };
        // The old object holds the previous values: kept only to see what an update of a
        // terminating Secret changes.
        let old_object = request.old_object.take();
        if !(request.kind.group.is_empty() && request.kind.kind == "Secret") {
            return Ok(skipped(&request));
        }
        let deleting = object.metadata.deletion_timestamp.is_some();
        let secret = to_manifest(object).map_err(|reason| ReviewError::NotAReview {
            uid: Some(request.uid.clone()),
            reason,
        })?;
        // A Secret on its way out is not blocked while only what the rules do not read
        // changes (finalizers being removed); new values or a new type are judged.
        let leaving = deleting && old_object.is_some_and(|old| same_for_rules(old, &secret));
        if leaving || !self.checks(secret.secret_type()) {
            return Ok(skipped(&request));
        }
        let report = self
            .runner
            .validate(&secret, &self.config)
            .map_err(|source| ReviewError::Policy {
                uid: request.uid.clone(),
                source,
            })?;
        Ok(self.decide(&request, &secret, report, operation))
    }

    fn decide(
        &self,
        request: &AdmissionRequest<DynamicObject>,
        secret: &SecretManifest,
        report: ValidationReport,
        operation: &'static str,
    ) -> Decision {
        let mut response = AdmissionResponse::from(request);
        if !report.warnings.is_empty() {
            response.warnings = Some(report.warnings.iter().map(ToString::to_string).collect());
        }
        let causes: Vec<String> = report
            .violations
            .iter()
            .map(|v| format!("{} {}", v.field, v.error_type))
            .collect();
        let outcome = if report.valid {
            Outcome::Allowed
        } else {
            let name = object_name(secret, request);
            let listed: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
            response = response.deny(format!(
                "Secret \"{name}\" is invalid: {}",
                listed.join("; ")
            ));
            response.result.status = Some(StatusSummary::Failure);
            response.result.code = 422;
            response.result.reason = "Invalid".into();
            response.result.details = Some(StatusDetails {
                name,
                group: String::new(),
                kind: "Secret".into(),
                uid: String::new(),
                causes: report
                    .violations
                    .iter()
                    .map(|v| StatusCause {
                        reason: v.error_type.as_str().into(),
                        message: v.message.clone(),
                        field: v.field.clone(),
                    })
                    .collect(),
                retry_after_seconds: 0,
            });
            Outcome::Denied
        };
        Decision {
            review: response.into_review(),
            outcome,
            operation,
            secret: Some(report.secret),
            causes,
        }
    }
}

/// The answer to a review that could not be judged: an AdmissionReview with the request's
/// uid (when known), `allowed: false` and a status with `code` and the error's message.
pub fn error_review(uid: Option<&str>, code: u16, message: &str) -> Vec<u8> {
    let reason = match code {
        400 => "BadRequest",
        413 => "RequestEntityTooLarge",
        _ => "InternalError",
    };
    let mut response = AdmissionResponse::invalid(message);
    response.uid = uid.unwrap_or_default().to_string();
    response.result.code = code;
    response.result.reason = reason.into();
    serde_json::to_vec(&response.into_review()).unwrap_or_default()
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The name the API server would put in its own message: the object's name, or the
/// request's, or `generateName` with a `*`.
fn object_name(secret: &SecretManifest, request: &AdmissionRequest<DynamicObject>) -> String {
    let metadata = &secret.metadata;
    match (&metadata.name, &metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        _ if !request.name.is_empty() => request.name.clone(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}*"),
        _ => "<unnamed>".into(),
    }
}

/// The Secret manifest model the policy reads, from the API server's object.
fn to_manifest(object: DynamicObject) -> Result<SecretManifest, String> {
    let DynamicObject {
        types,
        metadata,
        data,
    } = object;
    let mut secret: SecretManifest = serde_json::from_value(data)
        .map_err(|err| format!("object: {}", describe_json_error(&err)))?;
    if let Some(types) = types {
        secret.api_version = Some(types.api_version);
        secret.kind = Some(types.kind);
    }
    secret.metadata = SecretMetadata {
        name: metadata.name,
        generate_name: metadata.generate_name,
        namespace: metadata.namespace,
        labels: metadata
            .labels
            .map(|l| l.into_iter().collect::<BTreeMap<_, _>>()),
        annotations: metadata.annotations.map(|a| a.into_iter().collect()),
    };
    Ok(secret)
}

/// Does `old` read the same as `new` to the rules? Everything but labels, annotations and
/// the metadata the manifest model leaves out (finalizers, owners, timestamps) counts.
fn same_for_rules(old: DynamicObject, new: &SecretManifest) -> bool {
    let unread = |mut secret: SecretManifest| {
        secret.metadata.labels = None;
        secret.metadata.annotations = None;
        secret
    };
    to_manifest(old).is_ok_and(|old| unread(old) == unread(new.clone()))
}

/// The uid of a body that did not parse as a whole, if it has one where it belongs.
fn probe_uid(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        request: Option<ProbeRequest>,
    }
    #[derive(Deserialize)]
    struct ProbeRequest {
        uid: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    probe.request?.uid.map(|uid| shorten(&uid))
}

/// A JSON error as a message that cannot leak a value
/// ([`regcred_types::redact::serde_message`]).
pub(crate) fn describe_json_error(err: &serde_json::Error) -> String {
    regcred_types::redact::serde_message(&err.to_string())
}

fn shorten(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(MAX_QUOTED)
        .collect();
    if cleaned.chars().count() < text.chars().count() {
        format!("{cleaned}...")
    } else {
        cleaned
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
