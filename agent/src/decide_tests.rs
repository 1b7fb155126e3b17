//! Tests of `decide.rs` (its `tests` module, in a file of its own).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use std::collections::BTreeSet;

use prost::Message as _;

use super::*;
use crate::runtime::RequestHead;
use crate::source::{SourceError, SourceFuture};
use crate::{ImageVerification, PullRecords, PullSecretSource, VerificationPolicy};

/// A source that never answers: an API server that hangs.
#[derive(Debug)]
struct Hanging;

impl PullSecretSource for Hanging {
    fn pull_secrets<'a>(&'a self, _pod: &'a PodRef) -> SourceFuture<'a> {
        Box::pin(async {
            std::future::pending::<()>().await;
            Err(SourceError::Api {
                object: "pod".into(),
                reason: "never".into(),
            })
        })
    }
}

fn proxy(records: Arc<PullRecords>, verify: bool) -> CriProxy {
    let mut builder = CriProxy::builder(
        "/nonexistent/regcred-test-runtime.sock",
        Arc::new(Hanging),
        regcred_host::PolicyRunner::Native,
    );
    if verify {
        builder = builder.verification(ImageVerification::new(
            VerificationPolicy::NeverVerifyPreloadedImages,
            records,
        ));
    }
    builder.build()
}

fn question(image_id: &str) -> DecisionRequest {
    DecisionRequest {
        namespace: "team".into(),
        pod: "web".into(),
        uid: "uid-1".into(),
        container: "app".into(),
        image: "r.example/team/app:v1".into(),
        image_id: image_id.into(),
        image_volumes: Vec::new(),
    }
}

const BUDGET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn decisions_come_from_the_records_or_are_refused_in_time() {
    let records = Arc::new(PullRecords::in_memory(Duration::from_secs(3600)));
    let hash = records.hash(crate::CredentialFields {
        username: "u",
        password: "CANARY-decide",
        auth: "",
        server_address: "https://r.example",
        identity_token: "",
        registry_token: "",
    });
    records
        .credentialed(
            "sha256:private",
            "r.example/team/app:v1",
            &hash,
            "team/pull",
        )
        .unwrap();
    records
        .note_preloaded(&["sha256:preloaded".to_owned()].into())
        .unwrap();
    let proxy = proxy(Arc::clone(&records), true);

    // Preloaded (on the node at the first start): every pod, no question asked.
    let d = proxy.decide(question("sha256:preloaded"), BUDGET).await;
    assert!(d.allowed && d.decision == "preloaded", "{d:?}");

    // Unrecorded but not preloaded (it came later by another way): private, so the
    // pod's Secrets are needed, and they cannot be had here.
    let d = proxy
        .decide(question(&format!("sha256:{}", "cd".repeat(32))), BUDGET)
        .await;
    assert!(!d.allowed && d.decision == "failed", "{d:?}");

    // Private, the pod not on record, its Secrets unreachable: refused once the budget
    // is spent, saying so.
    let started = std::time::Instant::now();
    let d = proxy.decide(question("sha256:private"), BUDGET).await;
    assert!(!d.allowed && d.decision == "failed", "{d:?}");
    assert!(started.elapsed() < BUDGET * 3, "{:?}", started.elapsed());
    assert!(
        d.message.contains("team/web") && d.message.contains("300 ms"),
        "{d:?}"
    );

    // The pod on record: allowed from the records alone (the source still hangs).
    records
        .grant("sha256:private", "team/web", "uid-1", "team/pull")
        .unwrap();
    let d = proxy.decide(question("sha256:private"), BUDGET).await;
    assert!(d.allowed && d.decision == "pod_on_record", "{d:?}");
    // Another pod under the same name (a new uid) is not.
    let mut other = question("sha256:private");
    other.uid = "uid-2".into();
    assert!(!proxy.decide(other, BUDGET).await.allowed);

    // No image ID and a runtime that cannot be asked: refused, naming the image.
    let d = proxy.decide(question(""), BUDGET).await;
    assert!(!d.allowed, "{d:?}");
    assert!(
        d.message.contains("r.example/team/app:v1") && d.message.contains("its ID"),
        "{d:?}"
    );

    // An image volume the runtime does not list (here: the runtime cannot be asked):
    // refused, naming the digest, even though the container's own image is allowed.
    let mut volume = question("sha256:preloaded");
    volume.image_volumes = vec![format!("sha256:{}", "ab".repeat(32))];
    let d = proxy.decide(volume, BUDGET).await;
    assert!(
        !d.allowed && d.message.contains("image volume sha256:abab"),
        "{d:?}"
    );
    assert!(!d.message.contains("  "), "one space between words: {d:?}");

    // A request naming no pod is refused, not guessed.
    let mut nameless = question("sha256:preloaded");
    nameless.pod.clear();
    let d = proxy.decide(nameless, BUDGET).await;
    assert!(!d.allowed && d.message.contains("names no pod"), "{d:?}");

    // Verification off: everything, counted as not verified.
    let off = self::proxy(records, false);
    let d = off.decide(question("sha256:private"), BUDGET).await;
    assert!(d.allowed && d.decision == "not_verified", "{d:?}");
    let shown = format!("{d:?}");
    assert!(!shown.contains("CANARY"), "{shown}");
}

