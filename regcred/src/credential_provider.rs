//! regcred as a kubelet credential provider plugin (`credentialprovider.kubelet.k8s.io/v1`,
//! KEP-4412): the second way in, for nodes whose runtime endpoints cannot change.
//!
//! kubelet runs the plugin once per image pull it has no cached answer for, with a
//! [`CredentialProviderRequest`] on standard input: the image and, with
//! `tokenAttributes` configured, the pod's service-account token and the service
//! account's annotations kubelet was told to pass. The plugin reads the Secrets the
//! annotation [`PULL_SECRETS_ANNOTATION`] names, in the pod's namespace, **with that
//! token** (so RBAC decides what a workload may read), runs the same policy as every
//! other part of regcred, and answers with a [`CredentialProviderResponse`]: the first
//! matching credential's username and password, keyed by the image's repository, cached
//! per image ([`CacheKeyType::Image`]: never broader than what was read).
//!
//! What the API cannot carry, the plugin refuses to pretend: kubelet's response has a
//! username and a password only, so a Secret whose credential is an identity token or a
//! registry token is an error naming it (use the node agent for it), never a silent
//! anonymous pull.

use std::collections::BTreeMap;

use regcred_types::{Candidate, SecretManifest};
use serde::{Deserialize, Serialize};

/// The API version kubelet speaks to the plugin, and the only one regcred answers.
pub(crate) const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// The service-account annotation naming the pull Secrets (comma-separated, in the
/// pod's namespace). Configure it in kubelet's `requiredServiceAccountAnnotationKeys`,
/// so kubelet calls the plugin only for workloads that opted in.
pub(crate) const PULL_SECRETS_ANNOTATION: &str = "regcred.dev/pull-secrets";

/// What kubelet sends on standard input. Its `Debug` shows whether a token came, never
/// the token.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CredentialProviderRequest {
    /// `credentialprovider.kubelet.k8s.io/v1`.
    pub api_version: String,
    /// `CredentialProviderRequest`.
    pub kind: String,
    /// The image being pulled, as the pod names it.
    pub image: String,
    /// The pod's service-account token (with `tokenAttributes` configured).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_token: String,
    /// The service account's annotations kubelet was configured to pass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_account_annotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for CredentialProviderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialProviderRequest")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("image", &self.image)
            .field(
                "service_account_token",
                &if self.service_account_token.is_empty() {
                    ""
                } else {
                    regcred_types::REDACTED
                },
            )
            .field(
                "service_account_annotations",
                &self.service_account_annotations,
            )
            .finish()
    }
}

/// How kubelet caches an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CacheKeyType {
    /// Per image repository (registry, port and path; no tag or digest).
    Image,
    /// Per registry host and port.
    Registry,
    /// For every image the plugin matches.
    Global,
}

/// One credential of the answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProviderAuth {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
}

impl std::fmt::Debug for ProviderAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderAuth")
            .field("username", &self.username)
            .field("password", &regcred_types::REDACTED)
            .finish()
    }
}

/// What the plugin writes on standard output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CredentialProviderResponse {
    /// `credentialprovider.kubelet.k8s.io/v1`.
    pub api_version: String,
    /// `CredentialProviderResponse`.
    pub kind: String,
    /// How kubelet caches the answer.
    pub cache_key_type: CacheKeyType,
    /// How long kubelet caches it (a Go duration, `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<String>,
    /// Credentials by image match; absent when there are none for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BTreeMap<String, ProviderAuth>>,
}

/// Why the plugin gives no answer. Each names what to fix; none carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ProviderError {
    /// Standard input is not a request this plugin understands.
    #[error("the request on standard input is not a {API_VERSION} CredentialProviderRequest: {0}")]
    Request(String),
    /// kubelet sent no service-account token.
    #[error(
        "the request for image {image} carries no serviceAccountToken: give regcred's entry in \
         kubelet's credential provider configuration tokenAttributes.serviceAccountTokenAudience \
         (and requireServiceAccount: true); regcred reads the pull Secrets with the pod's own token"
    )]
    NoToken {
        /// The image.
        image: String,
    },
    /// The token does not say which service account and namespace it is for.
    #[error(
        "the service-account token for image {image} is not a Kubernetes service-account JWT: {reason}"
    )]
    BadToken {
        /// The image.
        image: String,
        /// What is wrong (never the token).
        reason: String,
    },
    /// The annotation names something that is not a Secret name.
    #[error(
        "service account {namespace}/{service_account}: annotation {PULL_SECRETS_ANNOTATION} \
         names {name:?}, which is not a Secret name (a comma-separated list of names in the \
         pod's namespace)"
    )]
    BadAnnotation {
        /// The service account's namespace.
        namespace: String,
        /// The service account.
        service_account: String,
        /// The bad entry.
        name: String,
    },
    /// A named Secret could not be read with the pod's token.
    #[error(
        "service account {namespace}/{service_account} names pull Secret {namespace}/{secret} \
         (annotation {PULL_SECRETS_ANNOTATION}), which it cannot read: {reason}"
    )]
    Unreadable {
        /// The namespace.
        namespace: String,
        /// The service account.
        service_account: String,
        /// The Secret.
        secret: String,
        /// The API's answer.
        reason: String,
    },
    /// The policy failed.
    #[error("the policy failed for image {image}: {reason}")]
    Policy {
        /// The image.
        image: String,
        /// Why.
        reason: String,
    },
    /// The first matching credential is one kubelet's API cannot carry.
    #[error(
        "pull Secret {secret} matches image {image} ({matched}) with {what} only; kubelet's \
         credential provider API carries a username and password, nothing else, so this \
         credential cannot be used in credential-provider mode: use regcred's node agent \
         (cri-proxy, NRI mode) for this Secret, or give it a username and password"
    )]
    Untransportable {
        /// `namespace/name`.
        secret: String,
        /// The image.
        image: String,
        /// The registry key that matched.
        matched: String,
        /// `an identity token`, `a registry token`.
        what: &'static str,
    },
}

