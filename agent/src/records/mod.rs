//! Pulled-image records: which credentials pulled which image onto this node, so that a
//! container is created from a private image only for a pod whose own credentials the
//! registry accepted for it (see [`super::verify`]).
//!
//! One JSON file, `pulled-images.json`, in the records directory, rewritten whole and
//! atomically (a temporary file, fsync, rename, fsync of the directory) on every change,
//! so a crash leaves the old file or the new one. It holds no secret: a credential is
//! kept as an HMAC-SHA256 of the `AuthConfig` fields under a random per-node key, with the
//! name of the Secret it came from (for logs). The key is kept apart from the records
//! (`--pull-records-key`, by default the file `DIR.key` beside the directory, mode 0600),
//! so a copy of the records directory (a backup, a support bundle) cannot be used to test
//! guessed passwords against the hashes.
//!
//! "Preloaded" is a set, not an absence: the images on the node when regcred first
//! listed them with these records (a fresh records directory and no key yet). Any other
//! image without a record counts as private, so a lost write, a lost file or an image
//! that came by another way is verified against the pod's credentials, never let
//! through (issue 23, finding 5). Records are keyed by the image ID; a pull answered
//! with another reference (CRI-O answers with a repository digest) keeps that reference
//! as an alias, so a CreateContainer naming either finds the record (finding 2).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

mod file;
mod key;
mod store;

pub use key::{CredentialFields, default_key_file};
pub use store::RecordsError;

use file::{RecordsFile, now};
use key::HashKey;
#[cfg(test)]
use key::hex;
use store::{Shared, parse, read_or_create, write_atomically};

/// The file name in the records directory.
pub const RECORDS_FILE: &str = "pulled-images.json";
/// The lock file in the records directory: one process per directory.
pub(crate) const LOCK_FILE: &str = ".lock";
/// How many names (and, apart, aliases) an image's record keeps: the most recently
/// pulled or verified.
const MAX_NAMES: usize = 16;
/// How many pods an image's record remembers as allowed: the most recently decided (a
/// node runs at most a few hundred pods; the record must not grow with pod churn).
const MAX_POD_GRANTS: usize = 256;
/// The prefix of the temporary files a rewrite makes beside the records (tempfile's).
const TEMPORARY_PREFIX: &str = ".tmp";
/// Format version of the file: 2 since the hashes are keyed HMACs (version 1 kept a salt in
/// the file, and its hashes are dropped when it is read).
const VERSION: u32 = 2;
/// The length of the HMAC key, in bytes.
const KEY_BYTES: usize = 32;

/// What the records say about one image ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageAccess {
    /// No record, and the image was on the node when regcred first listed its images.
    Preloaded,
    /// No record, and not preloaded: it came by another way after regcred started (a
    /// pull regcred did not see, a lost record): treated as private.
    Unrecorded,
    /// A pull without credentials succeeded within the record lifetime, and none with
    /// credentials was ever recorded: public.
    Public,
    /// Pulled with credentials: a pod needs credentials of its own.
    Private,
    /// Pulled with credentials kubelet sent itself (a credential provider plugin's, a
    /// Docker Secret): left to kubelet's own checks of cached images (KEP-2535), since no
    /// Secret regcred reads could prove them for another pod.
    KubeletChecked,
}

impl ImageAccess {
    /// The name `regcred explain` prints: `preloaded`, `unrecorded`, `public`, `private`,
    /// `kubelet_checked`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Preloaded => "preloaded",
            Self::Unrecorded => "unrecorded",
            Self::Public => "public",
            Self::Private => "private",
            Self::KubeletChecked => "kubelet_checked",
        }
    }
}

/// What the records say about one image, for people (`regcred explain --records-dir`):
/// names, never a credential's hash or the node's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    /// The image ID the record is kept under.
    pub id: String,
    /// [`ImageAccess::as_str`] of it.
    pub access: &'static str,
    /// The names it was pulled as, the most recently used first.
    pub names: Vec<String>,
    /// The Secrets (`namespace/name`) whose credentials pulled it or were accepted for it
    /// within the record lifetime.
    pub secrets: Vec<String>,
    /// The pods allowed to use it within the record lifetime.
    pub pods: Vec<PodSummary>,
}

/// One pod [`ImageSummary::pods`] lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodSummary {
    /// `namespace/name`.
    pub pod: String,
    /// Its uid.
    pub uid: String,
    /// The Secret whose credentials were accepted for it (empty: none were needed).
    pub secret: String,
}

