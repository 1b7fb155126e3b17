//! NRI mode's decision service: the same "may this pod use this image" answer the proxy
//! gives at `CreateContainer`, asked over a local socket by `regcred-nri`, the NRI plugin
//! that runs beside the node agent (`nri/` in the repository, Go, on containerd's
//! `nri/pkg/stub`).
//!
//! In NRI mode kubelet's `containerRuntimeEndpoint` is the runtime itself: regcred sees
//! no RuntimeService call, so a node agent that is down or slow cannot stop kubelet from
//! listing, stopping, exec-ing into or reading the logs of any container. The runtime
//! asks its NRI plugins at each container creation instead; `regcred-nri` is a validator
//! plugin, and a validator that refuses, fails or times out fails that creation (fail
//! closed for the one container), while containerd's default validator, with
//! `required_plugins = ["regcred"]`, fails every creation while `regcred-nri` is not
//! connected (fail closed for the node's new containers, nothing else).
//!
//! The wire is deliberately small: `POST /v1/decide` with a JSON [`DecisionRequest`], and
//! a JSON [`Decision`] back (HTTP/1.1 over a unix socket only root can reach). There is
//! one implementation of the rules: [`super::verify::may_use`], the proxy's own.
//!
//! The decision is bounded ([`DEFAULT_DECISION_BUDGET`], under NRI's 2 s plugin timeout):
//! a pod on record is answered from the records and the pod's cached Secrets; a decision
//! that needs a verification pull and does not finish in time is refused with a message
//! that says so, and the pull goes on in the background, so kubelet's retry finds its
//! result on record.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use regcred_cri_api::runtime::v1::ImageSpec;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use super::metrics::ImageUse;
use super::runtime::RequestHead;
use super::source::PodRef;
use super::verify::{may_use, may_use_volume, note_allowed};
use super::{CriProxy, Inner, grpc};
use regcred_serve::HttpServer;

/// The path of the one call.
pub const DECIDE_PATH: &str = "/v1/decide";
/// How long one decision may take before it is refused (default): NRI drops a plugin
/// that takes longer than `plugin_request_timeout` (2 s by default), and `regcred-nri`
/// needs a little of that for itself.
pub const DEFAULT_DECISION_BUDGET: Duration = Duration::from_millis(1500);
/// The largest request read: a pod's names and an image reference.
const MAX_DECISION_REQUEST: usize = 64 << 10;

/// One container about to be created, as the runtime's NRI request describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid.
    pub uid: String,
    /// The container's name (for messages and logs).
    #[serde(default)]
    pub container: String,
    /// The image as kubelet named it (`io.kubernetes.cri.image-name`; NRI's
    /// `Container.image.name` on containerd 2.4).
    pub image: String,
    /// The image's ID (its config digest) when the runtime gives it (containerd 2.4's
    /// `Container.image.config_digest`); empty on containerd 2.3, where the agent asks the
    /// runtime's image service which ID `image` names now.
    #[serde(default)]
    pub image_id: String,
    /// The image volumes (KEP-4639) the container mounts, by manifest digest
    /// (`sha256:HEX`): containerd mounts each at `.../image-volumes/SANDBOX/HEX`, which is
    /// all NRI shows of them. Each is decided as the container's own image is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_volumes: Vec<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Whether the container may be created.
    pub allowed: bool,
    /// How it was decided: the `decision` label of `regcred_cri_proxy_image_use_total`.
    pub decision: String,
    /// For a refusal, the message the runtime returns to kubelet (it appears in the pod's
    /// events): it names the pod, the image and why; never a credential.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Decision {
    fn refused(decision: ImageUse, message: String) -> Self {
        Self {
            allowed: false,
            decision: decision.as_str().to_owned(),
            message,
        }
    }
}

