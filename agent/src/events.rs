//! Kubernetes Events on the pod for what a user must act on, so that `kubectl describe
//! pod` says why, not only the node's log: a pull Secret skipped (missing, unreadable,
//! invalid), a Secret whose credentials the registry refused, a cached private image
//! refused, the records unwritable.
//!
//! Events are written by one task, off the CRI path: a decision never waits for the API.
//! Like kubelet's, they are aggregated: the same reason and message on the same pod
//! within ten minutes raises the `count` of one Event (a PATCH, at most every 5 s per
//! Event; repeats in between are added at the next one) instead of adding Events. Posted
//! with the agent's own identity (the node's: `system:node` may create and patch
//! Events). Messages are the agent's own, which never carry a credential's value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use super::source::PodRef;
use super::source::client::ReloadingClient;

/// A pull Secret of the pod was not used: missing, unreadable, of another type, invalid.
pub const PULL_SECRET_SKIPPED: &str = "RegcredPullSecretSkipped";
/// The registry refused the credentials of one of the pod's Secrets.
pub const CREDENTIALS_REFUSED: &str = "RegcredCredentialsRefused";
/// The pod may not use an image on the node (a cached private image).
pub const IMAGE_REFUSED: &str = "RegcredImageRefused";
/// The node's pulled-image records cannot be written.
pub const RECORDS_UNWRITTEN: &str = "RegcredRecordsUnwritten";

/// Events not yet written, at most; past it new ones are dropped (and logged).
const QUEUE: usize = 1024;
/// Repeats within this window raise one Event's count.
const AGGREGATE_FOR: Duration = Duration::from_secs(600);
/// One Event is patched at most this often.
const PATCH_EVERY: Duration = Duration::from_secs(5);
/// Remembered Events, at most (the oldest are forgotten).
const REMEMBERED: usize = 4096;
/// The API's limit on an Event's message is 1 KiB for events.k8s.io; kept for core too.
const MESSAGE_BYTES: usize = 1024;
/// How long one write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent's Events go: a handle to the writer task (cheap to clone).
#[derive(Clone)]
pub struct PodEvents {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodEvents").finish_non_exhaustive()
    }
}

struct Pending {
    pod: PodRef,
    reason: &'static str,
    message: String,
}

impl PodEvents {
    /// Starts the writer on the current tokio runtime; `host` names the node in the
    /// Events' source.
    pub(crate) fn start(client: Arc<ReloadingClient>, host: Option<String>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(Writer::new(client, host).run(pending));
        Self { queue }
    }

