//! `kube`: the pod and its Secrets from the Kubernetes API, with a short cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use regcred_types::SecretManifest;

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
/// Answers, a 404 included, are cached for a short TTL, so that a burst of pulls for one
/// pod makes two or three requests and a rotated Secret is used at most one TTL later.
/// When the API fails, the cached answer is served for a bounded time past its TTL
/// (with a warning); after that the pull fails with [`SourceError::Api`].
///
/// Least privilege: `get` on `pods` and `secrets`. With the kubelet's own credentials,
/// the Node authorizer already limits reads to Secrets of pods bound to the node.
pub struct KubeSource {
    client: kube::Client,
    ttl: Duration,
    stale_for: Duration,
    request_timeout: Duration,
    pods: Cache<Option<Vec<String>>>,
    secrets: Cache<Option<SecretManifest>>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("default_namespace", &self.client.default_namespace())
            .field("ttl", &self.ttl)
            .field("stale_for", &self.stale_for)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KubeSource`].
#[must_use]
pub struct KubeSourceBuilder {
    client: kube::Client,
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
            client: self.client,
            ttl: self.ttl,
            stale_for: self.stale_for,
            request_timeout: self.request_timeout,
            pods: Cache::default(),
            secrets: Cache::default(),
        }
    }
}

impl KubeSource {
    /// A source using `client`, with the default TTL and stale window.
    pub fn builder(client: kube::Client) -> KubeSourceBuilder {
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

    async fn lookup(&self, pod: &PodRef) -> Result<PodPullSecrets, SourceError> {
        let mut found = PodPullSecrets::default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let key = (pod.namespace.clone(), pod.name.clone());
        let names = self
            .cached(&self.pods, key, &format!("pod {pod}"), &mut found, async {
                Ok(pods.get_opt(&pod.name).await?.map(|p| {
                    p.spec
                        .and_then(|s| s.image_pull_secrets)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| r.name)
                        .filter(|n| !n.is_empty())
                        .collect()
                }))
            })
            .await?;
        let Some(names) = names else {
            return Ok(found);
        };
        found.pod_found = true;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &pod.namespace);
        for name in names {
            let key = (pod.namespace.clone(), name.clone());
            let object = format!("secret {}/{name}", pod.namespace);
            let secret = self
                .cached(&self.secrets, key, &object, &mut found, async {
                    Ok(secrets.get_opt(&name).await?.map(SecretManifest::from))
                })
                .await?;
            match secret {
                Some(secret) => found.secrets.push(secret),
                None => found.missing.push(name),
            }
        }
        Ok(found)
    }

    /// The cached value when fresh; else `fetch`, falling back on the cached value for
    /// `stale_for` past its TTL when `fetch` fails.
    async fn cached<T: Clone>(
        &self,
        cache: &Cache<T>,
        key: (String, String),
        object: &str,
        found: &mut PodPullSecrets,
        fetch: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, SourceError> {
        let cached = cache.get(&key);
        if let Some((value, fetched)) = &cached
            && fetched.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let fetched = match tokio::time::timeout(self.request_timeout, fetch).await {
            Ok(result) => result.map_err(|err| describe(&err)),
            Err(_) => Err(format!("no answer within {:?}", self.request_timeout)),
        };
        match fetched {
            Ok(value) => {
                cache.put(key, value.clone(), self.ttl + self.stale_for);
                Ok(value)
            }
            Err(reason) => match cached {
                Some((value, fetched)) if fetched.elapsed() < self.ttl + self.stale_for => {
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

impl PullSecretSource for KubeSource {
    fn pull_secrets<'a>(&'a self, pod: &'a PodRef) -> SourceFuture<'a> {
        Box::pin(self.lookup(pod))
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

/// Answers by (namespace, name) with the time they were fetched.
#[derive(Debug)]
struct Cache<T>(Mutex<HashMap<(String, String), (T, Instant)>>);

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<T: Clone> Cache<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (T, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get<K>(&self, key: &K) -> Option<(T, Instant)>
    where
        (String, String): std::borrow::Borrow<K>,
        K: Hash + Eq + ?Sized,
    {
        self.lock().get(key).cloned()
    }

    /// Stores `value` and drops entries older than `keep` (pods come and go).
    fn put(&self, key: (String, String), value: T, keep: Duration) {
        let mut map = self.lock();
        map.retain(|_, (_, fetched)| fetched.elapsed() < keep);
        map.insert(key, (value, Instant::now()));
    }
}
