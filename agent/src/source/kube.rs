//! `kube`: the pod and its Secrets from the Kubernetes API, with a short cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use regcred_types::SecretManifest;

use super::client::ReloadingClient;
use super::{PodPullSecrets, PodRef, PullSecretSource, SourceError, SourceFuture};

/// How long an answer is used without asking the API again (default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// How long past its TTL a cached answer is still served while the API fails (default).
pub const DEFAULT_STALE_FOR: Duration = Duration::from_secs(300);
/// How long one GET may take, kube's own retries of 429/503/504 included (default).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The pod (`GET /api/v1/namespaces/NS/pods/NAME`) and each of its `imagePullSecrets`
/// (`GET .../secrets/NAME`) from the Kubernetes API.
///
/// The pod is the one the sandbox names by uid: a pod of that name with another uid
/// (deleted and recreated, or a stale sandbox) is not that pod, and its pulls get no
/// credentials (with a warning naming the pod). Pods are cached by (namespace, name,
/// uid), Secrets by (namespace, name).
///
/// Answers are cached for a short TTL, so that a burst of pulls for one pod makes two or
/// three requests and a rotated Secret is used at most one TTL later. A 403 or 404 is an
/// answer (no credentials from that pod or Secret, with a warning naming the pod and the
/// status), never replaced by an older cached success. When the API is unreachable
/// (transport error, timeout, 5xx, 429), the cached answer for the same key is served
/// for a bounded time past its TTL (with a warning); after that, and for any other
/// failure (a 401, say), the pull fails with [`SourceError::Api`].
///
/// Credentials change under a running node (kubelet rotates its client certificate):
/// a source made by [`KubeSource::from_env`] rebuilds its client when a file its
/// kubeconfig names changes, and when the API server does not accept it (a 401, or a
/// 403 to `system:anonymous`, which is what an expired client certificate gets); such a
/// refusal is never cached as an answer.
///
/// Least privilege: `get` on `pods` and `secrets`. With the kubelet's own credentials,
/// the Node authorizer already limits reads to Secrets of pods bound to the node.
pub struct KubeSource {
    client: Arc<ReloadingClient>,
    /// Set when a read was refused for its credentials: the lookup is tried once more
    /// with a rebuilt client.
    refused: AtomicBool,
    ttl: Duration,
    stale_for: Duration,
    request_timeout: Duration,
    pods: Cache<PodAnswer>,
    secrets: Cache<SecretAnswer>,
    /// Answers served from the cache past their TTL because the API failed.
    stale_answers: prometheus::IntCounter,
}