    /// A Warning Event on `pod`.
    pub(crate) fn warn(&self, pod: &PodRef, reason: &'static str, message: impl Into<String>) {
        let pending = Pending {
            pod: pod.clone(),
            reason,
            message: truncate(message.into()),
        };
        if self.queue.try_send(pending).is_err() {
            tracing::warn!(pod = %pod, reason, "too many pod Events waiting; one is dropped");
        }
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MESSAGE_BYTES {
        let mut end = MESSAGE_BYTES - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// One written Event, as the writer remembers it.
struct Written {
    name: String,
    namespace: String,
    count: i32,
    /// Repeats since the last write.
    unsent: i32,
    first_seen: Instant,
    last_write: Instant,
}

struct Writer {
    client: Arc<ReloadingClient>,
    host: Option<String>,
    written: HashMap<(String, &'static str, String), Written>,
}

impl Writer {
    fn new(client: Arc<ReloadingClient>, host: Option<String>) -> Self {
        Self {
            client,
            host,
            written: HashMap::new(),
        }
    }

    async fn run(mut self, mut pending: mpsc::Receiver<Pending>) {
        let mut tick = tokio::time::interval(PATCH_EVERY);
        loop {
            tokio::select! {
                next = pending.recv() => match next {
                    Some(event) => self.record(event).await,
                    None => return,
                },
                _ = tick.tick() => self.flush().await,
            }
        }
    }

    async fn record(&mut self, event: Pending) {
        self.forget_old();
        let key = (event.pod.uid.clone(), event.reason, event.message.clone());
        if let Some(written) = self.written.get_mut(&key)
            && written.first_seen.elapsed() < AGGREGATE_FOR
        {
            written.unsent += 1;
            if written.last_write.elapsed() >= PATCH_EVERY {
                let (name, namespace, count) = (
                    written.name.clone(),
                    written.namespace.clone(),
                    written.count + written.unsent,
                );
                written.count = count;
                written.unsent = 0;
                written.last_write = Instant::now();
                self.patch(&namespace, &name, count).await;
            }
            return;
        }
        if let Some(name) = self.create(&event).await {
            self.written.insert(
                key,
                Written {
                    name,
                    namespace: event.pod.namespace.clone(),
                    count: 1,
                    unsent: 0,
                    first_seen: Instant::now(),
                    last_write: Instant::now(),
                },
            );
        }
    }

    /// Writes the counts of repeats that came within [`PATCH_EVERY`] of a write.
    async fn flush(&mut self) {
        let due: Vec<(String, String, i32)> = self
            .written
            .values_mut()
            .filter(|w| w.unsent > 0 && w.last_write.elapsed() >= PATCH_EVERY)
            .map(|w| {
                w.count += w.unsent;
                w.unsent = 0;
                w.last_write = Instant::now();
                (w.namespace.clone(), w.name.clone(), w.count)
            })
            .collect();
        for (namespace, name, count) in due {
            self.patch(&namespace, &name, count).await;
        }
    }

    fn forget_old(&mut self) {
        if self.written.len() < REMEMBERED {
            self.written
                .retain(|_, w| w.first_seen.elapsed() < AGGREGATE_FOR || w.unsent > 0);
            return;
        }
        // Full: forget the older half.
        let mut ages: Vec<Instant> = self.written.values().map(|w| w.first_seen).collect();
        ages.sort();
        let cut = ages[ages.len() / 2];
        self.written.retain(|_, w| w.first_seen > cut);
    }

    async fn api(&self, namespace: &str) -> Option<Api<Event>> {
        match self.client.get().await {
            Ok(client) => Some(Api::namespaced(client, namespace)),
            Err(reason) => {
                tracing::warn!(%reason, "no Kubernetes client for pod Events");
                None
            }
        }
    }

    async fn create(&self, event: &Pending) -> Option<String> {
        let api = self.api(&event.pod.namespace).await?;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}.{nanos:x}", event.pod.name);
        let object = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(event.pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                namespace: Some(event.pod.namespace.clone()),
                name: Some(event.pod.name.clone()),
                uid: Some(event.pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(event.reason.to_owned()),
            message: Some(event.message.clone()),
            type_: Some("Warning".to_owned()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some("regcred-node-agent".to_owned()),
                host: self.host.clone(),
            }),
            reporting_component: Some("regcred.dev/node-agent".to_owned()),
            reporting_instance: self.host.clone(),
            ..Default::default()
        };
        match tokio::time::timeout(WRITE_TIMEOUT, api.create(&PostParams::default(), &object)).await
        {
            Ok(Ok(_)) => Some(name),
            Ok(Err(err)) => {
                tracing::warn!(pod = %event.pod, reason = event.reason, error = %err, "cannot create the pod's Event");
                None
            }
            Err(_) => {
                tracing::warn!(pod = %event.pod, reason = event.reason, "creating the pod's Event timed out");
                None
            }
        }
    }

    async fn patch(&self, namespace: &str, name: &str, count: i32) {
        let Some(api) = self.api(namespace).await else {
            return;
        };
        let patch = serde_json::json!({
            "count": count,
            "lastTimestamp": Time(k8s_openapi::jiff::Timestamp::now()),
        });
        let result = tokio::time::timeout(
            WRITE_TIMEOUT,
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
        .await;
        if !matches!(result, Ok(Ok(_))) {
            tracing::warn!(event = %format!("{namespace}/{name}"), "cannot raise the count of the pod's Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character() {
        let message = "é".repeat(1000);
        let cut = truncate(message);
        assert!(cut.len() <= MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short".into()), "short");
    }
}

/// Where the agent's Warning Events go: to the API server when Events are on, nowhere
/// otherwise. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(pub(crate) Option<PodEvents>);

impl Events {
    /// A Warning Event on `pod`, when Events are on.
    pub(crate) fn warn(&self, pod: &PodRef, reason: &'static str, message: impl Into<String>) {
        if let Some(events) = &self.0 {
            events.warn(pod, reason, message);
        }
    }
}
