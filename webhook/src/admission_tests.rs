//! Tests of `admission.rs` (its `tests` module, in a file of its own).

use super::*;

/// A review as kube-apiserver 1.33 sends it for `kubectl create secret generic`
/// with `--type kubernetes.io/regcredentials` (stringData already merged into data).
const CAPTURED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/admission/create-regcredentials.json"
));

fn admission() -> SecretAdmission {
    SecretAdmission::new(PolicyRunner::Native)
}

fn answer(decision: &Decision) -> serde_json::Value {
    serde_json::from_slice(&decision.to_json()).unwrap()
}

#[test]
fn a_captured_review_is_allowed_with_its_uid() {
    let decision = admission().review(CAPTURED.as_bytes()).unwrap();
    assert_eq!(decision.outcome(), Outcome::Allowed);
    let answer = answer(&decision);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        "3c8ffb6a-0d38-4bcb-8d5c-3fe2b1c1a0a7"
    );
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer.get("request").is_none());
}

/// An UPDATE of the captured Secret after `kubectl delete` with a finalizer in place:
/// `old` as stored, `new` as sent (with the deletion timestamp on both).
fn terminating_update(old: serde_json::Value, new: serde_json::Value) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_str(CAPTURED).unwrap();
    let request = &mut review["request"];
    request["operation"] = "UPDATE".into();
    let object = request["object"].take();
    for (slot, changes) in [("oldObject", old), ("object", new)] {
        let mut version = object.clone();
        version["metadata"]["deletionTimestamp"] = "2025-06-02T10:00:00Z".into();
        for (key, value) in changes.as_object().unwrap() {
            if key == "finalizers" {
                version["metadata"]["finalizers"] = value.clone();
            } else {
                version[key] = value.clone();
            }
        }
        request[slot] = version;
    }
    serde_json::to_vec(&review).unwrap()
}

#[test]
fn finalizer_removal_from_a_terminating_secret_is_not_judged() {
    // Invalid by the rules (a ':' in the user name), but only a finalizer goes.
    let bad = serde_json::json!({"username": "YTpi", "password": "cHc=", "serverAddress": "cXVheS5pbw=="});
    let body = terminating_update(
        serde_json::json!({"data": bad, "finalizers": ["example.com/keep"]}),
        serde_json::json!({"data": bad, "finalizers": []}),
    );
    let decision = admission().review(&body).unwrap();
    assert_eq!(decision.outcome(), Outcome::Skipped);
    assert_eq!(answer(&decision)["response"]["allowed"], true);
}

#[test]
fn data_changes_of_a_terminating_secret_are_judged() {
    let good = serde_json::json!({"username": "cm9ib3Q=", "password": "cHc=", "serverAddress": "cXVheS5pbw=="});
    let bad = serde_json::json!({"username": "YTpi", "password": "cHc=", "serverAddress": "cXVheS5pbw=="});
    let finalizers = serde_json::json!(["example.com/keep"]);
    let body = terminating_update(
        serde_json::json!({"data": good, "finalizers": finalizers}),
        serde_json::json!({"data": bad, "finalizers": finalizers}),
    );
    let decision = admission().review(&body).unwrap();
    assert_eq!(decision.outcome(), Outcome::Denied);
    assert_eq!(decision.causes(), ["data[username] FieldValueInvalid"]);
    // A type change is judged too (here into a checked type from an unchecked one).
    let body = terminating_update(
        serde_json::json!({"data": bad, "type": "Opaque"}),
        serde_json::json!({"data": bad}),
    );
    assert_eq!(
        admission().review(&body).unwrap().outcome(),
        Outcome::Denied
    );
    // Without an old object to compare with, the update is judged.
    let mut review: serde_json::Value = serde_json::from_slice(&terminating_update(
        serde_json::json!({"data": bad}),
        serde_json::json!({"data": bad}),
    ))
    .unwrap();
    review["request"]["oldObject"] = serde_json::Value::Null;
    let body = serde_json::to_vec(&review).unwrap();
    assert_eq!(
        admission().review(&body).unwrap().outcome(),
        Outcome::Denied
    );
}

#[test]
fn json_errors_never_quote_string_values() {
    let err = serde_json::from_str::<u16>(r#""hunter2""#).unwrap_err();
    let text = describe_json_error(&err);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("invalid type"), "{text}");
}

#[test]
fn other_versions_and_kinds_are_refused_with_the_uid() {
    let v1beta1 = CAPTURED.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
    let err = admission().review(v1beta1.as_bytes()).unwrap_err();
    assert!(matches!(err, ReviewError::WrongApiVersion { .. }), "{err}");
    assert_eq!(err.uid(), Some("3c8ffb6a-0d38-4bcb-8d5c-3fe2b1c1a0a7"));
    let pod_review = CAPTURED.replacen("\"kind\": \"AdmissionReview\"", "\"kind\": \"Pod\"", 1);
    let err = admission().review(pod_review.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("not AdmissionReview"), "{err}");
    assert!(err.is_bad_request());
}

#[test]
fn error_reviews_carry_code_reason_and_uid() {
    let body = error_review(Some("u-1"), 400, "broken");
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["response"]["uid"], "u-1");
    assert_eq!(value["response"]["allowed"], false);
    assert_eq!(value["response"]["status"]["code"], 400);
    assert_eq!(value["response"]["status"]["reason"], "BadRequest");
    assert_eq!(value["response"]["status"]["message"], "broken");
}

#[test]
fn long_or_odd_text_is_shortened() {
    assert_eq!(shorten("v1"), "v1");
    assert_eq!(shorten(&"x".repeat(100)), format!("{}...", "x".repeat(64)));
    assert_eq!(shorten("a\"b\n"), "ab...");
}