/// A runtime that answers PullImage with `pulled` (the image ID, as containerd does,
/// or a repository digest, as CRI-O does), ImageStatus of the ID or the digest with
/// the image, and ListImages with the image: the two shapes of answer, served with
/// the serving layer on a unix socket. (CRI-O itself cannot be had here: its shape is
/// read from its source, `server/image_pull.go` returning the repo digest.)
fn shaped_runtime(
    dir: &std::path::Path,
    id: &'static str,
    digest: &'static str,
    pulled: &'static str,
) -> std::path::PathBuf {
    use regcred_cri_api::runtime::v1::{
        Image, ImageStatusRequest, ImageStatusResponse, ListImagesResponse, PullImageResponse,
    };
    let socket = dir.join("runtime.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let image = move || Image {
        id: id.into(),
        repo_digests: vec![digest.into()],
        ..Default::default()
    };
    let service = hyper::service::service_fn(
        move |request: hyper::Request<hyper::body::Incoming>| async move {
            let path = request.uri().path().to_owned();
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let message = crate::grpc::single_message(&body).unwrap_or_default();
            let answer = match path.as_str() {
                regcred_cri_api::methods::PULL_IMAGE => PullImageResponse {
                    image_ref: pulled.into(),
                }
                .encode_to_vec(),
                regcred_cri_api::methods::IMAGE_STATUS => {
                    let asked = ImageStatusRequest::decode(&message[..])
                        .unwrap()
                        .image
                        .unwrap_or_default()
                        .image;
                    ImageStatusResponse {
                        image: (asked == id || asked == digest).then(image),
                        ..Default::default()
                    }
                    .encode_to_vec()
                }
                regcred_cri_api::methods::LIST_IMAGES => ListImagesResponse {
                    images: vec![image()],
                }
                .encode_to_vec(),
                _ => Vec::new(),
            };
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
            let mut response = hyper::Response::new(crate::grpc::ProxyBody::Buffered {
                data: Some(crate::grpc::frame(&answer)),
                trailers: Some(trailers),
            });
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/grpc"),
            );
            Ok::<_, std::convert::Infallible>(response)
        },
    );
    tokio::spawn(async move {
        regcred_serve::HttpServer::new("shaped-runtime")
            .protocols(regcred_serve::Protocols::Http2Only)
            .serve(listener, service, std::future::pending())
            .await;
    });
    socket
}

/// Issue 23, finding 2: a pull answered with a repository digest (CRI-O) and one
/// answered with the image ID (containerd) record the same thing: the record is keyed
/// by the ID (asked of ImageStatus) with the digest as an alias, start-up pruning
/// keeps it, and a CreateContainer naming either finds it, so the image is private,
/// never taken for preloaded.
#[tokio::test]
async fn records_are_keyed_by_image_id_whichever_reference_the_pull_answers() {
    use crate::records::ImageAccess;
    use regcred_cri_api::runtime::v1::{ImageSpec, PullImageRequest};
    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const DIGEST: &str = "r.example/team/app@sha256:2222222222222222222222222222222222222222222222222222222222222222";
    for (shape, pulled) in [("containerd", ID), ("cri-o", DIGEST)] {
        let dir = tempfile::tempdir().unwrap();
        let socket = shaped_runtime(dir.path(), ID, DIGEST, pulled);
        let records = Arc::new(PullRecords::in_memory(Duration::from_secs(3600)));
        // The image came after the first start: not preloaded.
        records.note_preloaded(&BTreeSet::new()).unwrap();
        let proxy = CriProxy::builder(
            &socket,
            Arc::new(Hanging),
            regcred_host::PolicyRunner::Native,
        )
        .verification(ImageVerification::new(
            VerificationPolicy::NeverVerifyPreloadedImages,
            Arc::clone(&records),
        ))
        .build();
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: "r.example/team/app:v1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = proxy
            .inner
            .upstream
            .attempt(
                &RequestHead::unary(regcred_cri_api::methods::PULL_IMAGE),
                crate::grpc::frame(&request.encode_to_vec()),
            )
            .await
            .unwrap_or_else(|_| panic!("{shape}: the runtime did not answer"));
        proxy
            .inner
            .images
            .record_pull(
                &proxy.inner.upstream,
                &answer.response,
                "r.example/team/app:v1",
                Some(("hmac-sha256:00", "team/pull")),
            )
            .await;
        assert_eq!(records.len(), 1, "{shape}: one record");
        assert_eq!(records.access(ID), ImageAccess::Private, "{shape}: by ID");
        if shape == "cri-o" {
            assert_eq!(
                records.access(DIGEST),
                ImageAccess::Private,
                "{shape}: by digest"
            );
        }
        // Start-up pruning lists the runtime's images by ID: the record stays.
        proxy.inner.images.prune(&proxy.inner.upstream).await;
        assert_eq!(records.access(ID), ImageAccess::Private, "{shape}: pruned");
        // CreateContainer names the ID (or, right after a CRI-O pull, the digest): a
        // pod without credentials on record is not let through as preloaded.
        for named in [ID, pulled] {
            let d = proxy.decide(question(named), BUDGET).await;
            assert!(
                !d.allowed && d.decision != "preloaded",
                "{shape}, {named}: {d:?}"
            );
        }
    }
}

