//! The real Kubernetes API server for the proxy's `kube` pull secret source: `etcd` and
//! `kube-apiserver` on loopback ports, in a temporary directory.
//!
//! Both programs come from `PATH` (`scripts/test` puts `scripts/cluster bin-dir` on it;
//! `scripts/cluster build` builds them); a missing one fails the test. The harness makes
//! its own CA and serving certificate (rcgen), a service account signing key, a static
//! token file with two users, and an audit policy:
//!
//! - the admin ([`ADMIN_USER`], group `system:masters`) is the harness's own client: it
//!   creates namespaces, pods, Secrets and the RBAC objects;
//! - the proxy user ([`PROXY_USER`]) is what the source under test authenticates as, with
//!   the rights the deployment's RBAC grants (get pods, get secrets) bound per namespace.
//!   [`KubeApi::forbid_secret`] and [`KubeApi::forbid_pod`] narrow that Role with
//!   `resourceNames`, so a 403 is the API server's own RBAC refusal;
//! - every request of the proxy user is written to the audit log (level `Metadata`: no
//!   bodies, so no Secret data), which [`KubeApi::requests`] reads back.
//!
//! An outage is the API server process stopped ([`KubeApi::stop_apiserver`]): connections
//! are refused. [`KubeApi::restart_apiserver`] starts it again on the same port with the
//! same etcd, so everything created before is still there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, LocalObjectReference, Namespace, Pod, PodSpec, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tempfile::TempDir;

use super::process::{
    CapturedLogs, ChildProcess, fixture_dir, free_port, print_logs_if_panicking,
    require_program_from,
};

/// The user the harness administers the API as (group `system:masters`).
pub const ADMIN_USER: &str = "regcred-tests-admin";
/// The user the proxy's source authenticates as; RBAC decides what it may read.
pub const PROXY_USER: &str = "regcred-cri-proxy";

/// How a missing `etcd` or `kube-apiserver` is obtained.
const BUILD_HINT: &str = "build them with `scripts/cluster build etcd kube-apiserver` and put \
                          `$(scripts/cluster bin-dir)` on PATH (scripts/test does)";
/// How long etcd may take to listen.
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long kube-apiserver may take until `/readyz` answers `ok`.
const APISERVER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an RBAC change may take to reach the API server's authorizer.
const RBAC_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times a start is retried when a picked port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;
/// The name of the Role (and RoleBinding) granting the proxy user its reads.
const PROXY_ROLE: &str = "regcred-cri-proxy";
/// The field manager of the harness's server-side applies.
const FIELD_MANAGER: &str = "regcred-tests";

mod files;
mod rbac;

pub use files::config_from_file;
use files::{
    apiserver_log_path, audit_log_path, audit_policy, client_from_yaml, kubeconfig_yaml,
    random_token, spawn_apiserver, start_etcd, wait_until_ready, write_pki, write_private,
};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the harness created per namespace, and what the proxy user may not read.
#[derive(Debug, Default)]
struct Objects {
    /// Namespaces set up (namespace, service account, Role, RoleBinding).
    namespaces: BTreeSet<String>,
    /// (namespace, resource) -> names the harness created.
    created: BTreeMap<(String, String), BTreeSet<String>>,
    /// (namespace, resource) -> names the proxy user is refused.
    forbidden: BTreeMap<(String, String), BTreeSet<String>>,
}

/// One request the proxy user made, from the audit log (stage `ResponseComplete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// The API verb (`get`, `list`, ...).
    pub verb: String,
    /// `/api/v1/namespaces/NS/RESOURCE/NAME` (core group) from the event's `objectRef`.
    pub path: String,
    /// The HTTP status code answered.
    pub code: u16,
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.verb, self.path, self.code)
    }
}

