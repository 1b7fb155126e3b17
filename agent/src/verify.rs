//! Who may use an image already on the node: the decision at `CreateContainer`.
//!
//! kubelet ignores `kubernetes.io/regcredentials` Secrets, so a pull that the proxy
//! authenticated looks to kubelet like a pull without credentials, and kubelet lets every
//! pod of the node run the image afterwards without pulling (`IfNotPresent`), whatever
//! its KEP-2535 settings. The proxy closes that: with kubelet's `containerRuntimeEndpoint`
//! pointed at it too, it reads each `CreateContainerRequest` (the pod's sandbox config
//! and the image's ID and name) and lets the container be created from an image that was
//! pulled with credentials only when
//!
//! - this pod's own credentials (regcredentials or Docker Secrets, resolved as for a pull)
//!   pulled it, or were accepted for it, within the record lifetime
//!   ([`PullRecords`](super::records::PullRecords)): no registry round trip, so a
//!   registry outage does not stop containers already allowed;
//! - or the registry accepts them now: the proxy pulls the image again with them (the
//!   runtime asks the registry for the manifest; blobs already on the node are not
//!   fetched again) and records the result.
//!
//! Otherwise `CreateContainer` fails with `PERMISSION_DENIED` and a message that kubelet
//! shows in the pod's events. Images without records (on the node before regcred pulled
//! anything, or imported by hand) and images a pull without credentials got are used by
//! every pod, as with kubelet's default `NeverVerifyPreloadedImages`; the policies are
//! named after kubelet's ([`VerificationPolicy`]).

use bytes::Bytes;
use hyper::Response;
use prost::Message as _;
use regcred_cri_api::runtime::v1::{CreateContainerRequest, ImageSpec};
use tonic::Code;

use super::Inner;
use super::events;
use super::grpc::{self, ProxyBody};
use super::images::{PulledImage, pulled_image};
use super::metrics::ImageUse;
use super::records::{CredentialFields, ImageAccess};
use super::resolve::Resolved;
use super::runtime::RequestHead;
use super::source::PodRef;
use super::upstream::Tried;
use super::verification::{ImageVerification, VerificationPolicy};
use super::wire::{pull_request, raw_field};
/// How the decision went (the `decision` label of the metric).
pub(crate) enum Allowed {
    /// Verification is off.
    NotVerified,
    /// The records say public.
    Public,
    /// No records, and on the node when the agent first listed its images.
    Preloaded,
    /// In the allowlist.
    Allowlisted,
    /// This pod (namespace, name and uid) was allowed the image within the record lifetime
    /// (by the credentials of this Secret; empty for none): no API or registry question.
    Granted(String),
    /// The pod's credentials (from this Secret) are on record for the image.
    Remembered(String),
    /// The registry accepted the pod's credentials (from this Secret) just now.
    Verified(String),
    /// A pull without credentials succeeded just now.
    Anonymous,
    /// Pulled with credentials kubelet sent: left to kubelet's own checks.
    KubeletChecked,
}

impl Allowed {
    pub(crate) fn metric(&self) -> ImageUse {
        match self {
            Self::NotVerified => ImageUse::NotVerified,
            Self::Public => ImageUse::Public,
            Self::Preloaded => ImageUse::Preloaded,
            Self::Allowlisted => ImageUse::Allowlisted,
            Self::Granted(_) => ImageUse::PodOnRecord,
            Self::Remembered(_) => ImageUse::Remembered,
            Self::Verified(_) => ImageUse::Verified,
            Self::Anonymous => ImageUse::Anonymous,
            Self::KubeletChecked => ImageUse::KubeletChecked,
        }
    }
}