impl CriProxy {
    /// Serves NRI mode's decisions on `listener` until `shutdown` completes (HTTP/1.1,
    /// `POST /v1/decide`), each bounded by `budget`.
    pub async fn serve_decisions(
        &self,
        listener: UnixListener,
        budget: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let inner = Arc::clone(&self.inner);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let inner = Arc::clone(&inner);
            async move { Ok::<_, Infallible>(handle(inner, request, budget).await) }
        });
        HttpServer::new("nri-decisions")
            .serve(listener, service, shutdown)
            .await;
    }

    /// One decision, as the socket gives it (for tests and embedders).
    pub async fn decide(&self, request: DecisionRequest, budget: Duration) -> Decision {
        decide_within(Arc::clone(&self.inner), request, budget).await
    }
}

async fn handle(
    inner: Arc<Inner>,
    request: Request<Incoming>,
    budget: Duration,
) -> Response<Full<Bytes>> {
    if request.uri().path() != DECIDE_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no such call; POST {DECIDE_PATH}"),
        );
    }
    if request.method() != hyper::Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST {DECIDE_PATH}"),
        );
    }
    let body = match http_body_util::Limited::new(request.into_body(), MAX_DECISION_REQUEST)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("reading the request failed (at most {MAX_DECISION_REQUEST} bytes): {err}"),
            );
        }
    };
    let request: DecisionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("the request is not a decision request: {err}"),
            );
        }
    };
    let decision = decide_within(inner, request, budget).await;
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&decision).unwrap_or_default(),
    )));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response
}

/// The decision, or a refusal when it takes longer than `budget`; the work under way goes
/// on (a verification pull records its result for the next try).
async fn decide_within(inner: Arc<Inner>, request: DecisionRequest, budget: Duration) -> Decision {
    let started = std::time::Instant::now();
    let decision = decide_bounded(Arc::clone(&inner), request, budget).await;
    inner.metrics.decision(started.elapsed());
    decision
}

async fn decide_bounded(inner: Arc<Inner>, request: DecisionRequest, budget: Duration) -> Decision {
    let shown = format!("{}/{}", request.namespace, request.pod);
    let image = request.image.clone();
    let work = tokio::spawn({
        let inner = Arc::clone(&inner);
        async move { decide(&inner, request).await }
    });
    match tokio::time::timeout(budget, work).await {
        Ok(Ok(decision)) => decision,
        Ok(Err(join)) => {
            tracing::error!(pod = %shown, image, error = %join, "a decision failed");
            inner.metrics.image_use(ImageUse::Failed);
            Decision::refused(
                ImageUse::Failed,
                format!(
                    "regcred: pod {shown} may not use image {image} yet: the decision failed \
                     inside the node agent (see its log); the container is not created"
                ),
            )
        }
        Err(_) => {
            tracing::warn!(pod = %shown, image, budget_ms = budget.as_millis(),
                "a decision took longer than its budget; refused, still running");
            inner.metrics.image_use(ImageUse::Failed);
            Decision::refused(
                ImageUse::Failed,
                format!(
                    "regcred: pod {shown} may not use image {image} yet: checking its \
                     credentials with the registry takes longer than {} ms; kubelet retries, \
                     and the result is on record by then",
                    budget.as_millis()
                ),
            )
        }
    }
}