/// The name of [`KubeSource::stale_answers`]'s counter.
const STALE_ANSWERS_METRIC: &str = "regcred_cri_proxy_secret_source_stale_answers_total";

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("client", &self.client)
            .field("ttl", &self.ttl)
            .field("stale_for", &self.stale_for)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KubeSource`].
#[must_use]
pub struct KubeSourceBuilder {
    client: ReloadingClient,
    ttl: Duration,
    stale_for: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for KubeSourceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSourceBuilder")
            .field("ttl", &self.ttl)
            .field("stale_for", &self.stale_for)
            .finish_non_exhaustive()
    }
}

impl KubeSourceBuilder {
    /// How long an answer is used without asking again ([`DEFAULT_TTL`]).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long past its TTL a cached answer is served while the API fails
    /// ([`DEFAULT_STALE_FOR`]).
    pub fn stale_for(mut self, stale_for: Duration) -> Self {
        self.stale_for = stale_for;
        self
    }

    /// How long one GET may take, kube's retries included
    /// ([`DEFAULT_REQUEST_TIMEOUT`]); then it counts as failed (and the cache may answer).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The source.
    pub fn build(self) -> KubeSource {
        KubeSource {
            client: Arc::new(self.client),
            refused: AtomicBool::new(false),
            ttl: self.ttl,
            stale_for: self.stale_for,
            request_timeout: self.request_timeout,
            pods: Cache::default(),
            secrets: Cache::default(),
            stale_answers: prometheus::IntCounter::new(
                STALE_ANSWERS_METRIC,
                "Pods and Secrets answered from the cache past its TTL because the \
                 Kubernetes API failed (--kube-stale-for).",
            )
            .unwrap_or_else(|e| unreachable!("a static metric name: {e}")),
        }
    }
}

impl KubeSource {
    /// Kubernetes Events on pods, written with this source's client (the agent's
    /// identity); `host` names the node in their source. Starts the writer task on the
    /// current tokio runtime.
    pub fn events(&self, host: Option<String>) -> crate::PodEvents {
        crate::PodEvents::start(Arc::clone(&self.client), host)
    }

    /// The counter of answers served stale (the API failing, the cached copy younger
    /// than TTL plus `--kube-stale-for`): register it where the agent's metrics are
    /// served ([`crate::ProxyMetrics::register`]).
    pub fn stale_answers(&self) -> prometheus::IntCounter {
        self.stale_answers.clone()
    }

    /// A source using `client` as it is, with the default TTL and stale window.
    pub fn builder(client: kube::Client) -> KubeSourceBuilder {
        Self::builder_with(ReloadingClient::fixed(client))
    }

    /// A source whose client comes from `KUBECONFIG` or `~/.kube/config`, else the
    /// in-cluster service account, and is rebuilt when the kubeconfig's files change
    /// (kubelet's certificate rotation) or the API server refuses its credentials. When
    /// neither is usable yet (a node agent started before kubelet's TLS bootstrap wrote
    /// the kubeconfig), lookups fail with [`SourceError::Api`] saying so until one is.
    pub async fn from_env() -> KubeSourceBuilder {
        Self::builder_with(ReloadingClient::infer().await)
    }

    fn builder_with(client: ReloadingClient) -> KubeSourceBuilder {
        KubeSourceBuilder {
            client,
            ttl: DEFAULT_TTL,
            stale_for: DEFAULT_STALE_FOR,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// A client from `KUBECONFIG` or `~/.kube/config`, else the in-cluster service
    /// account.
    ///
    /// # Errors
    ///
    /// kube's error when neither configuration is usable.
    pub async fn infer_client() -> Result<kube::Client, kube::Error> {
        kube::Client::try_default().await
    }

    /// [`Self::lookup`], once more with a rebuilt client when the API server refused the
    /// credentials.
    async fn lookup_following(&self, pod: &PodRef) -> Result<PodPullSecrets, SourceError> {
        let first = self.lookup(pod).await;
        if first.is_err()
            && self.refused.swap(false, Ordering::Relaxed)
            && self.client.rejected().await
        {
            return self.lookup(pod).await;
        }
        first
    }

    async fn lookup(&self, pod: &PodRef) -> Result<PodPullSecrets, SourceError> {
        let mut found = PodPullSecrets::default();
        let client = self.client.get().await.map_err(|reason| SourceError::Api {
            object: format!("pod {pod}"),
            reason,
        })?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
        let key = (pod.namespace.clone(), pod.name.clone(), pod.uid.clone());
        let answer = self
            .cached(
                &self.pods,
                key,
                &format!("pod {pod}"),
                &mut found,
                async { pods.get(&pod.name).await.map(|p| PodAnswer::of(&p, pod)) },
                |status| PodAnswer::NotThePod(format!("the API answers {status}")),
            )
            .await?;
        let names = match answer {
            PodAnswer::Pod(names) => names,
            PodAnswer::NotThePod(why) => {
                found.warnings.push(format!(
                    "pod {pod} (uid {}) is not known as that pod: {why}; no credentials \
                     for its pulls",
                    pod.uid
                ));
                return Ok(found);
            }
        };
        found.pod_found = true;
        let secrets: Api<Secret> = Api::namespaced(client, &pod.namespace);
        for name in names {
            let key = (pod.namespace.clone(), name.clone(), String::new());
            let object = format!("secret {}/{name}", pod.namespace);
            let secret = self
                .cached(
                    &self.secrets,
                    key,
                    &object,
                    &mut found,
                    async {
                        secrets
                            .get(&name)
                            .await
                            .map(|s| SecretAnswer::Found(Box::new(SecretManifest::from(s))))
                    },
                    SecretAnswer::Refused,
                )
                .await?;
            match secret {
                SecretAnswer::Found(secret) => found.secrets.push(*secret),
                SecretAnswer::Refused(status) if status.starts_with("404") => {
                    found.missing.push(name);
                }
                SecretAnswer::Refused(status) => {
                    found.warnings.push(format!(
                        "pull secret {object} of pod {pod} is not readable: the API answers \
                         {status}; its credentials are not used"
                    ));
                    found
                        .unreadable
                        .push(format!("{}/{name}: {status}", pod.namespace));
                }
            }
        }
        Ok(found)
    }

    /// The cached value when fresh; else `fetch`. A 403 or 404 is an answer (`denied`
    /// makes it a value, cached like any other); a transport error, a timeout or a 5xx
    /// falls back on the cached value (same key) for `stale_for` past its TTL; any other
    /// failure is an error.
    async fn cached<T: Clone>(
        &self,
        cache: &Cache<T>,
        key: Key,
        object: &str,
        found: &mut PodPullSecrets,
        fetch: impl Future<Output = Result<T, kube::Error>>,
        denied: impl FnOnce(String) -> T,
    ) -> Result<T, SourceError> {
        let cached = cache.get(&key);
        if let Some((value, fetched)) = &cached
            && fetched.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let fetched = match tokio::time::timeout(self.request_timeout, fetch).await {
            Ok(Ok(value)) => Ok(value),
            // Not an answer about the object: these credentials are not accepted.
            Ok(Err(kube::Error::Api(status))) if credentials_refused(&status) => {
                self.refused.store(true, Ordering::Relaxed);
                Err((
                    false,
                    format!("{} {}: {}", status.code, status.reason, status.message),
                ))
            }
            Ok(Err(kube::Error::Api(status))) if matches!(status.code, 403 | 404) => Ok(denied(
                format!("{} {}: {}", status.code, status.reason, status.message),
            )),
            Ok(Err(err)) => Err((is_unreachable(&err), describe(&err))),
            Err(_) => Err((true, format!("no answer within {:?}", self.request_timeout))),
        };
        match fetched {
            Ok(value) => {
                cache.put(key, value.clone(), self.ttl + self.stale_for);
                Ok(value)
            }
            Err((unreachable, reason)) => match cached {
                Some((value, fetched))
                    if unreachable && fetched.elapsed() < self.ttl + self.stale_for =>
                {
                    self.stale_answers.inc();
                    found.warnings.push(format!(
                        "the Kubernetes API failed to get {object} ({reason}); using the copy \
                             fetched {}s ago",
                        fetched.elapsed().as_secs()
                    ));
                    Ok(value)
                }
                _ => Err(SourceError::Api {
                    object: object.to_owned(),
                    reason,
                }),
            },
        }
    }
}

/// The pod the API returned, judged against the sandbox that names it.
#[derive(Debug, Clone)]
enum PodAnswer {
    /// The sandbox's pod: its `imagePullSecrets` names.
    Pod(Vec<String>),
    /// Not the sandbox's pod (absent, refused, or another pod of the same name): why.
    NotThePod(String),
}

impl PodAnswer {
    /// The sandbox's uid must be the pod's `metadata.uid`, or, for a static pod, the
    /// hash its mirror pod carries in `kubernetes.io/config.mirror` (kubelet's uid of a
    /// static pod).
    fn of(api: &Pod, sandbox: &PodRef) -> Self {
        let uid = api.metadata.uid.as_deref().unwrap_or_default();
        let mirror = api
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR_ANNOTATION))
            .map(String::as_str);
        if sandbox.uid.is_empty() {
            return Self::NotThePod("the sandbox names no uid".to_owned());
        }
        if uid != sandbox.uid && mirror != Some(&sandbox.uid) {
            return Self::NotThePod(format!(
                "the API's pod of that name has uid {uid}: another pod (deleted and \
                 recreated, or the sandbox is stale)"
            ));
        }
        Self::Pod(
            api.spec
                .as_ref()
                .and_then(|s| s.image_pull_secrets.as_ref())
                .into_iter()
                .flatten()
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty())
                .collect(),
        )
    }
}

/// A Secret the API returned, or why it is not used (`404 ...`, `403 ...`).
#[derive(Debug, Clone)]
enum SecretAnswer {
    Found(Box<SecretManifest>),
    Refused(String),
}

/// The annotation of a mirror pod that holds its static pod's uid.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A failure that says nothing about the object: the API is unreachable or failing
/// (transport, 5xx, 429), so a cached answer may stand in for a while.
fn is_unreachable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        _ => true,
    }
}

/// A refusal of the client's credentials rather than of the read: a 401, or a 403 to
/// `system:anonymous` (the API server lets a request whose client certificate has
/// expired through as anonymous when anonymous requests are on, then refuses it).
fn credentials_refused(status: &kube::core::Status) -> bool {
    status.code == 401 || (status.code == 403 && status.message.contains("\"system:anonymous\""))
}

impl PullSecretSource for KubeSource {
    fn pull_secrets<'a>(&'a self, pod: &'a PodRef) -> SourceFuture<'a> {
        Box::pin(self.lookup_following(pod))
    }
}

/// An API error in a few words: the Status reason and message for API answers (403 says
/// which verb and resource RBAC refused), the transport error otherwise.
fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// (namespace, name, uid): the sandbox's uid for pods, empty for Secrets.
type Key = (String, String, String);

/// Answers by [`Key`] with the time they were fetched.
#[derive(Debug)]
struct Cache<T>(Mutex<HashMap<Key, (T, Instant)>>);

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<T: Clone> Cache<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (T, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &Key) -> Option<(T, Instant)> {
        self.lock().get(key).cloned()
    }

    /// Stores `value` and drops entries older than `keep` (pods come and go).
    fn put(&self, key: Key, value: T, keep: Duration) {
        let mut map = self.lock();
        map.retain(|_, (_, fetched)| fetched.elapsed() < keep);
        map.insert(key, (value, Instant::now()));
    }
}