/// Issue 23, finding 5: while the records cannot be written, a decision that lets
/// a pod use a private image is refused (a restart would forget it), and the
/// metrics say so; once a write succeeds the same decision is allowed.
#[tokio::test]
async fn private_decisions_wait_for_the_records_to_be_written() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("records");
    let records = Arc::new(PullRecords::open(&dir, Duration::from_secs(3600)).unwrap());
    records.note_preloaded(&BTreeSet::new()).unwrap();
    records
        .grant("sha256:private", "team/web", "uid-1", "team/pull")
        .unwrap();
    let proxy = proxy(Arc::clone(&records), true);
    let d = proxy.decide(question("sha256:private"), BUDGET).await;
    assert!(d.allowed && d.decision == "pod_on_record", "{d:?}");

    // The file cannot be replaced any more (a directory in its way), and a write
    // fails. (The writer thread writes the grant in its own time: wait for it first.)
    records.flush().unwrap();
    let file = dir.join(crate::records::RECORDS_FILE);
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("in-the-way"), "").unwrap();
    proxy
        .inner
        .images
        .keep(records.public("sha256:other", "r.example/other:v1"));
    assert!(records.flush().is_err());
    let d = proxy.decide(question("sha256:private"), BUDGET).await;
    assert!(!d.allowed, "{d:?}");
    assert!(d.message.contains("cannot be written"), "{d:?}");
    let metrics = proxy.metrics().encode();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("regcred_cri_proxy_records_write_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        metrics.contains("regcred_cri_proxy_records_unwritten 1") && failures >= 1,
        "{metrics}"
    );

    std::fs::remove_dir_all(&file).unwrap();
    let d = proxy.decide(question("sha256:private"), BUDGET).await;
    assert!(d.allowed && d.decision == "pod_on_record", "{d:?}");
    assert!(
        proxy
            .metrics()
            .encode()
            .contains("regcred_cri_proxy_records_unwritten 0")
    );
}

/// One raw HTTP/1.1 exchange on the decision socket.
async fn exchange(socket: &std::path::Path, request: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn the_socket_answers_json_and_names_what_is_wrong_with_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("decisions.sock");
    let listener = regcred_serve::bind_unix(&socket).await.unwrap();
    let records = Arc::new(PullRecords::in_memory(Duration::from_secs(3600)));
    records
        .note_preloaded(&["sha256:preloaded".to_owned()].into())
        .unwrap();
    let proxy = proxy(records, true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        proxy
            .serve_decisions(listener, BUDGET, async {
                let _ = stopped.await;
            })
            .await;
    });
    let post = |body: &str| {
        format!(
            "POST {DECIDE_PATH} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let body = serde_json::to_string(&question("sha256:preloaded")).unwrap();
    let answer = exchange(&socket, &post(&body)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#"{"allowed":true,"decision":"preloaded"}"#),
        "{answer}"
    );

    let answer = exchange(&socket, &post(r#"{"pod":"web"}"#)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("missing field `namespace`"), "{answer}");

    let answer = exchange(
        &socket,
        "GET /v1/decide HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let answer = exchange(
        &socket,
        "POST /v2/other HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    let _ = stop.send(());
    server.await.unwrap();
}
