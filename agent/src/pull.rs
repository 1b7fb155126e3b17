//! PullImage: the one call the proxy looks into.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Response;
use prost::Message as _;
use regcred_cri_api::runtime::v1::{AuthConfig as CriAuthConfig, PullImageRequest};
use regcred_types::{AuthConfig, Candidate};
use tonic::Code;

use super::Inner;
use super::events;
use super::grpc::{self, ProxyBody};
use super::metrics::PullOutcome;
use super::records::{CredentialFields, ImageKey, PullRecords, RecordsError};
use super::runtime::RequestHead;
use super::source::PodRef;
use super::wire::with_auth;

/// What the proxy reads of a PullImageRequest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PullView {
    /// `image.image`.
    pub(crate) image: String,
    /// `auth`, when present with at least one field set (kubelet's dockerconfigjson).
    pub(crate) auth: Option<CriAuthConfig>,
    /// `sandbox_config.metadata`, when it names a pod.
    pub(crate) pod: Option<PodRef>,
}

impl PullView {
    /// Decodes the fields the proxy needs; `None` when the message does not parse (the
    /// proxy then forwards it and lets the runtime answer).
    pub(crate) fn decode(message: &[u8]) -> Option<Self> {
        let request = PullImageRequest::decode(message).ok()?;
        let pod = PodRef::from_sandbox(request.sandbox_config);
        Some(Self {
            image: request.image.map(|i| i.image).unwrap_or_default(),
            // An empty `auth` message is "no credentials": kubelet sends none, but a client
            // that sends an empty one gets the same treatment (the injected field then
            // merges into it, as protobuf merges repeated message fields).
            auth: request.auth.filter(|a| *a != CriAuthConfig::default()),
            pod,
        })
    }
}

/// Every secret value in `candidates` (and the base64 `auth` it may be sent as), to take
/// out of any runtime message before it is logged or returned.
pub(crate) fn secret_values(candidates: &[Candidate]) -> Vec<String> {
    use base64::Engine as _;
    let mut values = Vec::new();
    for c in candidates {
        let a = &c.auth_config;
        for value in [&a.password, &a.auth, &a.identity_token, &a.registry_token] {
            if !value.is_empty() {
                values.push(value.expose().to_owned());
            }
        }
        if !a.password.is_empty() {
            values.push(base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                a.username,
                a.password.expose()
            )));
        }
    }
    values
}

/// `text` with every value in `secrets` replaced by `<redacted>`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), regcred_types::REDACTED)
    })
}

/// `response` (a runtime's answer) with its gRPC status message replaced by `message`.
fn with_message(response: Response<ProxyBody>, message: &str) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let body = match body {
        ProxyBody::Buffered { data, mut trailers } => {
            grpc::replace_message(&mut parts.headers, trailers.as_mut(), message);
            ProxyBody::Buffered { data, trailers }
        }
        stream @ ProxyBody::Stream(_) => stream,
    };
    Response::from_parts(parts, body)
}

/// A runtime's answer to one attempt, held in memory.
pub(crate) struct Answer {
    pub(crate) response: Response<ProxyBody>,
    pub(crate) code: Code,
    pub(crate) message: String,
}

/// How trying a pod's candidates in order ended ([`Inner::try_candidates`]).
pub(crate) enum Tried {
    /// The registry accepted the candidate at `index`: the runtime's answer.
    Accepted { index: usize, answer: Answer },
    /// The registry refused each (or there was none): the last answer, its message
    /// scrubbed of the candidates' values.
    Refused { last: Option<Answer> },
}

/// What a pod's pull Secrets give for one image.
pub(crate) enum Resolved {
    /// The pod is known: its candidates (maybe none) and, when some of its Secrets could
    /// not be read, a note saying which.
    Candidates {
        candidates: Vec<Candidate>,
        unreadable: Option<String>,
    },
    /// The source does not know the pod.
    PodUnknown,
}

/// Why a pod's candidates could not be had: the outcome to count and the response to give.
pub(crate) struct ResolveFailure {
    pub(crate) outcome: PullOutcome,
    pub(crate) response: Response<ProxyBody>,
}

/// The Secret name recorded for credentials kubelet itself sent (dockerconfigjson).
const KUBELET_CREDENTIALS: &str = "(credentials kubelet sent)";