/// Each image volume, found by its manifest digest among the runtime's images.
async fn decide_volumes(
    inner: &Inner,
    verification: &super::ImageVerification,
    pod: &PodRef,
    container: &str,
    digests: &[String],
) -> Result<(), hyper::Response<grpc::ProxyBody>> {
    if digests.is_empty() {
        return Ok(());
    }
    let images = inner.upstream.list_images().await.unwrap_or_default();
    for digest in digests {
        let found = images.iter().find_map(|image| {
            let named: Vec<&String> = image
                .repo_digests
                .iter()
                .filter(|d| d.rsplit_once('@').is_some_and(|(_, at)| at == digest))
                .collect();
            if named.is_empty() {
                return None;
            }
            // The repository the image was last pulled from (the records' most recent
            // name), where the runtime knows it under several.
            let recent = verification.records().names(&image.id);
            let name = recent
                .iter()
                .find_map(|n| {
                    // Compared as normalized names: the records keep the pod's
                    // spelling (`busybox:1.36`), the runtime its own
                    // (`docker.io/library/busybox@sha256:...`).
                    let repository = super::verification::repository_name(n)?;
                    named.iter().find(|d| {
                        super::verification::repository_name(d).as_ref() == Some(&repository)
                    })
                })
                .or_else(|| named.first())?;
            Some((image.id.clone(), (*name).clone()))
        });
        let Some((id, name)) = found else {
            inner.metrics.image_use(ImageUse::Refused);
            return Err(grpc::error_response(
                tonic::Code::PermissionDenied,
                &format!(
                    "regcred: pod {pod} may not mount the image volume {digest}: no image \
                     on the node has that manifest digest, so whether the pod may use it \
                     cannot be decided"
                ),
            ));
        };
        let volume = ImageSpec {
            image: id,
            user_specified_image: name,
            ..Default::default()
        };
        may_use_volume(inner, verification, pod, container, volume, None).await?;
    }
    Ok(())
}

async fn decide(inner: &Inner, request: DecisionRequest) -> Decision {
    let pod = PodRef {
        namespace: request.namespace,
        name: request.pod,
        uid: request.uid,
    };
    let Some(verification) = &inner.verification else {
        inner.metrics.image_use(ImageUse::NotVerified);
        return Decision {
            allowed: true,
            decision: ImageUse::NotVerified.as_str().to_owned(),
            message: String::new(),
        };
    };
    if pod.name.is_empty() || pod.namespace.is_empty() || request.image.is_empty() {
        inner.metrics.image_use(ImageUse::Refused);
        return Decision::refused(
            ImageUse::Refused,
            format!(
                "regcred: a container of pod {}/{} is refused: the runtime's request names \
                 no {}, so whether the pod may use its image cannot be decided",
                pod.namespace,
                pod.name,
                if request.image.is_empty() {
                    "image"
                } else {
                    "pod"
                }
            ),
        );
    }
    let (id, id_from) = if request.image_id.is_empty() {
        let head = RequestHead::unary(regcred_cri_api::methods::IMAGE_STATUS);
        match inner.upstream.image_id(&head, &request.image).await {
            Some(id) => (id, "image-service"),
            None => {
                inner.metrics.image_use(ImageUse::Failed);
                return Decision::refused(
                    ImageUse::Failed,
                    format!(
                        "regcred: pod {pod} may not use image {}: the runtime's image \
                         service does not name its ID now",
                        request.image
                    ),
                );
            }
        }
    } else {
        (request.image_id, "runtime")
    };
    tracing::debug!(pod = %pod, container = request.container, image = request.image,
        id, id_from, "image identified");
    let spec = ImageSpec {
        image: id,
        user_specified_image: request.image,
        ..Default::default()
    };
    let decided = match may_use(inner, verification, &pod, &spec, None).await {
        Ok(allowed) => {
            note_allowed(inner, &pod, &request.container, &spec, &allowed);
            decide_volumes(
                inner,
                verification,
                &pod,
                &request.container,
                &request.image_volumes,
            )
            .await
            .map(|()| allowed)
        }
        Err(refusal) => Err(refusal),
    };
    match decided {
        Ok(allowed) => Decision {
            allowed: true,
            decision: allowed.metric().as_str().to_owned(),
            message: String::new(),
        },
        Err(refusal) => {
            let trailers = match refusal.body() {
                grpc::ProxyBody::Buffered { trailers, .. } => trailers.as_ref(),
                grpc::ProxyBody::Stream(_) => None,
            };
            let (code, message) = grpc::status_of(refusal.headers(), trailers);
            let decision = if code == tonic::Code::PermissionDenied {
                ImageUse::Refused
            } else {
                ImageUse::Failed
            };
            Decision::refused(decision, message)
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
