//! Bodies that are not what the API server sends: a 400 (413 when too large) whose
//! AdmissionReview says what is wrong and carries the uid when the body has one, and the
//! server answers the next request as before.

use rstest::rstest;
use serde_json::json;

use regcred_types::PolicyConfig;

use super::{TestServer, admission, body, captured, parse};

fn without_object() -> Vec<u8> {
    let mut review = captured("create-regcredentials.json");
    review["request"].as_object_mut().unwrap().remove("object");
    body(&review)
}

fn null_object() -> Vec<u8> {
    let mut review = captured("update-regcredentials-invalid.json");
    review["request"]["object"] = json!(null);
    body(&review)
}

fn v1beta1() -> Vec<u8> {
    let mut review = captured("create-regcredentials.json");
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    body(&review)
}

fn data_not_a_map() -> Vec<u8> {
    let mut review = captured("create-regcredentials.json");
    review["request"]["object"]["data"] = json!("CANARY-in-a-wrong-place");
    body(&review)
}

fn no_request() -> Vec<u8> {
    body(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}))
}

#[rstest]
#[case::not_json(b"this is not JSON".to_vec(), None, "is not an admission.k8s.io/v1 AdmissionReview")]
#[case::empty(Vec::new(), None, "is not an admission.k8s.io/v1 AdmissionReview")]
#[case::another_object(br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {}}"#.to_vec(), None, "not AdmissionReview")]
#[case::json_array(b"[1, 2, 3]".to_vec(), None, "is not an admission.k8s.io/v1 AdmissionReview")]
#[case::wrong_api_version(
    v1beta1(),
    Some("3c8ffb6a-0d38-4bcb-8d5c-3fe2b1c1a0a7"),
    "admissionReviewVersions: [v1]"
)]
#[case::no_request(no_request(), None, "has no request")]
#[case::no_object(
    without_object(),
    Some("3c8ffb6a-0d38-4bcb-8d5c-3fe2b1c1a0a7"),
    "CREATE request has no object"
)]
#[case::null_object(
    null_object(),
    Some("b3f9a1d2-5c47-4e8a-9f1e-2d6c8a7b4e10"),
    "UPDATE request has no object"
)]
#[case::data_not_a_map(
    data_not_a_map(),
    Some("3c8ffb6a-0d38-4bcb-8d5c-3fe2b1c1a0a7"),
    "object: invalid type"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_with_a_clear_message(
    #[case] request: Vec<u8>,
    #[case] uid: Option<&str>,
    #[case] says: &str,
) {
    let server = TestServer::start(admission(PolicyConfig::default())).await;
    let mut client = server.client().await;
    let (status, answer) = client.review(request).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(!text.contains("CANARY"), "{text}");
    let answer = parse(&answer);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["uid"], uid.unwrap_or(""));
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(response["status"]["reason"], "BadRequest");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");

    // The same connection goes on working.
    let review = captured("create-regcredentials.json");
    let (status, answer) = client.review(body(&review)).await;
    assert_eq!(status, 200);
    assert_eq!(parse(&answer)["response"]["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_the_server_keeps_serving() {
    let server = TestServer::start(admission(PolicyConfig::default())).await;
    let mut client = server.client().await;
    // A valid review padded past 3 MiB with an annotation.
    let mut review = captured("create-regcredentials.json");
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"padding": "x".repeat(3 << 20)});
    let (status, answer) = client.review(body(&review)).await;
    assert_eq!(status, 413);
    let answer = parse(&answer);
    assert_eq!(answer["response"]["status"]["code"], 413);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("larger than the webhook's limit of 3145728 bytes"),
        "{message}"
    );

    let mut client = server.client().await;
    let (status, answer) = client
        .review(body(&captured("create-regcredentials.json")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(parse(&answer)["response"]["allowed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_body_limit_is_enforced() {
    let server =
        TestServer::start_with(admission(PolicyConfig::default()), |b| b.body_limit(1024)).await;
    let mut client = server.client().await;
    let (status, _) = client.review(vec![b' '; 1025]).await;
    assert_eq!(status, 413);
    let mut client = server.client().await;
    let (status, _) = client.review(vec![b' '; 1000]).await;
    assert_eq!(status, 400, "small enough, but not a review");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_the_right_trust_fails_and_the_server_keeps_serving() {
    let server = TestServer::start(admission(PolicyConfig::default())).await;
    let stranger = super::TestCert::new("someone else");
    let refused = super::Client::connect(server.addr, super::client_config(&stranger.der)).await;
    assert!(
        refused.is_err(),
        "a client trusting another certificate connected"
    );
    let (status, _) = server
        .client()
        .await
        .send("GET", "/healthz", Vec::new())
        .await
        .unwrap();
    assert_eq!(status, 200);
}
