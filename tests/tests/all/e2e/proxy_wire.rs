//! What the proxy sends the runtime, byte for byte: a recording runtime stand-in (an
//! HTTP/2 gRPC server that keeps every request body) behind the proxy, and a raw client
//! that sends messages with fields no schema in this workspace knows.

use prost::Message as _;
use regcred_cri_api::methods;
use regcred_cri_api::runtime::v1::{
    AuthConfig, ImageSpec, ImageStatusResponse, PullImageRequest, PullImageResponse,
};
use regcred_tests::harness::{Proxy, RecordingRuntime, Reply, pod_sandbox, raw_call};
use tonic::Code;

use super::proxy_support::Manifests;

/// Field 99 of any message, a string: what a newer CRI might add.
const UNKNOWN_FIELD: [u8; 8] = [0x9a, 0x06, 5, b'n', b'e', b'w', b'e', b'r'];

/// A PullImageRequest as kubelet sends it for `pod`, with an unknown field at the top
/// and one inside `image` (field 100 of ImageSpec).
fn pull_request_bytes(pod: &str, auth: Option<AuthConfig>) -> Vec<u8> {
    let mut image = ImageSpec {
        image: "127.0.0.1:5000/team/app:v1".into(),
        user_specified_image: "127.0.0.1:5000/team/app:v1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    image.extend([0xa2, 0x06, 3, b'x', b'y', b'z']);
    let rest = PullImageRequest {
        image: None,
        auth,
        // The uid `Manifests::pod` writes: the dir source checks it (issue 14, finding 2).
        sandbox_config: Some(pod_sandbox("team", pod, &format!("{pod}-5f0c-4d7e-9b1a"))),
    }
    .encode_to_vec();
    let mut bytes = vec![0x0a];
    prost::encoding::encode_varint(image.len() as u64, &mut bytes);
    bytes.extend(image);
    bytes.extend(rest);
    bytes.extend(UNKNOWN_FIELD);
    bytes
}

struct WireWorld {
    runtime: RecordingRuntime,
    manifests: Manifests,
    proxy: Proxy,
}

impl WireWorld {
    async fn start() -> Self {
        let runtime = RecordingRuntime::start();
        let manifests = Manifests::new();
        manifests.secret(
            "robot",
            &[
                ("serverAddress", "127.0.0.1:5000"),
                ("username", "robot"),
                ("password", "CANARY-wire-password"),
            ],
        );
        let proxy = Proxy::builder(runtime.socket(), manifests.path())
            .start()
            .await;
        Self {
            runtime,
            manifests,
            proxy,
        }
    }
}

#[tokio::test]
async fn injected_auth_is_the_only_change_and_unknown_fields_arrive_intact() {
    let w = WireWorld::start().await;
    w.manifests.pod("app", &["robot"]);
    let sent = pull_request_bytes("app", None);
    let answer = raw_call(w.proxy.socket(), methods::PULL_IMAGE, &sent).await;
    assert_eq!(answer.code, Code::Ok, "{}", answer.message);

    let calls = w.runtime.calls();
    assert_eq!(calls.len(), 1, "one candidate, one attempt");
    let received = calls[0].message();
    assert_eq!(calls[0].path, methods::PULL_IMAGE);
    assert_eq!(
        &received[..sent.len()],
        &sent[..],
        "the original bytes, unchanged"
    );
    let appended = PullImageRequest::decode(&received[sent.len()..]).expect("one more field");
    let auth = appended.auth.expect("the appended field is auth (2)");
    assert_eq!(
        (
            auth.username.as_str(),
            auth.password.as_str(),
            auth.server_address.as_str()
        ),
        ("robot", "CANARY-wire-password", "https://127.0.0.1:5000")
    );
    assert!(appended.image.is_none() && appended.sandbox_config.is_none());
    assert!(!w.proxy.log_text().contains("CANARY-wire-password"));
}

#[tokio::test]
async fn request_with_auth_or_without_pod_reaches_the_runtime_byte_for_byte() {
    let w = WireWorld::start().await;
    w.manifests.pod("app", &["robot"]);
    let with_auth = pull_request_bytes(
        "app",
        Some(AuthConfig {
            auth: "a3ViZWxldDpzZWNyZXQ=".into(),
            ..Default::default()
        }),
    );
    let mut no_pod = PullImageRequest {
        image: Some(ImageSpec {
            image: "127.0.0.1:5000/team/app:v1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    no_pod.extend(UNKNOWN_FIELD);
    let unknown_pod = pull_request_bytes("not-in-the-source", None);
    for sent in [&with_auth, &no_pod, &unknown_pod] {
        let answer = raw_call(w.proxy.socket(), methods::PULL_IMAGE, sent).await;
        assert_eq!(answer.code, Code::Ok, "{}", answer.message);
    }
    let received: Vec<Vec<u8>> = w
        .runtime
        .calls()
        .iter()
        .map(|c| c.message().to_vec())
        .collect();
    assert_eq!(received, [with_auth, no_pod, unknown_pod]);
}

#[tokio::test]
async fn responses_unknown_methods_and_errors_pass_unchanged() {
    let w = WireWorld::start().await;
    // A response with a field this proxy's schema lacks.
    let mut status_response = ImageStatusResponse::default().encode_to_vec();
    status_response.extend(UNKNOWN_FIELD);
    w.runtime.reply(
        methods::IMAGE_STATUS,
        Reply::Message(status_response.clone()),
    );
    let future_method = "/runtime.v1.ImageService/PullImageWithProgress";
    w.runtime
        .reply(future_method, Reply::Message(b"\x0a\x03abc".to_vec()));
    w.runtime.reply(
        methods::REMOVE_IMAGE,
        Reply::Status(Code::NotFound, "image \"x\": not found".into()),
    );

    let mut request = b"\x0a\x05\x0a\x03img".to_vec();
    request.extend(UNKNOWN_FIELD);
    let answer = raw_call(w.proxy.socket(), methods::IMAGE_STATUS, &request).await;
    assert_eq!(answer.code, Code::Ok);
    assert_eq!(
        &answer.body[5..],
        &status_response[..],
        "response bytes unchanged"
    );

    let answer = raw_call(w.proxy.socket(), future_method, b"\x0a\x01z").await;
    assert_eq!(answer.code, Code::Ok, "an unknown method is forwarded");
    assert_eq!(&answer.body[5..], b"\x0a\x03abc");

    let answer = raw_call(w.proxy.socket(), methods::REMOVE_IMAGE, b"").await;
    assert_eq!(
        (answer.code, answer.message.as_str()),
        (Code::NotFound, "image \"x\": not found"),
        "the runtime's status, unchanged"
    );
    let calls = w.runtime.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [methods::IMAGE_STATUS, future_method, methods::REMOVE_IMAGE]
    );
    assert_eq!(calls[0].message(), &request[..]);
    assert_eq!(calls[1].message(), b"\x0a\x01z");
}

#[tokio::test]
async fn when_every_candidate_fails_the_last_error_names_the_secrets_tried() {
    let w = WireWorld::start().await;
    w.manifests.secret(
        "backup",
        &[
            ("serverAddress", "127.0.0.1:5000"),
            ("username", "backup"),
            ("password", "CANARY-wire-backup"),
        ],
    );
    w.manifests.pod("app", &["robot", "backup"]);
    w.runtime.reply(
        methods::PULL_IMAGE,
        Reply::Status(
            Code::Unknown,
            "failed to pull: unexpected status: 401 Unauthorized".into(),
        ),
    );
    let answer = raw_call(
        w.proxy.socket(),
        methods::PULL_IMAGE,
        &pull_request_bytes("app", None),
    )
    .await;
    assert_eq!(answer.code, Code::Unknown, "the runtime's code");
    assert!(
        answer
            .message
            .starts_with("failed to pull: unexpected status: 401 Unauthorized"),
        "{}",
        answer.message
    );
    assert!(
        answer.message.contains("team/robot, team/backup"),
        "names both, in order: {}",
        answer.message
    );
    assert!(!answer.message.contains("CANARY"));
    assert_eq!(w.runtime.calls().len(), 2, "one attempt per candidate");

    // A success after failures stops there: the runtime now accepts.
    w.runtime.reply(
        methods::PULL_IMAGE,
        Reply::Message(
            PullImageResponse {
                image_ref: "sha256:feed".into(),
            }
            .encode_to_vec(),
        ),
    );
    let answer = raw_call(
        w.proxy.socket(),
        methods::PULL_IMAGE,
        &pull_request_bytes("app", None),
    )
    .await;
    assert_eq!(answer.code, Code::Ok);
    assert_eq!(w.runtime.calls().len(), 3, "stops at the first success");
    assert!(!w.proxy.log_text().contains("CANARY"));
}

/// Issue 14, finding 8: a request body over the proxy's limit is refused with
/// RESOURCE_EXHAUSTED once the limit is passed, not after the proxy buffered all of it,
/// and the proxy goes on answering other calls.
#[tokio::test]
async fn an_oversized_request_is_refused_before_it_is_all_read() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let w = WireWorld::start().await;
    let stream = tokio::net::UnixStream::connect(w.proxy.socket())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    // 64 MiB announced in the gRPC frame, sent 64 KiB at a time as the proxy takes it.
    const TOTAL: usize = 64 << 20;
    let produced = Arc::new(AtomicUsize::new(0));
    let body = Flood {
        header: Some(u32::try_from(TOTAL).unwrap()),
        left: TOTAL,
        produced: Arc::clone(&produced),
    };
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{}", methods::PULL_IMAGE))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        sender.send_request(request),
    )
    .await
    .expect("the proxy answers before the body ends")
    .unwrap();
    let (parts, body) = response.into_parts();
    let trailers = body
        .collect()
        .await
        .ok()
        .and_then(|c| c.trailers().cloned());
    let status = trailers
        .as_ref()
        .and_then(tonic::Status::from_header_map)
        .or_else(|| tonic::Status::from_header_map(&parts.headers))
        .expect("a grpc-status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("larger than"), "{status:?}");
    let sent = produced.load(Ordering::SeqCst);
    assert!(sent < 16 << 20, "the client got to send {sent} bytes");
    assert!(w.runtime.calls().is_empty(), "nothing reached the runtime");

    w.runtime.reply(
        methods::IMAGE_STATUS,
        Reply::Message(ImageStatusResponse::default().encode_to_vec()),
    );
    let answer = raw_call(w.proxy.socket(), methods::IMAGE_STATUS, &[]).await;
    assert_eq!(answer.code, Code::Ok, "{}", answer.message);
}

/// A request body of a gRPC frame header announcing `left` bytes, then `left` bytes,
/// produced 64 KiB at a time as the connection takes them; counts what it produced.
struct Flood {
    header: Option<u32>,
    left: usize,
    produced: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl hyper::body::Body for Flood {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        let chunk = if let Some(length) = self.header.take() {
            let mut header = vec![0u8];
            header.extend(length.to_be_bytes());
            header
        } else if self.left == 0 {
            return std::task::Poll::Ready(None);
        } else {
            let n = self.left.min(64 << 10);
            self.left -= n;
            vec![0x0a; n]
        };
        self.produced
            .fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from(
            chunk,
        )))))
    }
}