/// The records of one node, in memory and on disk.
///
/// A change edits the records in memory (a short lock, no I/O) and wakes a writer thread
/// of their own, which writes the newest state: changes that come while a write is under
/// way are coalesced into the next one, and no async worker waits on a file write or an
/// fsync (issue 23, finding 9). A change not yet written is lost in a crash, which fails
/// closed: its image is then unrecorded and not preloaded, so pods are verified again.
/// A failed write is retried every second and reported by [`Self::unwritten`] and by
/// the next changes' errors until one succeeds.
#[derive(Debug)]
pub struct PullRecords {
    ttl: Duration,
    key: HashKey,
    shared: Arc<Shared>,
    /// The writer thread (file-backed records only), stopped and joined on drop after a
    /// last write.
    writer: Option<std::thread::JoinHandle<()>>,
    /// The directory's lock file, locked for as long as these records live.
    _lock: Option<std::fs::File>,
}

/// An image as a pull named it: its ID and, when the runtime's answer named it otherwise
/// (a repository digest), that reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageKey<'a> {
    /// The image ID (ImageStatus's `image.id`).
    pub id: &'a str,
    /// Another reference the runtime gave for it, kept as an alias.
    pub alias: Option<&'a str>,
}

impl<'a> From<&'a str> for ImageKey<'a> {
    fn from(id: &'a str) -> Self {
        Self { id, alias: None }
    }
}

impl<'a> From<&'a String> for ImageKey<'a> {
    fn from(id: &'a String) -> Self {
        Self { id, alias: None }
    }
}

impl PullRecords {
    /// Records kept in memory only (tests, and `--pull-records-dir` unset by a library
    /// user): lost at a restart.
    pub fn in_memory(ttl: Duration) -> Self {
        Self {
            ttl,
            key: HashKey::random(),
            shared: Shared::new(None, RecordsFile::fresh()),
            writer: None,
            _lock: None,
        }
    }

    /// The records in `dir`, for this process alone: the directory is created (mode
    /// 0700) when missing, must hold nothing but regcred's records when it exists (it is
    /// then made mode 0700), and its lock file is held until the records are dropped.
    /// Records older than `ttl` no longer count.
    ///
    /// # Errors
    ///
    /// [`RecordsError`] when the directory cannot be created, holds other files
    /// ([`RecordsError::NotOurs`]), is locked by another process ([`RecordsError::Locked`]),
    /// or the file cannot be read or does not parse: the proxy does not start, rather than
    /// forget which images are private or share them with another process.
    pub fn open(dir: &Path, ttl: Duration) -> Result<Self, RecordsError> {
        Self::open_with_key(dir, &default_key_file(dir), ttl)
    }

