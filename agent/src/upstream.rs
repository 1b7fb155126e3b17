//! The runtime as the handlers see it: every call counted and timed, an answer read whole
//! when the proxy must look at it, the one loop that tries a pod's candidates in order
//! (for a pull and for the check at container creation), and the questions the agent
//! asks about the node's images (ImageStatus, ListImages).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Response;
use prost::Message as _;
use regcred_cri_api::runtime::v1::{
    Image, ImageSpec, ImageStatusRequest, ImageStatusResponse, ListImagesRequest,
    ListImagesResponse,
};
use regcred_types::{AuthConfig, Candidate};
use tonic::Code;

use super::grpc::{self, ProxyBody};
use super::metrics::ProxyMetrics;
use super::runtime::{RequestHead, RuntimeConnection};

/// A runtime's answer to one attempt, held in memory.
pub(crate) struct Answer {
    pub(crate) response: Response<ProxyBody>,
    pub(crate) code: Code,
    pub(crate) message: String,
}

/// How trying a pod's candidates in order ended ([`Upstream::try_candidates`]).
pub(crate) enum Tried {
    /// The registry accepted the candidate at `index`: the runtime's answer.
    Accepted { index: usize, answer: Answer },
    /// The registry refused each (or there was none): the last answer, its message
    /// scrubbed of the candidates' values.
    Refused { last: Option<Answer> },
}

/// The runtime's socket and the metrics its calls are counted in.
#[derive(Debug)]
pub(crate) struct Upstream {
    connection: RuntimeConnection,
    metrics: Arc<ProxyMetrics>,
}

impl Upstream {
    pub(crate) fn new(connection: RuntimeConnection, metrics: Arc<ProxyMetrics>) -> Self {
        Self {
            connection,
            metrics,
        }
    }

    /// The runtime's socket.
    pub(crate) fn socket(&self) -> &std::path::Path {
        self.connection.socket()
    }

    /// Sends the request as it came and streams the runtime's response back.
    pub(crate) async fn forward(&self, head: &RequestHead, body: Bytes) -> Response<ProxyBody> {
        let path = head.uri.path();
        let started = Instant::now();
        let result = self
            .connection
            .call(head, body, is_image_service(path))
            .await;
        self.metrics.runtime_call(path, started.elapsed());
        match result {
            Ok(response) => response.map(ProxyBody::Stream),
            Err(err) => {
                tracing::warn!(method = path, error = %err, "runtime unavailable");
                grpc::error_response(Code::Unavailable, &format!("regcred cri-proxy: {err}"))
            }
        }
    }

    /// Sends one attempt and reads the whole answer; `Err` is the response to return
    /// when the runtime cannot be reached.
    pub(crate) async fn attempt(
        &self,
        head: &RequestHead,
        body: Bytes,
    ) -> Result<Answer, Response<ProxyBody>> {
        let started = Instant::now();
        let response = self.connection.call(head, body, true).await;
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

    /// The runtime's ImageStatus of `image`, asked with the caller's request metadata
    /// (`head`); `None` when it cannot be asked or has no such image.
    async fn image_status(&self, head: &RequestHead, image: &str) -> Option<Image> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let status_head = head.with_path(regcred_cri_api::methods::IMAGE_STATUS);
        let answer = self
            .attempt(&status_head, grpc::frame(&request.encode_to_vec()))
            .await
            .ok()?;
        let message = response_message(&answer.response)?;
        ImageStatusResponse::decode(&message[..]).ok()?.image
    }

    /// The ID of `image` on the node, asked of the runtime.
    pub(crate) async fn image_id(&self, head: &RequestHead, image: &str) -> Option<String> {
        self.image_status(head, image).await.map(|i| i.id)
    }

    /// The names the runtime has for the image `id` (its tags and repository digests);
    /// none when it cannot be asked or does not have the image.
    pub(crate) async fn image_names(&self, id: &str) -> Vec<String> {
        let head = RequestHead::unary(regcred_cri_api::methods::IMAGE_STATUS);
        self.image_status(&head, id)
            .await
            .map(|image| {
                image
                    .repo_tags
                    .into_iter()
                    .chain(image.repo_digests)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The runtime's images (`None` when it cannot be asked).
    pub(crate) async fn list_images(&self) -> Option<Vec<Image>> {
        let head = RequestHead::unary(regcred_cri_api::methods::LIST_IMAGES);
        let request = grpc::frame(&ListImagesRequest::default().encode_to_vec());
        match self.attempt(&head, request).await {
            Ok(answer) if answer.code == Code::Ok => response_message(&answer.response)
                .and_then(|m| ListImagesResponse::decode(&m[..]).ok())
                .map(|listed| listed.images),
            _ => None,
        }
    }
}

/// ImageService calls are idempotent: one may be sent again on a fresh connection.
fn is_image_service(path: &str) -> bool {
    path.starts_with("/runtime.v1.ImageService/")
}

/// The message of a buffered unary response.
pub(crate) fn response_message(response: &Response<ProxyBody>) -> Option<Bytes> {
    match response.body() {
        ProxyBody::Buffered {
            data: Some(data), ..
        } => grpc::single_message(data),
        _ => None,
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