/// With verification on, a CreateContainer the proxy cannot decide is refused, never
/// forwarded: one with a group field (wire type 3, which the CRI never sends but a
/// fuzzer or a future runtime client might) and one without a sandbox config.
#[tokio::test]
async fn an_undecidable_create_container_is_refused_not_forwarded() {
    let runtime = RecordingRuntime::start();
    let manifests = Manifests::new();
    let proxy = Proxy::builder(runtime.socket(), manifests.path())
        .verify_images()
        .start()
        .await;
    let mut with_group = regcred_cri_api::runtime::v1::CreateContainerRequest {
        pod_sandbox_id: "sb".into(),
        sandbox_config: Some(pod_sandbox("team", "app", "uid-1")),
        ..Default::default()
    }
    .encode_to_vec();
    with_group.extend([(9 << 3) | 3, (9 << 3) | 4]);
    let without_sandbox = regcred_cri_api::runtime::v1::CreateContainerRequest {
        pod_sandbox_id: "sb".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for sent in [&with_group, &without_sandbox] {
        let answer = raw_call(proxy.socket(), methods::CREATE_CONTAINER, sent).await;
        assert_eq!(answer.code, Code::PermissionDenied, "{}", answer.message);
        assert!(
            answer.message.contains("cannot be decided"),
            "{}",
            answer.message
        );
    }
    // (The agent's own ListImages at start, noting the preloaded images, is not one.)
    let forwarded: Vec<_> = runtime
        .calls()
        .into_iter()
        .filter(|c| c.path != methods::LIST_IMAGES)
        .collect();
    assert!(
        forwarded.is_empty(),
        "the runtime got {} calls",
        forwarded.len()
    );
}