/// Why a verification pull that succeeded grants nothing: `name` now names another
/// image (the tag moved), so the pull proved `how` for that image, not for the one on the
/// node that the container wants.
fn moved(how: &str, name: &str, pulled: &str) -> String {
    format!(
        "{how}: the registry now serves another image for {name} ({pulled}), so this pull \
         proves nothing about the image on the node; pull the image again (imagePullPolicy: \
         Always) or name it by digest"
    )
}
/// Handles one CreateContainer: forwarded unchanged when the pod may use the image,
/// refused otherwise.
pub(crate) async fn create_container(
    inner: &Inner,
    head: RequestHead,
    body: Bytes,
) -> Response<ProxyBody> {
    let Some(verification) = &inner.verification else {
        return inner.upstream.forward(&head, body).await;
    };
    let decoded = grpc::single_message(&body).and_then(|message| {
        let request = CreateContainerRequest::decode(&message[..]).ok()?;
        let sandbox = raw_field(&message, 3)?;
        Some((request, sandbox))
    });
    let Some((request, sandbox)) = decoded else {
        // With verification on, what cannot be decided is not let through.
        tracing::warn!(
            decision = ImageUse::Refused.as_str(),
            "CreateContainerRequest does not parse or has no sandbox config; refused"
        );
        inner.metrics.image_use(ImageUse::Refused);
        return grpc::error_response(
            Code::PermissionDenied,
            "regcred: CreateContainer refused: the request does not parse as a \
             CreateContainerRequest with a sandbox config, so whether its pod may use \
             the image cannot be decided (image verification is on)",
        );
    };
    let pod = PodRef::from_sandbox(request.sandbox_config);
    let config = request.config.unwrap_or_default();
    let container = config.metadata.map(|m| m.name).unwrap_or_default();
    let spec = config.image.unwrap_or_default();
    let Some(pod) = pod else {
        // Not kubelet (crictl, run by root on the node): there is no pod to decide for.
        tracing::info!(image = %spec.image, decision = ImageUse::Undecided.as_str(),
            "CreateContainer without pod metadata; forwarded");
        inner.metrics.image_use(ImageUse::Undecided);
        return inner.upstream.forward(&head, body).await;
    };
    let volumes: Vec<ImageSpec> = config
        .mounts
        .into_iter()
        .filter_map(|m| m.image)
        .filter(|i| !i.image.is_empty())
        .collect();
    match may_use(inner, verification, &pod, &spec, Some(&sandbox)).await {
        Ok(allowed) => note_allowed(inner, &pod, &container, &spec, &allowed),
        Err(refusal) => return refusal,
    }
    // Every image the container will see: its image volumes too (KEP-4639).
    for volume in volumes {
        match may_use_volume(
            inner,
            verification,
            &pod,
            &container,
            volume,
            Some(&sandbox),
        )
        .await
        {
            Ok(()) => {}
            Err(refusal) => return refusal,
        }
    }
    inner.upstream.forward(&head, body).await
}

/// The decision for one image volume of a container: `volume.image` is the image's
/// reference on the node (its ID, or a name resolved here), `user_specified_image`
/// the reference in the pod spec when known.
pub(crate) async fn may_use_volume(
    inner: &Inner,
    verification: &ImageVerification,
    pod: &PodRef,
    container: &str,
    mut volume: ImageSpec,
    sandbox: Option<&[u8]>,
) -> Result<(), Response<ProxyBody>> {
    if !volume.image.starts_with("sha256:") {
        let head = RequestHead::unary(regcred_cri_api::methods::IMAGE_STATUS);
        let Some(id) = inner.upstream.image_id(&head, &volume.image).await else {
            inner.metrics.image_use(ImageUse::Refused);
            return Err(grpc::error_response(
                Code::PermissionDenied,
                &format!(
                    "regcred: pod {pod} may not mount image volume {}: the runtime does \
                     not name its ID, so whether the pod may use it cannot be decided",
                    volume.image
                ),
            ));
        };
        if volume.user_specified_image.is_empty() {
            volume.user_specified_image = std::mem::take(&mut volume.image);
        }
        volume.image = id;
    }
    let allowed = may_use(inner, verification, pod, &volume, sandbox).await?;
    note_allowed(
        inner,
        pod,
        &format!("{container} (image volume)"),
        &volume,
        &allowed,
    );
    Ok(())
}

/// Counts and logs an allowed use.
pub(crate) fn note_allowed(
    inner: &Inner,
    pod: &PodRef,
    container: &str,
    spec: &ImageSpec,
    allowed: &Allowed,
) {
    inner.metrics.image_use(allowed.metric());
    match allowed {
        Allowed::Remembered(secret) | Allowed::Verified(secret) => {
            tracing::info!(pod = %pod, container, image = %spec.user_specified_image,
                id = %spec.image, secret, decision = allowed.metric().as_str(),
                "the pod's credentials are accepted for the image");
        }
        Allowed::Granted(secret) => {
            tracing::info!(pod = %pod, container, image = %spec.user_specified_image,
                id = %spec.image, secret, decision = allowed.metric().as_str(),
                "the pod was allowed the image before; allowed from the records");
        }
        _ => tracing::debug!(pod = %pod, container, image = %spec.image,
            decision = allowed.metric().as_str(), "image use allowed"),
    }
}

