//! A pod's candidates for an image: its pull Secrets from the source, resolved by the
//! policy on the blocking executor, at most so many at a time; what the pull and the
//! check at container creation both start from.

use std::sync::Arc;
use std::time::Instant;

use hyper::Response;
use regcred_host::PolicyRunner;
use regcred_serve::BlockingExecutor;
use regcred_types::{Candidate, PolicyConfig, RuntimeProfile};
use tokio::sync::Semaphore;
use tonic::Code;

use super::events::{self, Events};
use super::grpc::{self, ProxyBody};
use super::metrics::{ProxyMetrics, PullOutcome};
use super::source::{PodRef, PullSecretSource};

/// What a pod's pull Secrets give for one image.
pub(crate) enum Resolved {
    /// The pod is known: its candidates (maybe none) and, when some of its Secrets could
    /// not be read, a note saying which.
    Candidates {
        candidates: Vec<Candidate>,
        unreadable: Option<String>,
    },
    /// The source does not know the pod.
    PodUnknown,
}

/// Why a pod's candidates could not be had: the outcome to count and the response to give.
pub(crate) struct ResolveFailure {
    pub(crate) outcome: PullOutcome,
    pub(crate) response: Response<ProxyBody>,
}

/// Where a pod's Secrets come from and how they become candidates.
#[derive(Debug)]
pub(crate) struct Resolver {
    pub(crate) secrets: Arc<dyn PullSecretSource>,
    pub(crate) policy: PolicyRunner,
    pub(crate) profile: RuntimeProfile,
    pub(crate) config: PolicyConfig,
    pub(crate) executor: BlockingExecutor,
    /// Permits to resolve a pod's candidates: the lookup and the policy hold one.
    pub(crate) resolving: Arc<Semaphore>,
    pub(crate) metrics: Arc<ProxyMetrics>,
    pub(crate) events: Events,
}

impl Resolver {
    /// The candidates of `pod`'s pull Secrets for `image`, resolved by the policy; `Err`
    /// says what failed (the Secrets or the policy) and the response to give. The caller
    /// counts it: a pull or a CreateContainer decision.
    pub(crate) async fn candidates_for(
        &self,
        pod: &PodRef,
        image: &str,
    ) -> Result<Resolved, ResolveFailure> {
        // The lookup and the policy hold a resolution slot; the pull attempts do not.
        let _resolving = Arc::clone(&self.resolving).acquire_owned().await;
        let started = Instant::now();
        let secrets = match self.secrets.pull_secrets(pod).await {
            Ok(secrets) => secrets,
            Err(err) => {
                tracing::error!(pod = %pod, image, error = %err, "cannot read the pod's pull secrets");
                return Err(ResolveFailure {
                    outcome: PullOutcome::SecretSourceError,
                    response: grpc::error_response(
                        Code::Unavailable,
                        &format!("regcred: cannot read the pull secrets of pod {pod}: {err}"),
                    ),
                });
            }
        };
        for warning in &secrets.warnings {
            tracing::warn!(pod = %pod, "{warning}");
            self.events
                .warn(pod, events::PULL_SECRET_SKIPPED, warning.clone());
        }
        for name in &secrets.missing {
            tracing::warn!(pod = %pod, secret = %name, "imagePullSecret not found; skipped");
            self.events.warn(
                pod,
                events::PULL_SECRET_SKIPPED,
                format!("imagePullSecret {name} not found; its credentials are not used"),
            );
        }
        if !secrets.pod_found {
            tracing::warn!(pod = %pod, uid = %pod.uid, image,
                "pod not found in the pull secret source; no credentials");
            return Ok(Resolved::PodUnknown);
        }
        let resolution = {
            let (policy, config, profile) =
                (self.policy.clone(), self.config.clone(), self.profile);
            let (image, secrets) = (image.to_owned(), secrets.secrets.clone());
            self.executor
                .run(move || policy.resolve(&image, &secrets, profile, &config))
                .await
        };
        let resolution = resolution
            .map_err(|err| err.to_string())
            .and_then(|resolved| resolved.map_err(|err| err.to_string()));
        let resolution = match resolution {
            Ok(resolution) => resolution,
            Err(err) => {
                tracing::error!(pod = %pod, image, error = %err, "the policy failed");
                return Err(ResolveFailure {
                    outcome: PullOutcome::PolicyError,
                    response: grpc::error_response(
                        Code::Internal,
                        &format!("regcred: the policy failed for pod {pod}, image {image}: {err}"),
                    ),
                });
            }
        };
        self.metrics.resolution(started.elapsed());
        for warning in &resolution.warnings {
            tracing::warn!(pod = %pod, image, "{warning}");
            self.events.warn(
                pod,
                events::PULL_SECRET_SKIPPED,
                format!("for image {image}: {warning}"),
            );
        }
        // Why some of the pod's Secrets were not used, for the message of a failed pull:
        // kubelet's event then says it, not only the registry's refusal.
        let unreadable = (!secrets.unreadable.is_empty()).then(|| {
            format!(
                "regcred: pull secret(s) of pod {pod} that could not be read, so not used: {}",
                secrets.unreadable.join("; ")
            )
        });
        Ok(Resolved::Candidates {
            candidates: resolution.candidates,
            unreadable,
        })
    }
}
