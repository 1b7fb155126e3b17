//! A stand-in for the Kubernetes API server, for the proxy's `kube` pull secret source.
//!
//! No kube-apiserver can be installed on the machines these tests run on. This server
//! answers the two requests the source makes, `GET /api/v1/namespaces/NS/pods/NAME` and
//! `GET /api/v1/namespaces/NS/secrets/NAME`, with the JSON the real API server sends:
//! k8s-openapi `Pod` and `Secret` objects (`data` base64, as the API returns it), and
//! k8s-openapi `Status` objects for 404 (`NotFound`), 403 (`Forbidden`, as RBAC or the
//! Node authorizer refuse, for Secrets and pods) and 503 (an outage).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status, StatusDetails};

type Key = (String, String);

#[derive(Default)]
struct ApiState {
    pods: Mutex<HashMap<Key, Pod>>,
    secrets: Mutex<HashMap<Key, Secret>>,
    /// (kind, namespace, name) answered with 403.
    forbidden: Mutex<HashSet<(String, String, String)>>,
    outage: AtomicBool,
    requests: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake API server on `http://127.0.0.1:PORT`. Dropping it stops it.
pub struct FakeKubeApi {
    addr: SocketAddr,
    state: Arc<ApiState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeKubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubeApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeKubeApi {
    /// Starts serving on a free loopback port, in a thread with its own runtime.
    pub fn start() -> Self {
        let state = Arc::new(ApiState::default());
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the fake API");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("fake API address");
        let router = axum::Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}",
                axum::routing::get(get_pod),
            )
            .route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                axum::routing::get(get_secret),
            )
            .with_state(Arc::clone(&state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("fake-kube-api-{addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake API runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("fake API listener");
                    tokio::select! {
                        _ = axum::serve(listener, router) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("starting the fake API thread");
        Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, the cluster's `server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces a pod (by its namespace and name).
    pub fn put_pod(&self, pod: Pod) {
        lock(&self.state.pods).insert(key(&pod.metadata), pod);
    }

    /// Adds or replaces a Secret (by its namespace and name): a rotation.
    pub fn put_secret(&self, secret: Secret) {
        lock(&self.state.secrets).insert(key(&secret.metadata), secret);
    }

    /// Answers GETs of this Secret with 403 Forbidden, as RBAC would.
    pub fn forbid_secret(&self, namespace: &str, name: &str) {
        lock(&self.state.forbidden).insert(("secrets".into(), namespace.into(), name.into()));
    }

    /// Answers GETs of this pod with 403 Forbidden, as the Node authorizer does for a
    /// pod not bound to the node.
    pub fn forbid_pod(&self, namespace: &str, name: &str) {
        lock(&self.state.forbidden).insert(("pods".into(), namespace.into(), name.into()));
    }

    /// Removes a pod (its GETs answer 404 from now on).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        lock(&self.state.pods).remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// While on, answers every request with 503 (an API server outage).
    pub fn set_outage(&self, outage: bool) {
        self.state.outage.store(outage, Ordering::SeqCst);
    }

    /// The paths requested so far, oldest first.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.requests).clone()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn key(metadata: &ObjectMeta) -> Key {
    (
        metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        metadata.name.clone().unwrap_or_default(),
    )
}

/// A pod with these `imagePullSecrets`, as the API returns it.
pub fn api_pod(namespace: &str, name: &str, uid: &str, pull_secrets: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: Some(uid.to_owned()),
            resource_version: Some("1".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            image_pull_secrets: Some(
                pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference {
                        name: (*name).to_owned(),
                    })
                    .collect(),
            ),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// A `kubernetes.io/regcredentials` Secret with these keys, as the API returns it
/// (values under `data`, base64 on the wire).
pub fn api_regcred_secret(namespace: &str, name: &str, values: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version: Some("1".to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/regcredentials".to_owned()),
        data: Some(
            values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

async fn get_pod(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    if let Some(refused) = record(&state, "pods", &namespace, &name) {
        return refused;
    }
    if let Some(refused) = forbidden(&state, "pods", &namespace, &name) {
        return refused;
    }
    match lock(&state.pods).get(&(namespace, name.clone())) {
        Some(pod) => axum::Json(pod.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "pods",
            &name,
            &format!("pods \"{name}\" not found"),
        ),
    }
}

async fn get_secret(
    State(state): State<Arc<ApiState>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    if let Some(refused) = record(&state, "secrets", &namespace, &name) {
        return refused;
    }
    if let Some(refused) = forbidden(&state, "secrets", &namespace, &name) {
        return refused;
    }
    match lock(&state.secrets).get(&(namespace, name.clone())) {
        Some(secret) => axum::Json(secret.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "secrets",
            &name,
            &format!("secrets \"{name}\" not found"),
        ),
    }
}

/// The 403 to answer when this object is forbidden.
fn forbidden(state: &ApiState, kind: &str, namespace: &str, name: &str) -> Option<Response> {
    let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
    lock(&state.forbidden).contains(&key).then(|| {
        status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            kind,
            name,
            &format!(
                "{kind} \"{name}\" is forbidden: User \"system:serviceaccount:regcred-system:\
                 regcred-cri-proxy\" cannot get resource \"{kind}\" in API group \"\" in the \
                 namespace \"{namespace}\""
            ),
        )
    })
}

/// Records the request; during an outage, the 503 to answer.
fn record(state: &ApiState, kind: &str, namespace: &str, name: &str) -> Option<Response> {
    lock(&state.requests).push(format!("/api/v1/namespaces/{namespace}/{kind}/{name}"));
    state.outage.load(Ordering::SeqCst).then(|| {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            kind,
            name,
            "the server is currently unable to handle the request",
        )
    })
}

/// A `Status` object as the API server sends with an error code.
fn status(code: StatusCode, reason: &str, kind: &str, name: &str, message: &str) -> Response {
    let body = Status {
        code: Some(i32::from(code.as_u16())),
        details: Some(StatusDetails {
            kind: Some(kind.to_owned()),
            name: Some(name.to_owned()),
            ..StatusDetails::default()
        }),
        message: Some(message.to_owned()),
        reason: Some(reason.to_owned()),
        status: Some("Failure".to_owned()),
        ..Status::default()
    };
    (code, axum::Json(body)).into_response()
}