/// Whether `pod` may use the image `spec` names (its ID in `image`, the name kubelet
/// asked for in `user_specified_image`); a refusal is the gRPC error response to
/// return, its metric already counted. `sandbox` is the pod's sandbox config as
/// kubelet sent it, passed on in a verification pull (NRI mode has none).
pub(crate) async fn may_use(
    inner: &Inner,
    verification: &ImageVerification,
    pod: &PodRef,
    spec: &ImageSpec,
    sandbox: Option<&[u8]>,
) -> Result<Allowed, Response<ProxyBody>> {
    let records = &verification.records;
    let id = spec.image.as_str();
    let allowed = check(inner, verification, pod, spec, sandbox).await?;
    // What needed the pod's Secrets (the API) or the registry is remembered for this
    // pod: its containers restart through an API or registry outage.
    match &allowed {
        Allowed::Remembered(secret) | Allowed::Verified(secret) => {
            inner
                .images
                .keep(records.grant(id, &pod.to_string(), &pod.uid, secret));
        }
        Allowed::Anonymous => inner
            .images
            .keep(records.grant(id, &pod.to_string(), &pod.uid, "")),
        _ => {}
    }
    Ok(allowed)
}

async fn check(
    inner: &Inner,
    verification: &ImageVerification,
    pod: &PodRef,
    spec: &ImageSpec,
    sandbox: Option<&[u8]>,
) -> Result<Allowed, Response<ProxyBody>> {
    let records = &verification.records;
    let id = spec.image.as_str();
    let name = if spec.user_specified_image.is_empty() {
        records.names(id).into_iter().next().unwrap_or_default()
    } else {
        spec.user_specified_image.clone()
    };
    if verification.policy == VerificationPolicy::NeverVerify {
        return Ok(Allowed::NotVerified);
    }
    inner.images.ensure_preloaded(&inner.upstream).await;
    let access = records.access(id);
    match (verification.policy, &access) {
        (_, ImageAccess::Public) => return Ok(Allowed::Public),
        (VerificationPolicy::NeverVerifyPreloadedImages, ImageAccess::Preloaded) => {
            return Ok(Allowed::Preloaded);
        }
        // kubelet pulled it with credentials it sent itself: kubelet's own checks
        // decide who may use it (issue 23, finding 3), except under AlwaysVerify.
        (
            VerificationPolicy::NeverVerifyPreloadedImages
            | VerificationPolicy::NeverVerifyAllowlistedImages,
            ImageAccess::KubeletChecked,
        ) => return Ok(Allowed::KubeletChecked),
        // The allowlist is matched on the image's own names (its tags and repository
        // digests, from the runtime), not on what the pod wrote: `image: sha256:ID`
        // names no repository at all (issue 23, finding 12). It covers the images
        // that came without a regcred pull, preloaded or later.
        (
            VerificationPolicy::NeverVerifyAllowlistedImages,
            ImageAccess::Preloaded | ImageAccess::Unrecorded,
        ) if inner
            .upstream
            .image_names(id)
            .await
            .iter()
            .any(|n| verification.allowlisted(n)) =>
        {
            return Ok(Allowed::Allowlisted);
        }
        _ => {}
    }
    let shown = if name.is_empty() {
        id.to_owned()
    } else {
        format!("{name} ({id})")
    };
    if let Some(secret) = records.granted(id, &pod.to_string(), &pod.uid) {
        if let Some(refusal) = durable(inner, verification, pod, &shown) {
            return Err(refusal);
        }
        return Ok(Allowed::Granted(secret));
    }
    let why = match access {
        ImageAccess::Private => "it is on this node from a pull with other credentials",
        ImageAccess::Unrecorded => {
            "it came onto this node without a pull regcred recorded (not one of the \
             images present when regcred started), so it counts as private"
        }
        _ => "the verification policy asks every pod for credentials the registry accepts",
    };
    if name.is_empty() {
        inner.metrics.image_use(ImageUse::Refused);
        tracing::warn!(pod = %pod, image = %shown, decision = ImageUse::Refused.as_str(),
            "image use refused: kubelet sent no image name to verify credentials with");
        return Err(grpc::error_response(
            Code::PermissionDenied,
            &format!(
                "regcred: pod {pod} may not use image {shown}: {why}, and kubelet sent no \
                 image name to verify the pod's credentials with"
            ),
        ));
    }

    let resolved = inner
        .resolver
        .candidates_for(pod, &name)
        .await
        .map_err(|failure| {
            tracing::warn!(pod = %pod, image = %shown, decision = ImageUse::Failed.as_str(),
            "no decision on the image (the line before says why)");
            inner.metrics.image_use(ImageUse::Failed);
            failure.response
        })?;
    let (candidates, unreadable) = match resolved {
        Resolved::Candidates {
            candidates,
            unreadable,
        } => (candidates, unreadable),
        Resolved::PodUnknown => (Vec::new(), None),
    };
    let hashes: Vec<String> = candidates
        .iter()
        .map(|c| records.hash(CredentialFields::from(&c.auth_config)))
        .collect();
    if let Some(index) = records.remembered(id, &hashes) {
        if let Some(refusal) = durable(inner, verification, pod, &shown) {
            return Err(refusal);
        }
        // The pod's own Secret with the remembered credentials.
        return Ok(Allowed::Remembered(candidates[index].secret.clone()));
    }

    let pull_head = RequestHead::unary(regcred_cri_api::methods::PULL_IMAGE);
    let image = ImageSpec {
        image: name.clone(),
        user_specified_image: name.clone(),
        runtime_handler: spec.runtime_handler.clone(),
        annotations: spec.annotations.clone(),
    };
    let mut refusals = Vec::new();
    let tried = inner
        .upstream
        .try_candidates(
            &pull_head,
            &candidates,
            |auth| grpc::frame(&pull_request(image.clone(), Some(auth), sandbox)),
            |candidate, answer| {
                refusals.push(format!("{}: {}", candidate.secret, answer.message));
            },
        )
        .await
        .map_err(|unavailable| failed(inner, unavailable))?;
    if let Tried::Accepted { index, answer } = tried {
        let candidate = &candidates[index];
        let pulled = pulled_image(&inner.upstream, &answer.response).await;
        let pulled = pulled.unwrap_or_else(|| PulledImage::named(id));
        // The pull proved the credentials for the image it got, and only for it.
        inner.images.keep(records.credentialed(
            pulled.key(),
            &name,
            &hashes[index],
            &candidate.secret,
        ));
        if pulled.is(id) {
            if let Some(refusal) = durable(inner, verification, pod, &shown) {
                return Err(refusal);
            }
            return Ok(Allowed::Verified(candidate.secret.clone()));
        }
        refusals.push(moved(&candidate.secret, &name, pulled.shown()));
    }
    if candidates.is_empty() {
        let request = pull_request(image, None, sandbox);
        let answer = inner
            .upstream
            .attempt(&pull_head, grpc::frame(&request))
            .await
            .map_err(|unavailable| failed(inner, unavailable))?;
        if answer.code == Code::Ok {
            let pulled = pulled_image(&inner.upstream, &answer.response).await;
            let pulled = pulled.unwrap_or_else(|| PulledImage::named(id));
            inner.images.keep(records.public(pulled.key(), &name));
            if pulled.is(id) {
                return Ok(Allowed::Anonymous);
            }
            refusals.push(moved("a pull without credentials", &name, pulled.shown()));
        } else {
            refusals.push(format!(
                "the pod has no pull secret for this image, and the registry refused a pull \
                 without credentials: {}",
                answer.message
            ));
        }
    }
    inner.metrics.image_use(ImageUse::Refused);
    let mut message = format!(
        "regcred: pod {pod} may not use image {shown}: {why}, and the registry accepted \
         none of this pod's credentials for it ({})",
        refusals.join("; ")
    );
    if let Some(note) = unreadable {
        message = format!("{message} ({note})");
    }
    tracing::warn!(pod = %pod, image = %name, id, policy = %verification.policy,
        decision = ImageUse::Refused.as_str(), error = %message, "image use refused");
    inner
        .events
        .warn(pod, events::IMAGE_REFUSED, message.clone());
    Err(grpc::error_response(Code::PermissionDenied, &message))
}