impl CredentialProviderRequest {
    /// Parses and checks the request kubelet wrote.
    ///
    /// # Errors
    ///
    /// [`ProviderError::Request`] for anything else: not JSON, unknown fields, another
    /// apiVersion or kind, no image.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ProviderError> {
        let request: Self =
            serde_json::from_slice(bytes).map_err(|e| ProviderError::Request(e.to_string()))?;
        if request.api_version != API_VERSION {
            return Err(ProviderError::Request(format!(
                "apiVersion is {:?}, this plugin speaks {API_VERSION} (set apiVersion: {API_VERSION} \
                 for regcred in kubelet's credential provider configuration)",
                request.api_version
            )));
        }
        if request.kind != "CredentialProviderRequest" {
            return Err(ProviderError::Request(format!(
                "kind is {:?}, expected CredentialProviderRequest",
                request.kind
            )));
        }
        if request.image.is_empty() {
            return Err(ProviderError::Request("image is empty".into()));
        }
        Ok(request)
    }

    /// The service account the token is for: `(namespace, name)`.
    ///
    /// # Errors
    ///
    /// [`ProviderError::NoToken`] without a token, [`ProviderError::BadToken`] when its
    /// claims name no service account.
    pub(crate) fn service_account(&self) -> Result<(String, String), ProviderError> {
        if self.service_account_token.is_empty() {
            return Err(ProviderError::NoToken {
                image: self.image.clone(),
            });
        }
        service_account_of(&self.service_account_token).map_err(|reason| ProviderError::BadToken {
            image: self.image.clone(),
            reason,
        })
    }

    /// The Secret names the annotation lists (none without it).
    ///
    /// # Errors
    ///
    /// [`ProviderError::BadAnnotation`] for an entry that is not a Secret name.
    pub(crate) fn pull_secret_names(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let Some(value) = self
            .service_account_annotations
            .get(PULL_SECRETS_ANNOTATION)
        else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !is_dns_subdomain(name) {
                return Err(ProviderError::BadAnnotation {
                    namespace: namespace.to_owned(),
                    service_account: service_account.to_owned(),
                    name: name.to_owned(),
                });
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}

/// The pod a bound service-account token was issued for: `(name, uid)` from the claims'
/// `kubernetes.io.pod`; `None` for a token bound to no pod.
pub(crate) fn pod_of(token: &str) -> Option<(String, String)> {
    let claims = claims_of(token).ok()?;
    let pod = &claims["kubernetes.io"]["pod"];
    Some((
        pod["name"].as_str()?.to_owned(),
        pod["uid"].as_str()?.to_owned(),
    ))
}

fn claims_of(token: &str) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("it is not three dot-separated parts")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "its claims are not base64url".to_owned())?;
    serde_json::from_slice(&bytes).map_err(|_| "its claims are not JSON".to_owned())
}

/// The namespace and name a service-account JWT's claims carry: `kubernetes.io`'s
/// `namespace` and `serviceaccount.name`, else `sub`
/// (`system:serviceaccount:NS:NAME`). The signature is not checked here: the API server
/// checks it when the token is used.
fn service_account_of(token: &str) -> Result<(String, String), String> {
    let claims = claims_of(token)?;
    let k8s = &claims["kubernetes.io"];
    if let (Some(ns), Some(name)) = (
        k8s["namespace"].as_str(),
        k8s["serviceaccount"]["name"].as_str(),
    ) {
        return Ok((ns.to_owned(), name.to_owned()));
    }
    claims["sub"]
        .as_str()
        .and_then(|s| s.strip_prefix("system:serviceaccount:"))
        .and_then(|s| s.split_once(':'))
        .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
        .ok_or_else(|| "its claims name no service account".to_owned())
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The image's repository: the key of the answer, which kubelet's Image cache key is made
/// of too (registry, port and path, no tag or digest).
pub(crate) fn repository_of(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(r, _)| r);
    // A tag is a `:` after the last `/` (a `:` before it is the registry's port).
    let last_slash = without_digest.rfind('/').unwrap_or(0);
    match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    }
}