impl Inner {
    /// Handles one PullImage whose body is `body`.
    pub(crate) async fn pull_image(&self, head: RequestHead, body: Bytes) -> Response<ProxyBody> {
        let Some(message) = grpc::single_message(&body) else {
            tracing::warn!("PullImage body is not one uncompressed gRPC message; forwarded as is");
            return self
                .forward_pull(&head, body, PullOutcome::ForwardedWithoutCredentials)
                .await;
        };
        let Some(view) = PullView::decode(&message) else {
            tracing::warn!("PullImageRequest does not parse; forwarded as is");
            return self
                .forward_pull(&head, body, PullOutcome::ForwardedWithoutCredentials)
                .await;
        };
        let image = view.image.as_str();
        if let Some(auth) = &view.auth {
            // (an absent pod leaves the field out; a present one is its plain `ns/name`)
            tracing::info!(
                image,
                pod = view.pod.as_ref().map(tracing::field::display),
                decision = PullOutcome::ForwardedWithAuth.as_str(),
                "PullImage already carries auth; forwarded untouched"
            );
            // Left to kubelet's own checks (issue 23, finding 3): recorded, not private.
            let pod = view.pod.as_ref().map(|p| (p.to_string(), p.uid.clone()));
            return self
                .forward_recording(
                    &head,
                    body,
                    PullOutcome::ForwardedWithAuth,
                    |records, pulled| {
                        records.kubelet_credentialed(
                            pulled,
                            image,
                            &records.hash(CredentialFields::from(auth)),
                            KUBELET_CREDENTIALS,
                            pod.as_ref().map(|(p, u)| (p.as_str(), u.as_str())),
                        )
                    },
                )
                .await;
        }
        let Some(pod) = view.pod else {
            tracing::info!(
                image,
                decision = PullOutcome::ForwardedWithoutCredentials.as_str(),
                "PullImage without pod metadata; forwarded without credentials"
            );
            return self.forward_anonymous(&head, body, image).await;
        };

        let (candidates, unreadable) = match self.candidates_for(&pod, image).await {
            Ok(Resolved::Candidates {
                candidates,
                unreadable,
            }) => (candidates, unreadable),
            Ok(Resolved::PodUnknown) => {
                tracing::info!(pod = %pod, image,
                    decision = PullOutcome::ForwardedWithoutCredentials.as_str(),
                    "forwarded without credentials (the pod is unknown to the pull secret source)");
                return self.forward_anonymous(&head, body, image).await;
            }
            Err(failure) => {
                tracing::warn!(pod = %pod, image, decision = failure.outcome.as_str(),
                    "PullImage answered with regcred's error (the line before says why)");
                self.metrics.pull(failure.outcome);
                return failure.response;
            }
        };
        if candidates.is_empty() {
            tracing::info!(pod = %pod, image,
                decision = PullOutcome::ForwardedWithoutCredentials.as_str(),
                "no pull secret matches the image; forwarded without credentials");
            if let Some(note) = unreadable {
                return self.forward_noting(&head, body, image, &note).await;
            }
            return self.forward_anonymous(&head, body, image).await;
        }

        let tried = self
            .try_candidates(
                &head,
                &candidates,
                |auth| grpc::frame(&with_auth(&message, auth)),
                |candidate, answer| {
                    tracing::warn!(pod = %pod, image, secret = %candidate.secret,
                        matched = %candidate.matched, code = ?answer.code,
                        error = %answer.message, "PullImage with pull secret failed");
                    self.event(
                        &pod,
                        events::CREDENTIALS_REFUSED,
                        format!(
                            "pulling {image} with the credentials of pull secret {} (matched \
                             as {}) failed: {}",
                            candidate.secret, candidate.matched, answer.message
                        ),
                    );
                },
            )
            .await;
        let last = match tried {
            Err(unavailable) => {
                tracing::error!(pod = %pod, image,
                    decision = PullOutcome::RuntimeUnavailable.as_str(),
                    "the runtime is unavailable");
                self.metrics.pull(PullOutcome::RuntimeUnavailable);
                return unavailable;
            }
            Ok(Tried::Accepted { index, answer }) => {
                let candidate = &candidates[index];
                tracing::info!(pod = %pod, image, secret = %candidate.secret,
                    matched = %candidate.matched, decision = PullOutcome::Pulled.as_str(),
                    "PullImage with credentials from pull secret");
                self.metrics.pull(PullOutcome::Pulled);
                if let Some(verification) = &self.verification {
                    let hash = verification
                        .records()
                        .hash(CredentialFields::from(&candidate.auth_config));
                    self.record_pull(&answer.response, image, Some((&hash, &candidate.secret)))
                        .await;
                }
                return answer.response;
            }
            Ok(Tried::Refused { last }) => last,
        };
        self.metrics.pull(PullOutcome::AllCandidatesFailed);
        // Refused: every candidate was tried, in order.
        let tried: Vec<&str> = candidates.iter().map(|c| c.secret.as_str()).collect();
        tracing::warn!(pod = %pod, image, secrets = %tried.join(","),
            decision = PullOutcome::AllCandidatesFailed.as_str(),
            "every pull secret's credentials were refused");
        let Some(last) = last else {
            return grpc::error_response(Code::Internal, "regcred: no candidate was tried");
        };
        let mut summary = format!(
            "{} (regcred: pod {pod} pulled {image} with pull secret(s) {}, in this order; \
             each was refused, this is the runtime's error for the last)",
            last.message,
            tried.join(", ")
        );
        if let Some(note) = unreadable {
            summary = format!("{summary} ({note})");
        }
        with_message(last.response, &summary)
    }

