//! Tests of `credential_provider.rs` (its `tests` module, in a file of its own).

use super::*;

/// A request as kubelet 1.37 writes it (captured from the kit's kubelet with a
/// recording plugin; the token's signature shortened).
const KUBELET_REQUEST: &str = r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"127.0.0.1:40123/private/hello:v1","serviceAccountToken":"eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjLmNsdXN0ZXIubG9jYWwiXSwiZXhwIjoxNzY1MDAwMDAwLCJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCIsImt1YmVybmV0ZXMuaW8iOnsibmFtZXNwYWNlIjoidGVhbSIsIm5vZGUiOnsibmFtZSI6InJlZ2NyZWQta2l0IiwidWlkIjoiYSJ9LCJwb2QiOnsibmFtZSI6IndlYiIsInVpZCI6ImIifSwic2VydmljZWFjY291bnQiOnsibmFtZSI6ImJ1aWxkZXIiLCJ1aWQiOiJjIn19LCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbTpidWlsZGVyIn0.c2ln","serviceAccountAnnotations":{"regcred.dev/pull-secrets":"corp, quay ,corp"}}"#;

#[test]
fn a_kubelet_request_names_its_service_account_and_secrets() {
    let request = CredentialProviderRequest::parse(KUBELET_REQUEST.as_bytes()).unwrap();
    assert_eq!(request.image, "127.0.0.1:40123/private/hello:v1");
    let (ns, sa) = request.service_account().unwrap();
    assert_eq!((ns.as_str(), sa.as_str()), ("team", "builder"));
    assert_eq!(
        request.pull_secret_names(&ns, &sa).unwrap(),
        vec!["corp".to_owned(), "quay".to_owned()]
    );
}

#[test]
fn requests_that_are_not_kubelets_v1_are_refused_with_what_is_wrong() {
    let cases = [
        (r#"not json"#, "expected ident"),
        (
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","kind":"CredentialProviderRequest","image":"a"}"#,
            "this plugin speaks credentialprovider.kubelet.k8s.io/v1",
        ),
        (
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"Other","image":"a"}"#,
            "expected CredentialProviderRequest",
        ),
        (
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"a","extra":1}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":""}"#,
            "image is empty",
        ),
    ];
    for (input, expected) in cases {
        let err = CredentialProviderRequest::parse(input.as_bytes()).unwrap_err();
        assert!(err.to_string().contains(expected), "{input}: {err}");
    }
    let no_token = CredentialProviderRequest::parse(
            br#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"r.io/a:v1"}"#,
        )
        .unwrap();
    let err = no_token.service_account().unwrap_err();
    assert!(
        err.to_string()
            .contains("tokenAttributes.serviceAccountTokenAudience"),
        "{err}"
    );
    let mut bad = no_token.clone();
    bad.service_account_token = "CANARY-not-a-jwt".into();
    let err = bad.service_account().unwrap_err().to_string();
    assert!(
        err.contains("not a Kubernetes service-account JWT") && !err.contains("CANARY"),
        "{err}"
    );
    let mut annotated = no_token;
    annotated
        .service_account_annotations
        .insert(PULL_SECRETS_ANNOTATION.into(), "ok,Not_A_Name".into());
    let err = annotated.pull_secret_names("team", "builder").unwrap_err();
    assert!(err.to_string().contains("\"Not_A_Name\""), "{err}");
    let mut with_token = annotated.clone();
    with_token.service_account_token = "CANARY-token".into();
    let shown = format!("{with_token:?}");
    assert!(
        !shown.contains("CANARY") && shown.contains("redacted"),
        "{shown}"
    );
}

#[test]
fn the_repository_is_the_image_without_tag_or_digest() {
    for (image, repository) in [
        (
            "127.0.0.1:5000/private/hello:v1",
            "127.0.0.1:5000/private/hello",
        ),
        (
            "127.0.0.1:5000/private/hello",
            "127.0.0.1:5000/private/hello",
        ),
        ("quay.io/team/app@sha256:abcd", "quay.io/team/app"),
        ("quay.io/team/app:v1@sha256:abcd", "quay.io/team/app"),
        ("busybox", "busybox"),
    ] {
        assert_eq!(repository_of(image), repository, "{image}");
    }
}

fn candidate(username: &str, password: &str, identity: &str, auth: &str) -> Candidate {
    Candidate {
        secret: "team/corp".into(),
        matched: "127.0.0.1:5000/private".into(),
        auth_config: regcred_types::AuthConfig {
            username: username.into(),
            password: password.to_owned().into(),
            identity_token: identity.to_owned().into(),
            auth: auth.to_owned().into(),
            ..Default::default()
        },
    }
}

#[test]
fn the_answer_is_the_first_candidate_per_image_and_never_a_token() {
    let request = CredentialProviderRequest::parse(KUBELET_REQUEST.as_bytes()).unwrap();
    let ttl = std::time::Duration::from_secs(60);
    let answer = answer(
        &request,
        &[
            candidate("robot", "CANARY-pw", "", ""),
            candidate("other", "x", "", ""),
        ],
        ttl,
    )
    .unwrap();
    let json = serde_json::to_value(&answer).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "CredentialProviderResponse",
            "cacheKeyType": "Image",
            "cacheDuration": "60s",
            "auth": {"127.0.0.1:40123/private/hello": {"username": "robot", "password": "CANARY-pw"}}
        })
    );
    assert!(!format!("{answer:?}").contains("CANARY"), "{answer:?}");

    // A Docker config's `auth` only.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode("robot:pw2");
    let answer2 = super::answer(&request, &[candidate("", "", "", &encoded)], ttl).unwrap();
    assert_eq!(
        answer2.auth.unwrap().values().next().unwrap().password,
        "pw2"
    );

    // Nothing matches: no auth, still an answer.
    let none = super::answer(&request, &[], ttl).unwrap();
    assert!(none.auth.is_none());
    assert!(!serde_json::to_string(&none).unwrap().contains("auth"));

    // The first match is a token only: an error naming the Secret, not the next one.
    let err = super::answer(
        &request,
        &[
            candidate("", "", "CANARY-refresh", ""),
            candidate("robot", "pw", "", ""),
        ],
        ttl,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("team/corp")
            && err.contains("an identity token")
            && err.contains("node agent"),
        "{err}"
    );
    assert!(!err.contains("CANARY"), "{err}");
}