/// The answer for `request` from the policy's `candidates` (in order) for its image.
///
/// # Errors
///
/// [`ProviderError::Untransportable`] when the first candidate has no username and
/// password (only tokens): kubelet's API cannot carry it, and trying the next one would
/// silently use other credentials than the Secret the policy put first.
pub(crate) fn answer(
    request: &CredentialProviderRequest,
    candidates: &[Candidate],
    cache_duration: std::time::Duration,
) -> Result<CredentialProviderResponse, ProviderError> {
    let auth = match candidates.first() {
        None => None,
        Some(first) => {
            let (username, password) = username_password(first).ok_or_else(|| {
                let a = &first.auth_config;
                ProviderError::Untransportable {
                    secret: first.secret.clone(),
                    image: request.image.clone(),
                    matched: first.matched.clone(),
                    what: if a.identity_token.is_empty() {
                        "a registry token"
                    } else {
                        "an identity token"
                    },
                }
            })?;
            Some(BTreeMap::from([(
                repository_of(&request.image).to_owned(),
                ProviderAuth { username, password },
            )]))
        }
    };
    Ok(CredentialProviderResponse {
        api_version: API_VERSION.to_owned(),
        kind: "CredentialProviderResponse".to_owned(),
        cache_key_type: CacheKeyType::Image,
        cache_duration: Some(format!("{}s", cache_duration.as_secs())),
        auth,
    })
}

/// The candidate's username and password: as given, or from its `auth` (base64 of
/// `user:password`, a Docker config's form); `None` when it has neither.
fn username_password(candidate: &Candidate) -> Option<(String, String)> {
    use base64::Engine as _;
    let a = &candidate.auth_config;
    if !a.username.is_empty() || !a.password.is_empty() {
        return Some((a.username.clone(), a.password.expose().to_owned()));
    }
    if a.auth.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(a.auth.expose())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Reads the Secrets `names` in `namespace` with the service-account `token`, against the
/// API server (and CA) `config` names; the client credentials `config` carries are not
/// used.
///
/// # Errors
///
/// [`ProviderError::Unreadable`] naming the first Secret the API does not give.
pub(crate) async fn read_secrets(
    mut config: kube::Config,
    token: &str,
    namespace: &str,
    service_account: &str,
    names: &[String],
    timeout: std::time::Duration,
) -> Result<Vec<SecretManifest>, ProviderError> {
    use k8s_openapi::api::core::v1::Secret;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    config.read_timeout = Some(timeout);
    config.connect_timeout = Some(timeout);
    let unreadable = |secret: &str, reason: String| ProviderError::Unreadable {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        secret: secret.to_owned(),
        reason,
    };
    let client = kube::Client::try_from(config)
        .map_err(|e| unreadable(names.first().map_or("", String::as_str), e.to_string()))?;
    let api: kube::Api<Secret> = kube::Api::namespaced(client, namespace);
    let mut secrets = Vec::with_capacity(names.len());
    for name in names {
        let got = tokio::time::timeout(timeout, api.get(name))
            .await
            .map_err(|_| {
                unreadable(
                    name,
                    format!("no answer from the API server within {timeout:?}"),
                )
            })?
            .map_err(|err| {
                unreadable(
                    name,
                    match err {
                        kube::Error::Api(status) => {
                            format!("{} {}: {}", status.code, status.reason, status.message)
                        }
                        other => other.to_string(),
                    },
                )
            })?;
        secrets.push(SecretManifest::from(got));
    }
    Ok(secrets)
}

/// Records `message` as a Warning Event on the pod `pod` (name, uid) in `namespace`,
/// with the pod's own `token` (its service account needs `create` on `events`, as
/// deploy/credential-provider/workload-example.yaml grants): kubelet shows a plugin's
/// error only in its log, and the pod's events should say why its pull had no
/// credentials. Best effort: whether it was recorded.
pub(crate) async fn record_event(
    mut config: kube::Config,
    token: &str,
    namespace: &str,
    pod: (&str, &str),
    message: &str,
    timeout: std::time::Duration,
) -> bool {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    let Ok(client) = kube::Client::try_from(config) else {
        return false;
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", pod.0)),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.0.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: Some(pod.1.to_owned()),
            ..Default::default()
        },
        reason: Some("RegcredCredentialProvider".into()),
        message: Some(message.to_owned()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("regcred-credential-provider".into()),
            ..Default::default()
        }),
        reporting_component: Some("regcred-credential-provider".into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    let api: kube::Api<Event> = kube::Api::namespaced(client, namespace);
    matches!(
        tokio::time::timeout(
            timeout,
            api.create(&kube::api::PostParams::default(), &event)
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
#[path = "credential_provider_tests.rs"]
mod tests;