    /// Tries `candidates` in order, each as the PullImage `request` makes with its
    /// credentials, until the registry accepts one; `refused` hears of each refusal (its
    /// message scrubbed of every candidate's values) as it comes. The one loop of the
    /// pull path and of the creation check. `Err` is the response to give when the runtime
    /// cannot be reached.
    pub(crate) async fn try_candidates(
        &self,
        head: &RequestHead,
        candidates: &[Candidate],
        request: impl Fn(&AuthConfig) -> Bytes,
        mut refused: impl FnMut(&Candidate, &Answer),
    ) -> Result<Tried, Response<ProxyBody>> {
        let hidden = secret_values(candidates);
        let mut last = None;
        for (index, candidate) in candidates.iter().enumerate() {
            self.metrics.injected();
            let answer = self.attempt(head, request(&candidate.auth_config)).await?;
            if answer.code == Code::Ok {
                return Ok(Tried::Accepted { index, answer });
            }
            let answer = Answer {
                message: scrub(&answer.message, &hidden),
                ..answer
            };
            refused(candidate, &answer);
            last = Some(answer);
        }
        Ok(Tried::Refused { last })
    }

    /// The candidates of `pod`'s pull Secrets for `image`, resolved by the policy; `Err`
    /// says what failed (the Secrets or the policy) and the response to give. The caller
    /// counts it: a pull or a CreateContainer decision.
    pub(crate) async fn candidates_for(
        &self,
        pod: &PodRef,
        image: &str,
    ) -> Result<Resolved, ResolveFailure> {
        // The lookup and the policy hold a resolution slot; the pull attempts do not.
        let _resolving = Arc::clone(&self.resolving).acquire_owned().await;
        let started = Instant::now();
        let secrets = match self.secrets.pull_secrets(pod).await {
            Ok(secrets) => secrets,
            Err(err) => {
                tracing::error!(pod = %pod, image, error = %err, "cannot read the pod's pull secrets");
                return Err(ResolveFailure {
                    outcome: PullOutcome::SecretSourceError,
                    response: grpc::error_response(
                        Code::Unavailable,
                        &format!("regcred: cannot read the pull secrets of pod {pod}: {err}"),
                    ),
                });
            }
        };
        for warning in &secrets.warnings {
            tracing::warn!(pod = %pod, "{warning}");
            self.event(pod, events::PULL_SECRET_SKIPPED, warning.clone());
        }
        for name in &secrets.missing {
            tracing::warn!(pod = %pod, secret = %name, "imagePullSecret not found; skipped");
            self.event(
                pod,
                events::PULL_SECRET_SKIPPED,
                format!("imagePullSecret {name} not found; its credentials are not used"),
            );
        }
        if !secrets.pod_found {
            tracing::warn!(pod = %pod, uid = %pod.uid, image,
                "pod not found in the pull secret source; no credentials");
            return Ok(Resolved::PodUnknown);
        }
        let resolution = {
            let (policy, config, profile) =
                (self.policy.clone(), self.config.clone(), self.profile);
            let (image, secrets) = (image.to_owned(), secrets.secrets.clone());
            self.executor
                .run(move || policy.resolve(&image, &secrets, profile, &config))
                .await
        };
        let resolution = resolution
            .map_err(|err| err.to_string())
            .and_then(|resolved| resolved.map_err(|err| err.to_string()));
        let resolution = match resolution {
            Ok(resolution) => resolution,
            Err(err) => {
                tracing::error!(pod = %pod, image, error = %err, "the policy failed");
                return Err(ResolveFailure {
                    outcome: PullOutcome::PolicyError,
                    response: grpc::error_response(
                        Code::Internal,
                        &format!("regcred: the policy failed for pod {pod}, image {image}: {err}"),
                    ),
                });
            }
        };
        self.metrics.resolution(started.elapsed());
        for warning in &resolution.warnings {
            tracing::warn!(pod = %pod, image, "{warning}");
            self.event(
                pod,
                events::PULL_SECRET_SKIPPED,
                format!("for image {image}: {warning}"),
            );
        }
        // Why some of the pod's Secrets were not used, for the message of a failed pull:
        // kubelet's event then says it, not only the registry's refusal.
        let unreadable = (!secrets.unreadable.is_empty()).then(|| {
            format!(
                "regcred: pull secret(s) of pod {pod} that could not be read, so not used: {}",
                secrets.unreadable.join("; ")
            )
        });
        Ok(Resolved::Candidates {
            candidates: resolution.candidates,
            unreadable,
        })
    }

