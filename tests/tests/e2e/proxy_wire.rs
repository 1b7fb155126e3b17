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

use crate::proxy_support::Manifests;

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
        sandbox_config: Some(pod_sandbox("team", pod, &format!("{pod}-uid"))),
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
