//! PullImage: the one call the proxy looks into.

use bytes::Bytes;
use hyper::Response;
use prost::Message as _;
use regcred_cri_api::runtime::v1::{AuthConfig as CriAuthConfig, PullImageRequest};
use tonic::Code;

use super::Inner;
use super::events;
use super::grpc::{self, ProxyBody};
use super::images::pulled_image;
use super::metrics::PullOutcome;
use super::records::{CredentialFields, ImageKey, PullRecords, RecordsError};
use super::resolve::Resolved;
use super::runtime::RequestHead;
use super::source::PodRef;
use super::upstream::Tried;
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

/// The Secret name recorded for credentials kubelet itself sent (dockerconfigjson).
const KUBELET_CREDENTIALS: &str = "(credentials kubelet sent)";

/// Handles one PullImage whose body is `body`.
pub(crate) async fn pull_image(
    inner: &Inner,
    head: RequestHead,
    body: Bytes,
) -> Response<ProxyBody> {
    let Some(message) = grpc::single_message(&body) else {
        tracing::warn!("PullImage body is not one uncompressed gRPC message; forwarded as is");
        return forward_pull(inner, &head, body, PullOutcome::ForwardedWithoutCredentials).await;
    };
    let Some(view) = PullView::decode(&message) else {
        tracing::warn!("PullImageRequest does not parse; forwarded as is");
        return forward_pull(inner, &head, body, PullOutcome::ForwardedWithoutCredentials).await;
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
        return forward_recording(
            inner,
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
        return forward_anonymous(inner, &head, body, image).await;
    };

    let (candidates, unreadable) = match inner.resolver.candidates_for(&pod, image).await {
        Ok(Resolved::Candidates {
            candidates,
            unreadable,
        }) => (candidates, unreadable),
        Ok(Resolved::PodUnknown) => {
            tracing::info!(pod = %pod, image,
                decision = PullOutcome::ForwardedWithoutCredentials.as_str(),
                "forwarded without credentials (the pod is unknown to the pull secret source)");
            return forward_anonymous(inner, &head, body, image).await;
        }
        Err(failure) => {
            tracing::warn!(pod = %pod, image, decision = failure.outcome.as_str(),
                "PullImage answered with regcred's error (the line before says why)");
            inner.metrics.pull(failure.outcome);
            return failure.response;
        }
    };
    if candidates.is_empty() {
        tracing::info!(pod = %pod, image,
            decision = PullOutcome::ForwardedWithoutCredentials.as_str(),
            "no pull secret matches the image; forwarded without credentials");
        if let Some(note) = unreadable {
            return forward_noting(inner, &head, body, image, &note).await;
        }
        return forward_anonymous(inner, &head, body, image).await;
    }

    let tried = inner
        .upstream
        .try_candidates(
            &head,
            &candidates,
            |auth| grpc::frame(&with_auth(&message, auth)),
            |candidate, answer| {
                tracing::warn!(pod = %pod, image, secret = %candidate.secret,
                    matched = %candidate.matched, code = ?answer.code,
                    error = %answer.message, "PullImage with pull secret failed");
                inner.events.warn(
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
            inner.metrics.pull(PullOutcome::RuntimeUnavailable);
            return unavailable;
        }
        Ok(Tried::Accepted { index, answer }) => {
            let candidate = &candidates[index];
            tracing::info!(pod = %pod, image, secret = %candidate.secret,
                matched = %candidate.matched, decision = PullOutcome::Pulled.as_str(),
                "PullImage with credentials from pull secret");
            inner.metrics.pull(PullOutcome::Pulled);
            if let Some(verification) = &inner.verification {
                let hash = verification
                    .records()
                    .hash(CredentialFields::from(&candidate.auth_config));
                inner
                    .images
                    .record_pull(
                        &inner.upstream,
                        &answer.response,
                        image,
                        Some((&hash, &candidate.secret)),
                    )
                    .await;
            }
            return answer.response;
        }
        Ok(Tried::Refused { last }) => last,
    };
    inner.metrics.pull(PullOutcome::AllCandidatesFailed);
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

/// Forwards a PullImage without credentials and, when it fails, adds `note` to the
/// runtime's message.
async fn forward_noting(
    inner: &Inner,
    head: &RequestHead,
    body: Bytes,
    image: &str,
    note: &str,
) -> Response<ProxyBody> {
    let answer = match inner.upstream.attempt(head, body).await {
        Ok(answer) => answer,
        Err(unavailable) => {
            inner.metrics.pull(PullOutcome::RuntimeUnavailable);
            return unavailable;
        }
    };
    inner.metrics.pull(PullOutcome::ForwardedWithoutCredentials);
    if answer.code == Code::Ok {
        inner
            .images
            .record_pull(&inner.upstream, &answer.response, image, None)
            .await;
        return answer.response;
    }
    let message = format!("{} ({note})", answer.message);
    with_message(answer.response, &message)
}

/// Forwards a PullImage without credentials (none came, none apply) and records a
/// success as public.
async fn forward_anonymous(
    inner: &Inner,
    head: &RequestHead,
    body: Bytes,
    image: &str,
) -> Response<ProxyBody> {
    forward_recording(
        inner,
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
    inner: &Inner,
    head: &RequestHead,
    body: Bytes,
    outcome: PullOutcome,
    record: impl FnOnce(&PullRecords, ImageKey<'_>) -> Result<(), RecordsError>,
) -> Response<ProxyBody> {
    let Some(verification) = &inner.verification else {
        return forward_pull(inner, head, body, outcome).await;
    };
    match inner.upstream.attempt(head, body).await {
        Ok(answer) => {
            inner.metrics.pull(outcome);
            if answer.code == Code::Ok
                && let Some(pulled) = pulled_image(&inner.upstream, &answer.response).await
            {
                inner
                    .images
                    .keep(record(verification.records(), pulled.key()));
            }
            answer.response
        }
        Err(unavailable) => {
            inner.metrics.pull(PullOutcome::RuntimeUnavailable);
            unavailable
        }
    }
}

/// Forwards a PullImage as it came and counts it.
async fn forward_pull(
    inner: &Inner,
    head: &RequestHead,
    body: Bytes,
    outcome: PullOutcome,
) -> Response<ProxyBody> {
    let response = inner.upstream.forward(head, body).await;
    let unavailable = response
        .headers()
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"14")
        && response.extensions().get::<tonic::Status>().is_some();
    inner.metrics.pull(if unavailable {
        PullOutcome::RuntimeUnavailable
    } else {
        outcome
    });
    response
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
