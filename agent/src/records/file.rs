//! The records file's contents: what is kept for each image, and how a use of it is noted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ImageAccess, ImageKey, ImageSummary, MAX_NAMES, MAX_POD_GRANTS, PodSummary, VERSION};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RecordsFile {
    pub(super) version: u32,
    /// Version 1's salt: read to recognize such a file, never written.
    #[serde(default, skip_serializing)]
    pub(super) salt: String,
    /// By image ID.
    pub(super) images: BTreeMap<String, ImageRecord>,
    /// The images (by ID) on the node when regcred first listed them with these records:
    /// what "preloaded" means. `None` until that listing (a fresh file; a file of an
    /// earlier regcred, which is then given the images without a record it finds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) preloaded: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ImageRecord {
    /// Names the image was pulled as, the most recently used last; at most
    /// [`MAX_NAMES`] (pod authors choose them: a record must not grow with them).
    pub(super) names: Vec<String>,
    /// Other references the runtime gave for the image (a pull answered with a
    /// repository digest), looked up like the ID; at most [`MAX_NAMES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) aliases: Vec<String>,
    /// Seconds since the epoch of the last pull with credentials (the image stays private
    /// while it is on the node, whatever the age of its credential records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) private_since: Option<u64>,
    /// Seconds since the epoch of the last pull without credentials that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) public_at: Option<u64>,
    /// Seconds since the epoch of the last pull with credentials kubelet sent itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) kubelet_pulled_at: Option<u64>,
    /// The credentials that pulled it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) credentials: Vec<CredentialRecord>,
    /// Pods that were allowed to use it, by uid: their containers restart without a
    /// question to the API server or the registry until the record lifetime ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) pods: Vec<PodGrant>,
}

impl ImageRecord {
    /// Notes that the pod `pod` with `uid` may use the image (its newest grant last; the
    /// oldest beyond [`MAX_POD_GRANTS`] go).
    pub(super) fn grant(&mut self, pod: &str, uid: &str, secret: &str, at: u64) {
        self.pods.retain(|g| g.uid != uid);
        self.pods.push(PodGrant {
            pod: pod.to_owned(),
            uid: uid.to_owned(),
            secret: secret.to_owned(),
            at,
        });
        let excess = self.pods.len().saturating_sub(MAX_POD_GRANTS);
        self.pods.drain(..excess);
    }

    /// Notes that the image was pulled or verified as `name`: it moves to the end, and
    /// the least recently used names beyond [`MAX_NAMES`] go.
    pub(super) fn name_used(&mut self, name: &str) {
        self.names.retain(|n| n != name);
        self.names.push(name.to_owned());
        let excess = self.names.len().saturating_sub(MAX_NAMES);
        self.names.drain(..excess);
    }

    /// Notes that the credentials hashed `hash`, from `secret`, pulled or were accepted for
    /// the image at `at` (their newest use replaces an older one).
    pub(super) fn credential_used(&mut self, hash: &str, secret: &str, at: u64) {
        self.credentials.retain(|c| c.hash != hash);
        self.credentials.push(CredentialRecord {
            hash: hash.to_owned(),
            secret: secret.to_owned(),
            at,
        });
    }

    pub(super) fn alias(&mut self, alias: Option<&str>) {
        let Some(alias) = alias else { return };
        self.aliases.retain(|a| a != alias);
        self.aliases.push(alias.to_owned());
        let excess = self.aliases.len().saturating_sub(MAX_NAMES);
        self.aliases.drain(..excess);
    }
}

impl RecordsFile {
    /// The ID of the record `reference` names: its own, or the one it is an alias of.
    pub(super) fn id_of(&self, reference: &str) -> Option<&str> {
        if let Some((id, _)) = self.images.get_key_value(reference) {
            return Some(id);
        }
        self.images
            .iter()
            .find(|(_, r)| r.aliases.iter().any(|a| a == reference))
            .map(|(id, _)| id.as_str())
    }

    pub(super) fn record(&self, reference: &str) -> Option<&ImageRecord> {
        self.id_of(reference).and_then(|id| self.images.get(id))
    }

