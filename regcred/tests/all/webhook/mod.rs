//! The admission webhook over real HTTPS on loopback: every example through the
//! API server's AdmissionReview shape, bad input, certificate rotation, the canary
//! that must never come back out, and the real `regcred webhook` binary.
//!
//! Certificates are made here by rcgen; the client trusts exactly the one it is told.

mod bad_input;
mod binary;
mod bounds;
mod examples;
mod rotation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regcred_host::PolicyRunner;
use regcred_types::PolicyConfig;
use regcred_webhook::{SecretAdmission, Webhook};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

#[path = "../../support/webhook_client.rs"]
mod webhook_client;
pub(crate) use webhook_client::{WebhookClient as Client, webhook_client_config as client_config};

/// A self-signed serving certificate for `localhost` and `127.0.0.1`.
pub(crate) struct TestCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl TestCert {
    pub(crate) fn new(common_name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes `tls.crt` and `tls.key` into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A webhook served in this test's runtime on a free loopback port.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) cert: TestCert,
    pub(crate) dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start(admission: SecretAdmission) -> Self {
        Self::start_with(admission, |b| b).await
    }

    pub(crate) async fn start_with(
        admission: SecretAdmission,
        configure: impl FnOnce(regcred_webhook::WebhookBuilder) -> regcred_webhook::WebhookBuilder,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::new("regcred webhook test");
        let (cert_path, key_path) = cert.write(dir.path());
        let builder = Webhook::builder(admission, cert_path, key_path)
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)));
        let webhook = configure(builder).bind().await.unwrap();
        let addr = webhook.local_addr();
        tokio::spawn(webhook.serve(std::future::pending()));
        Self { addr, cert, dir }
    }

    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.addr, client_config(&self.cert.der))
            .await
            .unwrap()
    }
}

/// The wasm policy (what the CLI and the proxy run), with `config`.
pub(crate) fn admission(config: PolicyConfig) -> SecretAdmission {
    SecretAdmission::new(PolicyRunner::wasm().unwrap()).policy_config(config)
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An AdmissionReview as the API server sends it for a CREATE of `object`.
pub(crate) fn create_review(uid: &str, object: &Value) -> Value {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let kind = object["kind"].as_str().unwrap_or("Secret");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": format!("{}s", kind.to_lowercase())},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        }
    })
}

pub(crate) fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

pub(crate) fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// A captured review from the webhook crate's `tests/data/admission/`.
pub(crate) fn captured(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../webhook/tests/data/admission")
        .join(name);
    parse(&std::fs::read(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_reviews_get_their_verdicts_and_uids() {
    let server = TestServer::start(admission(PolicyConfig::default())).await;
    let mut client = server.client().await;
    for (file, allowed) in [
        ("create-regcredentials.json", true),
        ("update-regcredentials-invalid.json", false),
        ("delete-regcredentials.json", true),
        ("create-opaque-secret-dry-run.json", true),
        ("create-configmap.json", true),
    ] {
        let review = captured(file);
        let (status, answer) = client.review(body(&review)).await;
        assert_eq!(status, 200, "{file}");
        let answer = parse(&answer);
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{file}");
        assert_eq!(answer["kind"], "AdmissionReview", "{file}");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "{file}"
        );
        assert_eq!(answer["response"]["allowed"], allowed, "{file}: {answer}");
    }
    let (_, answer) = client
        .review(body(&captured("update-regcredentials-invalid.json")))
        .await;
    let answer = parse(&answer);
    let status = &answer["response"]["status"];
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "Secret");
    assert_eq!(status["details"]["name"], "quay-robot");
    assert_eq!(
        status["details"]["causes"],
        json!([{
            "field": "data[username]",
            "reason": "FieldValueInvalid",
            "message": status["details"]["causes"][0]["message"],
        }])
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Secret \"quay-robot\" is invalid: data[username]: "),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_and_unknown_paths_are_404() {
    let server = TestServer::start(admission(PolicyConfig::default())).await;
    let mut client = server.client().await;
    for path in ["/healthz", "/readyz"] {
        let (status, text) = client.send("GET", path, Vec::new()).await.unwrap();
        assert_eq!(status, 200, "{path}");
        assert_eq!(text, b"ok\n");
    }
    let (status, text) = client.send("GET", "/mutate", Vec::new()).await.unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&text).contains("POST /validate"));
    let (status, _) = client.send("GET", "/validate", Vec::new()).await.unwrap();
    assert_eq!(status, 405);
}

/// The webhook keeps one runner; `Arc` clones of it serve many connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_each_get_their_own_answer() {
    let server = Arc::new(TestServer::start(admission(PolicyConfig::default())).await);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = server.client().await;
            for i in 0..25 {
                let uid = format!("uid-{worker}-{i}");
                let mut review = captured(if i % 2 == 0 {
                    "create-regcredentials.json"
                } else {
                    "update-regcredentials-invalid.json"
                });
                review["request"]["uid"] = json!(uid);
                let (status, answer) = client.review(body(&review)).await;
                assert_eq!(status, 200);
                let answer = parse(&answer);
                assert_eq!(answer["response"]["uid"], uid);
                assert_eq!(answer["response"]["allowed"], i % 2 == 0);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