    /// [`Self::open`] with the HMAC key of the credential hashes in `key_file` (created,
    /// 32 random bytes, mode 0600, when missing). Keep it outside `dir`: the records are
    /// safe to copy without it. A lost key makes every credential record miss, so pods
    /// are verified with the registry again (nothing is let through).
    ///
    /// # Errors
    ///
    /// As [`Self::open`], and [`RecordsError::Invalid`] for a key file of another length.
    pub fn open_with_key(dir: &Path, key_file: &Path, ttl: Duration) -> Result<Self, RecordsError> {
        let lock = store::claim(dir)?;
        let file = dir.join(RECORDS_FILE);
        // Records gone while their key stayed: not a first start. What was on the node
        // then cannot be told from what was pulled privately since, so nothing counts as
        // preloaded (every pod is verified once per image), rather than everything.
        let lost = !file.exists() && key_file.exists();
        let mut state = read_or_create(&file)?;
        if lost {
            tracing::warn!(file = %file.display(), key = %key_file.display(),
                "the pulled-image records are gone but their key is here: they were lost, \
                 not new; no image on the node counts as preloaded, every pod is verified \
                 with the registry once for each image it uses");
            state.preloaded = Some(BTreeSet::new());
            write_atomically(&file, &state)?;
        }
        let key = HashKey::load_or_create(key_file)?;
        let shared = Shared::new(Some(file), state);
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("regcred-records".into())
                .spawn(move || shared.run_writer())
                .map_err(|source| RecordsError::Io {
                    path: dir.to_owned(),
                    source,
                })?
        };
        Ok(Self {
            ttl,
            key,
            shared,
            writer: Some(writer),
            _lock: Some(lock),
        })
    }

    /// The records in `dir` as they are on disk, without the lock and without writing:
    /// for looking at the records of a running agent (tools and tests). Changes stay in
    /// memory.
    ///
    /// # Errors
    ///
    /// [`RecordsError`] when the file cannot be read or does not parse.
    pub fn inspect(dir: &Path, ttl: Duration) -> Result<Self, RecordsError> {
        let file = dir.join(RECORDS_FILE);
        let bytes = std::fs::read(&file).map_err(|source| RecordsError::Io {
            path: file.clone(),
            source,
        })?;
        Ok(Self {
            ttl,
            // Inspection reads, it does not hash: a key of its own.
            key: HashKey::random(),
            shared: Shared::new(None, parse(&file, &bytes)?),
            writer: None,
            _lock: None,
        })
    }

    /// The file the records are kept in, if any.
    pub fn file(&self) -> Option<&Path> {
        self.shared.file.as_deref()
    }

    /// The keyed hash a credential is recorded by (HMAC-SHA256 under the node's key).
    pub fn hash(&self, credential: CredentialFields<'_>) -> String {
        self.key.hash(credential)
    }

    /// What the records say about `image_id` (an image ID, or an alias of one).
    pub fn access(&self, image_id: &str) -> ImageAccess {
        self.lock().access(image_id, |at| self.fresh(at))
    }

    /// Whether the images present at the first start are known.
    pub fn preloaded_known(&self) -> bool {
        self.lock().preloaded.is_some()
    }

    /// Takes `present` (the runtime's image IDs), less the images recorded private, as
    /// the preloaded images, unless they are known already; whether they were taken now.
    ///
    /// # Errors
    ///
    /// As [`Self::credentialed`].
    pub fn note_preloaded(&self, present: &BTreeSet<String>) -> Result<bool, RecordsError> {
        let mut taken = false;
        self.change(|state| {
            taken = state.take_preloaded(present);
            taken
        })?;
        Ok(taken)
    }

    /// How many images count as preloaded (none before they are known).
    pub fn preloaded_len(&self) -> usize {
        self.lock().preloaded.as_ref().map_or(0, BTreeSet::len)
    }

    /// The last write failed and memory holds records the file does not.
    pub fn unwritten(&self) -> bool {
        self.shared.unwritten.load(Ordering::SeqCst)
    }

    /// Writes the records now, on the calling thread, when a change is not written yet or
    /// the last write failed; `Ok` when the file holds every change so far.
    ///
    /// # Errors
    ///
    /// [`RecordsError::Io`] when the file cannot be written.
    pub fn flush(&self) -> Result<(), RecordsError> {
        {
            let queue = self.shared.queue();
            if queue.changed == queue.written && !self.unwritten() {
                return Ok(());
            }
        }
        self.shared.write_now()
    }

    /// The index of the first of `hashes` recorded for `image_id` within the lifetime.
    /// (An index, not the recorded Secret's name: the same credentials may have been
    /// recorded from another namespace's Secret, and the pod's decision names its own.)
    pub fn remembered(&self, image_id: &str, hashes: &[String]) -> Option<usize> {
        let state = self.lock();
        let record = state.record(image_id)?;
        hashes.iter().position(|hash| {
            record
                .credentials
                .iter()
                .any(|c| &c.hash == hash && self.fresh(c.at))
        })
    }

    /// The Secret (empty for none) of the grant that lets the pod `pod` (`namespace/name`)
    /// with `uid` use `image_id`, within the lifetime.
    pub fn granted(&self, image_id: &str, pod: &str, uid: &str) -> Option<String> {
        if uid.is_empty() {
            return None;
        }
        let state = self.lock();
        state
            .record(image_id)?
            .pods
            .iter()
            .find(|g| g.uid == uid && g.pod == pod && self.fresh(g.at))
            .map(|g| g.secret.clone())
    }

    /// Records that the pod `pod` with `uid` may use `image_id` (its credentials from
    /// `secret` were accepted); nothing for a pod without a uid.
    ///
    /// # Errors
    ///
    /// As [`Self::credentialed`].
    pub fn grant(
        &self,
        image_id: &str,
        pod: &str,
        uid: &str,
        secret: &str,
    ) -> Result<(), RecordsError> {
        if uid.is_empty() {
            return Ok(());
        }
        let at = now();
        self.change(|state| {
            state.entry(image_id.into()).grant(pod, uid, secret, at);
            true
        })
    }

    /// What the records say about `reference`: an image ID, one of its aliases, or a name
    /// it was pulled as (the image as a pod spec names it). `None` when no record has it.
    pub fn summary(&self, reference: &str) -> Option<ImageSummary> {
        self.lock().summary(reference, |at| self.fresh(at))
    }

    /// The names `image_id` was pulled as, the most recently used first.
    pub fn names(&self, image_id: &str) -> Vec<String> {
        self.lock()
            .record(image_id)
            .map(|r| r.names.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Records that the credentials hashed `hash`, from `secret`, pulled (or were accepted
    /// for) `image_id` as `name`.
    ///
    /// # Errors
    ///
    /// [`RecordsError::Unwritten`] while the last write of the records failed; the record
    /// is kept in memory and written once a write succeeds.
    pub fn credentialed<'a>(
        &self,
        image: impl Into<ImageKey<'a>>,
        name: &str,
        hash: &str,
        secret: &str,
    ) -> Result<(), RecordsError> {
        let at = now();
        let image = image.into();
        self.change(|state| {
            let record = state.entry(image);
            record.name_used(name);
            record.private_since.get_or_insert(at);
            record.credential_used(hash, secret, at);
            true
        })
    }

    /// Records that credentials kubelet sent itself (a Docker Secret, a credential provider
    /// plugin), hashed `hash`, pulled `image_id` as `name` for `pod` (`namespace/name`,
    /// uid) when known. The image is *not* made private by this: kubelet checks later pods
    /// against its own pulled records (KEP-2535), and no Secret regcred reads could prove
    /// these credentials for another pod (a credential provider's never appear in one).
    /// The hash still lets a pod whose Docker Secret regcred can read be remembered, and
    /// the pod that pulled is granted the image.
    ///
    /// # Errors
    ///
    /// As [`Self::credentialed`].
    pub fn kubelet_credentialed<'a>(
        &self,
        image: impl Into<ImageKey<'a>>,
        name: &str,
        hash: &str,
        secret: &str,
        pod: Option<(&str, &str)>,
    ) -> Result<(), RecordsError> {
        let at = now();
        let image = image.into();
        self.change(|state| {
            let record = state.entry(image);
            record.name_used(name);
            record.kubelet_pulled_at = Some(at);
            record.credential_used(hash, secret, at);
            if let Some((pod, uid)) = pod.filter(|(_, uid)| !uid.is_empty()) {
                record.grant(pod, uid, secret, at);
            }
            true
        })
    }

    /// Records that `image_id` was pulled as `name` without credentials.
    ///
    /// # Errors
    ///
    /// As [`Self::credentialed`].
    pub fn public<'a>(
        &self,
        image: impl Into<ImageKey<'a>>,
        name: &str,
    ) -> Result<(), RecordsError> {
        let at = now();
        let image = image.into();
        self.change(|state| {
            let record = state.entry(image);
            // A private image stays private (`access`): its public time would count for
            // nothing, and the rewrite (two fsyncs) would cost every anonymous check.
            if record.private_since.is_some() {
                return false;
            }
            record.name_used(name);
            record.public_at = Some(at);
            true
        })
    }

    /// Forgets `image_id` (the image was removed).
    ///
    /// # Errors
    ///
    /// As [`Self::credentialed`].
    pub fn remove(&self, image_id: &str) -> Result<bool, RecordsError> {
        let mut removed = false;
        self.change(|state| {
            let id = state.id_of(image_id).unwrap_or(image_id).to_owned();
            removed = state.images.remove(&id).is_some();
            // An image removed and pulled again later is no longer the preloaded one.
            if let Some(preloaded) = state.preloaded.as_mut() {
                removed |= preloaded.remove(&id);
            }
            removed
        })?;
        Ok(removed)
    }

    /// Forgets every image not in `present` and every credential record past its
    /// lifetime; returns how many images were forgotten.
    ///
    /// # Errors
    ///
    /// As [`Self::credentialed`].
    pub fn retain(&self, present: &BTreeSet<String>) -> Result<usize, RecordsError> {
        let mut forgotten = 0;
        let cutoff = now().saturating_sub(self.ttl.as_secs());
        self.change(|state| {
            let (images, changed) = state.retain(present, cutoff);
            forgotten = images;
            changed
        })?;
        Ok(forgotten)
    }

    /// How many images have records.
    pub fn len(&self) -> usize {
        self.lock().images.len()
    }

    /// No image has a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, at: u64) -> bool {
        now().saturating_sub(at) <= self.ttl.as_secs()
    }

    /// Applies `edit`, which says whether it changed anything, and has the writer write
    /// the file when it did.
    ///
    /// # Errors
    ///
    /// [`RecordsError::Unwritten`] while the last write failed: the change is in memory
    /// and written once a write succeeds.
    fn change(&self, edit: impl FnOnce(&mut RecordsFile) -> bool) -> Result<(), RecordsError> {
        {
            let mut state = self.lock();
            if !edit(&mut state) {
                return Ok(());
            }
            if self.shared.file.is_none() {
                return Ok(());
            }
            // Counted under the state's lock, so a write that saw the count saw the edit.
            self.shared.queue().changed += 1;
        }
        self.shared.wake.notify_all();
        if self.unwritten() {
            let queue = self.shared.queue();
            return Err(RecordsError::Unwritten {
                path: self.shared.file.clone().unwrap_or_default(),
                reason: queue.error.clone(),
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordsFile> {
        // The state is valid after any panic (each change is one edit of a map).
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for PullRecords {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        self.shared.queue().stop = true;
        self.shared.wake.notify_all();
        let _ = writer.join();
    }
}
#[cfg(test)]
mod tests;