/// Counts a decision that could not be made (the runtime unreachable) and passes its
/// response on.
fn failed(inner: &Inner, response: Response<ProxyBody>) -> Response<ProxyBody> {
    inner.metrics.image_use(ImageUse::Failed);
    response
}
/// `None` when the records on disk hold what memory holds (a failed write is tried
/// again first); else the refusal for `pod` and `shown`: a decision that lets a pod
/// use a private image must survive a restart, or a restart would forget it was
/// private (issue 23, finding 5).
fn durable(
    inner: &Inner,
    verification: &ImageVerification,
    pod: &PodRef,
    shown: &str,
) -> Option<Response<ProxyBody>> {
    let records = &verification.records;
    if !records.unwritten() {
        return None;
    }
    let flushed = records.flush();
    inner.metrics.records_unwritten(records.unwritten());
    let Err(err) = flushed else {
        tracing::info!("the pulled-image records are written again");
        return None;
    };
    inner.metrics.records_write_failed();
    inner.metrics.image_use(ImageUse::Refused);
    let message = format!(
        "regcred: pod {pod} may not use image {shown}: the node's pulled-image records \
         cannot be written ({err}), and a private image is let through only once its \
         record is safe; fix the records directory (space, permissions) and the \
         container starts at kubelet's next try"
    );
    tracing::error!(pod = %pod, image = shown, decision = ImageUse::Refused.as_str(),
        error = %message, "image use refused");
    inner
        .events
        .warn(pod, events::RECORDS_UNWRITTEN, message.clone());
    Some(grpc::error_response(Code::Unavailable, &message))
}