    /// Forwards a PullImage without credentials and, when it fails, adds `note` to the
    /// runtime's message.
    async fn forward_noting(
        &self,
        head: &RequestHead,
        body: Bytes,
        image: &str,
        note: &str,
    ) -> Response<ProxyBody> {
        let answer = match self.attempt(head, body).await {
            Ok(answer) => answer,
            Err(unavailable) => {
                self.metrics.pull(PullOutcome::RuntimeUnavailable);
                return unavailable;
            }
        };
        self.metrics.pull(PullOutcome::ForwardedWithoutCredentials);
        if answer.code == Code::Ok {
            self.record_pull(&answer.response, image, None).await;
            return answer.response;
        }
        let message = format!("{} ({note})", answer.message);
        with_message(answer.response, &message)
    }

    /// Sends one attempt and reads the whole answer; `Err` is the response to return
    /// when the runtime cannot be reached.
    pub(crate) async fn attempt(
        &self,
        head: &RequestHead,
        body: Bytes,
    ) -> Result<Answer, Response<ProxyBody>> {
        let started = Instant::now();
        let response = self.runtime.call(head, body, true).await;
        self.metrics
            .runtime_call(head.uri.path(), started.elapsed());
        let response =
            response.map_err(|err| grpc::error_response(Code::Unavailable, &err.to_string()))?;
        let (parts, incoming) = response.into_parts();
        let collected = incoming.collect().await.map_err(|err| {
            grpc::error_response(
                Code::Unavailable,
                &format!(
                    "the connection to the runtime broke during {}: {err}",
                    head.uri.path()
                ),
            )
        })?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        let (code, message) = grpc::status_of(&parts.headers, trailers.as_ref());
        Ok(Answer {
            response: Response::from_parts(
                parts,
                ProxyBody::Buffered {
                    data: (!data.is_empty()).then_some(data),
                    trailers,
                },
            ),
            code,
            message,
        })
    }

    /// Forwards a PullImage without credentials (none came, none apply) and records a
    /// success as public.
    async fn forward_anonymous(
        &self,
        head: &RequestHead,
        body: Bytes,
        image: &str,
    ) -> Response<ProxyBody> {
        self.forward_recording(
            head,
            body,
            PullOutcome::ForwardedWithoutCredentials,
            |records, pulled| records.public(pulled, image),
        )
        .await
    }

    /// Forwards a PullImage as it came, counts it, and with verification on records a
    /// success with `record` (the records, and the image reference the runtime pulled).
    async fn forward_recording(
        &self,
        head: &RequestHead,
        body: Bytes,
        outcome: PullOutcome,
        record: impl FnOnce(&PullRecords, ImageKey<'_>) -> Result<(), RecordsError>,
    ) -> Response<ProxyBody> {
        let Some(verification) = &self.verification else {
            return self.forward_pull(head, body, outcome).await;
        };
        match self.attempt(head, body).await {
            Ok(answer) => {
                self.metrics.pull(outcome);
                if answer.code == Code::Ok
                    && let Some(pulled) = self.pulled_image(&answer.response).await
                {
                    self.keep(record(verification.records(), pulled.key()));
                }
                answer.response
            }
            Err(unavailable) => {
                self.metrics.pull(PullOutcome::RuntimeUnavailable);
                unavailable
            }
        }
    }

    /// Forwards a PullImage as it came and counts it.
    async fn forward_pull(
        &self,
        head: &RequestHead,
        body: Bytes,
        outcome: PullOutcome,
    ) -> Response<ProxyBody> {
        let response = self.forward(head, body).await;
        let unavailable = response
            .headers()
            .get("grpc-status")
            .is_some_and(|s| s.as_bytes() == b"14")
            && response.extensions().get::<tonic::Status>().is_some();
        self.metrics.pull(if unavailable {
            PullOutcome::RuntimeUnavailable
        } else {
            outcome
        });
        response
    }
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