    /// The record of `image`, created under its ID when there is none, with its alias.
    pub(super) fn entry(&mut self, image: ImageKey<'_>) -> &mut ImageRecord {
        // A reference known only as an alias (a grant for the repository digest a
        // CreateContainer named) goes to the record of its ID.
        let id = self.id_of(image.id).unwrap_or(image.id).to_owned();
        let record = self.images.entry(id).or_default();
        record.alias(image.alias);
        record
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CredentialRecord {
    /// `hmac-sha256:` hex of the credential fields under the node's key.
    pub(super) hash: String,
    /// The Secret the credentials came from (`namespace/name`), for logs.
    pub(super) secret: String,
    /// Seconds since the epoch of the last pull or verification with them.
    pub(super) at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PodGrant {
    /// `namespace/name`.
    pub(super) pod: String,
    /// The pod's uid (a pod deleted and created again under its name is another pod).
    pub(super) uid: String,
    /// The Secret whose credentials were accepted (empty for a pull without credentials).
    pub(super) secret: String,
    /// Seconds since the epoch of the decision.
    pub(super) at: u64,
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RecordsFile {
    pub(super) fn fresh() -> Self {
        Self {
            version: VERSION,
            salt: String::new(),
            images: BTreeMap::new(),
            preloaded: None,
        }
    }

    /// What the records say about `image_id` (an image ID, or an alias of one); `fresh`
    /// tells whether a time is within the record lifetime.
    pub(super) fn access(&self, image_id: &str, fresh: impl Fn(u64) -> bool) -> ImageAccess {
        let record = self.record(image_id);
        // Private wins: once pulled with credentials, a pull without them under some name
        // (a mirror, another repository with the same bytes) does not make it public;
        // each pod then shows its own access.
        if record.is_some_and(|r| r.private_since.is_some()) {
            ImageAccess::Private
        } else if record.is_some_and(|r| r.public_at.is_some_and(&fresh)) {
            ImageAccess::Public
        } else if record.is_some_and(|r| r.kubelet_pulled_at.is_some()) {
            ImageAccess::KubeletChecked
        } else if self
            .preloaded
            .as_ref()
            .is_some_and(|p| p.contains(self.id_of(image_id).unwrap_or(image_id)))
        {
            ImageAccess::Preloaded
        } else {
            ImageAccess::Unrecorded
        }
    }

    /// Takes `present`, less the images recorded private, as the preloaded images unless
    /// they are known already; whether they were taken now.
    pub(super) fn take_preloaded(&mut self, present: &BTreeSet<String>) -> bool {
        if self.preloaded.is_some() {
            return false;
        }
        let private: BTreeSet<&String> = self
            .images
            .iter()
            .filter(|(_, r)| r.private_since.is_some())
            .map(|(id, _)| id)
            .collect();
        self.preloaded = Some(
            present
                .iter()
                .filter(|id| !private.contains(id))
                .cloned()
                .collect(),
        );
        true
    }

    /// What the records say about `reference`: an image ID, one of its aliases, or a name
    /// it was pulled as.
    pub(super) fn summary(
        &self,
        reference: &str,
        fresh: impl Fn(u64) -> bool,
    ) -> Option<ImageSummary> {
        let id = self.id_of(reference).map(str::to_owned).or_else(|| {
            self.images
                .iter()
                .find(|(_, r)| r.names.iter().any(|n| n == reference))
                .map(|(id, _)| id.clone())
        })?;
        let record = self.images.get(&id)?;
        let secrets: BTreeSet<String> = record
            .credentials
            .iter()
            .filter(|c| fresh(c.at))
            .map(|c| c.secret.clone())
            .collect();
        let pods = record
            .pods
            .iter()
            .filter(|g| fresh(g.at))
            .map(|g| PodSummary {
                pod: g.pod.clone(),
                uid: g.uid.clone(),
                secret: g.secret.clone(),
            })
            .collect();
        let names = record.names.iter().rev().cloned().collect();
        let access = self.access(&id, &fresh).as_str();
        Some(ImageSummary {
            id,
            access,
            names,
            secrets: secrets.into_iter().collect(),
            pods,
        })
    }

    /// Forgets every image not in `present` and every credential record and grant older
    /// than `cutoff`; how many images were forgotten, and whether anything changed.
    pub(super) fn retain(&mut self, present: &BTreeSet<String>, cutoff: u64) -> (usize, bool) {
        let before = self.images.len();
        self.images.retain(|id, _| present.contains(id));
        let forgotten = before - self.images.len();
        let preloaded_before = self.preloaded.as_ref().map_or(0, BTreeSet::len);
        if let Some(preloaded) = self.preloaded.as_mut() {
            preloaded.retain(|id| present.contains(id));
        }
        let unpreloaded = preloaded_before - self.preloaded.as_ref().map_or(0, BTreeSet::len);
        let mut expired = 0;
        for record in self.images.values_mut() {
            let before = record.credentials.len() + record.pods.len();
            record.credentials.retain(|c| c.at >= cutoff);
            record.pods.retain(|g| g.at >= cutoff);
            expired += before - record.credentials.len() - record.pods.len();
        }
        (forgotten, forgotten > 0 || expired > 0 || unpreloaded > 0)
    }
}