/// A running etcd and kube-apiserver on `https://127.0.0.1:PORT`. Dropping it kills both
/// (by process group) and removes the directory.
pub struct KubeApi {
    // Field order is drop order: the API server dies before etcd, both before the directory.
    apiserver: Option<ChildProcess>,
    etcd: ChildProcess,
    etcd_addr: SocketAddr,
    port: u16,
    apiserver_starts: usize,
    admin: kube::Client,
    proxy_kubeconfig: PathBuf,
    proxy_token: String,
    objects: Mutex<Objects>,
    barriers: AtomicUsize,
    dir: TempDir,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    ///
    /// Call it from the test's own thread (a `#[tokio::test]` body): the programs die with
    /// the thread that spawned them.
    pub async fn start() -> Self {
        let etcd_program = require_program_from("etcd", BUILD_HINT);
        let apiserver_program = require_program_from("kube-apiserver", BUILD_HINT);
        let dir = fixture_dir("kube-api");
        let admin_token = random_token("admin");
        let proxy_token = random_token("proxy");
        let ca_pem = write_pki(dir.path());
        write_private(
            &dir.path().join("tokens.csv"),
            &format!(
                "{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n\
                 {proxy_token},{PROXY_USER},{PROXY_USER}\n"
            ),
        );
        std::fs::write(dir.path().join("audit-policy.yaml"), audit_policy())
            .expect("writing the audit policy");

        let (etcd, etcd_addr) = start_etcd(&etcd_program, dir.path()).await;
        let url = |port: u16| format!("https://127.0.0.1:{port}");
        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let admin_config = kubeconfig_yaml(&url(port), &ca_pem, ADMIN_USER, &admin_token);
            write_private(&dir.path().join("admin.kubeconfig"), &admin_config);
            let admin = client_from_yaml(&admin_config).await;
            let mut apiserver =
                spawn_apiserver(&apiserver_program, dir.path(), etcd_addr, port, attempt);
            match wait_until_ready(&mut apiserver, &admin).await {
                Ok(()) => {
                    let proxy_kubeconfig = dir.path().join("proxy.kubeconfig");
                    write_private(
                        &proxy_kubeconfig,
                        &kubeconfig_yaml(&url(port), &ca_pem, PROXY_USER, &proxy_token),
                    );
                    return Self {
                        apiserver: Some(apiserver),
                        etcd,
                        etcd_addr,
                        port,
                        apiserver_starts: attempt,
                        admin,
                        proxy_kubeconfig,
                        proxy_token,
                        objects: Mutex::default(),
                        barriers: AtomicUsize::new(0),
                        dir,
                    };
                }
                Err(log) if log.contains("address already in use") => last_log = log,
                Err(log) => panic!("kube-apiserver did not become ready; its log:\n{log}"),
            }
        }
        panic!(
            "kube-apiserver found no free port in {PORT_ATTEMPTS} attempts; last log:\n{last_log}"
        )
    }

    /// `https://127.0.0.1:PORT`, the cluster's `server`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig file for [`PROXY_USER`]: the server, the CA (inline) and the user's
    /// bearer token (inline).
    pub fn proxy_kubeconfig(&self) -> &Path {
        &self.proxy_kubeconfig
    }

    /// The proxy user's bearer token, for tests that check it is in no log.
    pub fn proxy_token(&self) -> &str {
        &self.proxy_token
    }

    /// The etcd process's ID.
    pub fn etcd_pid(&self) -> u32 {
        self.etcd.pid()
    }

    /// The kube-apiserver process's ID (`None` while stopped).
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(ChildProcess::pid)
    }

    /// The temporary directory (certificates, tokens, etcd data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The proxy user's client configuration (from [`Self::proxy_kubeconfig`]).
    pub async fn proxy_config(&self) -> kube::Config {
        config_from_file(&self.proxy_kubeconfig).await
    }

    /// Creates a pod with one container and these `imagePullSecrets`; returns its uid (the
    /// API server assigns it; a sandbox of this pod carries it). Nothing schedules or runs
    /// the pod: it only exists in the API.
    pub async fn create_pod(&self, namespace: &str, name: &str, pull_secrets: &[&str]) -> String {
        self.ensure_namespace(namespace).await;
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_owned(),
                    image: Some("registry.example/app:v1".to_owned()),
                    ..Container::default()
                }],
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
        };
        let created = Api::<Pod>::namespaced(self.admin.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {namespace}/{name}: {e}"));
        self.created(namespace, "pods", name).await;
        created
            .metadata
            .uid
            .unwrap_or_else(|| panic!("pod {namespace}/{name} has no uid"))
    }

    /// Deletes a pod (no kubelet holds it, so it is gone at once) and waits until a GET
    /// answers 404; then creates it anew: same name, new uid (returned).
    pub async fn recreate_pod(&self, namespace: &str, name: &str, pull_secrets: &[&str]) -> String {
        self.delete_pod(namespace, name).await;
        self.create_pod(namespace, name, pull_secrets).await
    }

    /// Deletes a pod and waits until it is gone (its GETs answer 404 from then on).
    pub async fn delete_pod(&self, namespace: &str, name: &str) {
        let pods = Api::<Pod>::namespaced(self.admin.clone(), namespace);
        pods.delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap_or_else(|e| panic!("deleting pod {namespace}/{name}: {e}"));
        let started = Instant::now();
        while pods
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("reading pod {namespace}/{name}: {e}"))
            .is_some()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pod {namespace}/{name} is still there 30 s after its deletion"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a Secret, or replaces its contents (a rotation), by server-side apply.
    pub async fn put_secret(&self, secret: Secret) {
        let namespace = secret
            .metadata
            .namespace
            .clone()
            .expect("the Secret's namespace");
        let name = secret.metadata.name.clone().expect("the Secret's name");
        self.ensure_namespace(&namespace).await;
        Api::<Secret>::namespaced(self.admin.clone(), &namespace)
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            // The error names the object; kube's errors carry the API's Status, not the data.
            .unwrap_or_else(|e| panic!("applying Secret {namespace}/{name}: {e}"));
        self.created(&namespace, "secrets", &name).await;
    }

    /// From now on the proxy user may not get this Secret: its Role lists the other
    /// Secrets by name and leaves this one out, so RBAC answers 403. Returns once the API
    /// server's authorizer refuses it.
    pub async fn forbid_secret(&self, namespace: &str, name: &str) {
        self.forbid(namespace, "secrets", name).await;
    }

    /// From now on the proxy user may not get this pod (403 from RBAC, as the Node
    /// authorizer answers for a pod not bound to the node).
    pub async fn forbid_pod(&self, namespace: &str, name: &str) {
        self.forbid(namespace, "pods", name).await;
    }

    /// Stops the kube-apiserver process (an outage: connections to its port are refused).
    /// etcd keeps running, so [`Self::restart_apiserver`] finds everything again.
    pub fn stop_apiserver(&mut self) {
        if let Some(apiserver) = self.apiserver.take() {
            // Dropping kills the process group and reaps it: the port is free afterwards.
            drop(apiserver);
        }
    }

    /// Starts kube-apiserver again on the same port with the same etcd and waits until it
    /// is ready.
    pub async fn restart_apiserver(&mut self) {
        assert!(
            self.apiserver.is_none(),
            "kube-apiserver is already running"
        );
        let program = require_program_from("kube-apiserver", BUILD_HINT);
        self.apiserver_starts += 1;
        let mut apiserver = spawn_apiserver(
            &program,
            self.dir.path(),
            self.etcd_addr,
            self.port,
            self.apiserver_starts,
        );
        if let Err(log) = wait_until_ready(&mut apiserver, &self.admin).await {
            panic!("kube-apiserver did not become ready again; its log:\n{log}");
        }
        self.apiserver = Some(apiserver);
    }

    /// The proxy user's requests so far, oldest first, as `VERB PATH CODE` (for example
    /// `get /api/v1/namespaces/team/pods/app 200`), read from the audit log.
    ///
    /// Every request the proxy user made before this call is included: the harness sends a
    /// marker request as the admin and waits until the audit log holds it.
    pub async fn requests(&self) -> Vec<String> {
        self.proxy_requests()
            .await
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// [`Self::requests`] as values.
    pub async fn proxy_requests(&self) -> Vec<ApiRequest> {
        let barrier = format!(
            "audit-barrier-{}",
            self.barriers.fetch_add(1, Ordering::SeqCst)
        );
        // A GET of a ConfigMap that does not exist: a 404 the audit policy records.
        let _ =
            Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(self.admin.clone(), "default")
                .get_opt(&barrier)
                .await
                .unwrap_or_else(|e| panic!("the audit marker request: {e}"));
        let started = Instant::now();
        loop {
            let events = self.audit_events();
            let marked = events.iter().any(|event| {
                event["user"]["username"] == ADMIN_USER
                    && event["objectRef"]["name"] == barrier.as_str()
            });
            if marked {
                return events
                    .iter()
                    .filter(|event| event["user"]["username"] == PROXY_USER)
                    .map(api_request)
                    .collect();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the audit log has no event of the marker request {barrier} after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `ResponseComplete` events of every API server start's audit log, oldest first.
    fn audit_events(&self) -> Vec<serde_json::Value> {
        (1..=self.apiserver_starts)
            .map(|start| audit_log_path(self.dir.path(), start))
            .flat_map(|path| {
                super::process::read_lossy(&path)
                    .lines()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .collect::<Vec<_>>()
            })
            .filter(|event| event["stage"] == "ResponseComplete")
            .collect()
    }

    /// Sets up a namespace once: the namespace, its `default` service account (no
    /// controller manager runs to create it; pod admission needs it), and the proxy user's
    /// Role and RoleBinding. Returns once RBAC lets the proxy user get pods and Secrets.
    async fn ensure_namespace(&self, namespace: &str) {
        if lock(&self.objects).namespaces.contains(namespace) {
            return;
        }
        let admin = &self.admin;
        let params = PostParams::default();
        Api::<Namespace>::all(admin.clone())
            .create(
                &params,
                &Namespace {
                    metadata: meta(None, namespace),
                    ..Namespace::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("creating namespace {namespace}: {e}"));
        Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
            .create(
                &params,
                &ServiceAccount {
                    metadata: meta(Some(namespace), "default"),
                    ..ServiceAccount::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("creating service account {namespace}/default: {e}"));
        Api::<RoleBinding>::namespaced(admin.clone(), namespace)
            .create(
                &params,
                &RoleBinding {
                    metadata: meta(Some(namespace), PROXY_ROLE),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".to_owned(),
                        kind: "Role".to_owned(),
                        name: PROXY_ROLE.to_owned(),
                    },
                    subjects: Some(vec![Subject {
                        api_group: Some("rbac.authorization.k8s.io".to_owned()),
                        kind: "User".to_owned(),
                        name: PROXY_USER.to_owned(),
                        namespace: None,
                    }]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("creating RoleBinding {namespace}/{PROXY_ROLE}: {e}"));
        lock(&self.objects).namespaces.insert(namespace.to_owned());
        self.apply_role(namespace).await;
    }

    /// Records a created object; while some object of its kind is forbidden, the Role
    /// lists names, so this one is added.
    async fn created(&self, namespace: &str, resource: &str, name: &str) {
        let key = (namespace.to_owned(), resource.to_owned());
        let restricted = {
            let mut objects = lock(&self.objects);
            objects
                .created
                .entry(key.clone())
                .or_default()
                .insert(name.to_owned());
            objects.forbidden.get(&key).is_some_and(|f| !f.is_empty())
        };
        if restricted {
            self.apply_role(namespace).await;
        }
    }
}

impl CapturedLogs for KubeApi {
    fn log_files(&self) -> Vec<(String, PathBuf)> {
        let mut logs = vec![("etcd".to_owned(), self.etcd.log_path().to_owned())];
        for start in 1..=self.apiserver_starts {
            logs.push((
                "kube-apiserver".to_owned(),
                apiserver_log_path(self.dir.path(), start),
            ));
            logs.push((
                "kube-apiserver audit".to_owned(),
                audit_log_path(self.dir.path(), start),
            ));
        }
        logs
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let logs = self.log_files();
        print_logs_if_panicking(
            logs.iter()
                .filter(|(name, _)| !name.ends_with("audit"))
                .map(|(name, path)| (name.as_str(), path.as_path())),
        );
    }
}

/// A `kubernetes.io/regcredentials` Secret with these keys (values under `data`).
pub fn regcred_secret(namespace: &str, name: &str, values: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(Some(namespace), name),
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

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectMeta::default()
    }
}

/// One audit event as an [`ApiRequest`].
fn api_request(event: &serde_json::Value) -> ApiRequest {
    let object = &event["objectRef"];
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    let mut path = String::from("/api/v1");
    if let Some(namespace) = object["namespace"].as_str() {
        path.push_str(&format!("/namespaces/{namespace}"));
    }
    path.push_str(&format!("/{}", text(&object["resource"])));
    if let Some(name) = object["name"].as_str() {
        path.push_str(&format!("/{name}"));
    }
    if object["apiGroup"].as_str().is_some_and(|g| !g.is_empty()) {
        // Not a core-group request: the path above would misname it; show the URI.
        path = text(&event["requestURI"]);
    }
    ApiRequest {
        verb: text(&event["verb"]),
        path,
        code: event["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or_default(),
    }
}
