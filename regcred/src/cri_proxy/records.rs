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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

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

/// Why the records could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The directory or file could not be created, read or written.
    #[error("pulled-image records {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The directory holds files that are not regcred's: it is not a records directory
    /// (`--pull-records-dir /var/lib` would otherwise be made mode 0700).
    #[error(
        "pulled-image records {path}: not a regcred records directory, it holds {entry}; \
         give --pull-records-dir a directory of regcred's own (default \
         /var/lib/regcred/cri-proxy), missing or empty"
    )]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// A name in it that is not regcred's.
        entry: String,
    },
    /// The last write of the records failed; changes are kept in memory until one
    /// succeeds.
    #[error(
        "pulled-image records {path}: the last write failed ({reason}); the change is kept in memory and written once a write succeeds"
    )]
    Unwritten {
        /// The file.
        path: PathBuf,
        /// Why the last write failed.
        reason: String,
    },
    /// Another process holds the directory's lock.
    #[error(
        "pulled-image records {path}: another process uses this records directory (its lock \
         {lock} is held); run one regcred node agent per directory (the host service or the \
         DaemonSet, not both)"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The file is not a records file this version understands.
    #[error(
        "pulled-image records {path}: {reason}; move the file away to start over (with the \
         key kept, no image then counts as preloaded: every pod is verified with the \
         registry once for each image it uses)"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The credential fields a record's hash is made of (the `AuthConfig` the runtime got).
///
/// Its `Debug` shows the username and server address and only whether each secret field
/// is set: the values are what the records exist not to keep.
#[derive(Clone, Copy)]
pub struct CredentialFields<'a> {
    /// `username`.
    pub username: &'a str,
    /// `password`.
    pub password: &'a str,
    /// `auth`.
    pub auth: &'a str,
    /// `server_address`.
    pub server_address: &'a str,
    /// `identity_token`.
    pub identity_token: &'a str,
    /// `registry_token`.
    pub registry_token: &'a str,
}

impl std::fmt::Debug for CredentialFields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |value: &str| if value.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("CredentialFields")
            .field("username", &self.username)
            .field("password", &shown(self.password))
            .field("auth", &shown(self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &shown(self.identity_token))
            .field("registry_token", &shown(self.registry_token))
            .finish()
    }
}

impl<'a> From<&'a regcred_types::AuthConfig> for CredentialFields<'a> {
    fn from(a: &'a regcred_types::AuthConfig) -> Self {
        Self {
            username: &a.username,
            password: a.password.expose(),
            auth: a.auth.expose(),
            server_address: &a.server_address,
            identity_token: a.identity_token.expose(),
            registry_token: a.registry_token.expose(),
        }
    }
}

impl<'a> From<&'a regcred_cri_api::runtime::v1::AuthConfig> for CredentialFields<'a> {
    fn from(a: &'a regcred_cri_api::runtime::v1::AuthConfig) -> Self {
        Self {
            username: &a.username,
            password: &a.password,
            auth: &a.auth,
            server_address: &a.server_address,
            identity_token: &a.identity_token,
            registry_token: &a.registry_token,
        }
    }
}

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

/// What the records and their writer share.
#[derive(Debug)]
struct Shared {
    file: Option<PathBuf>,
    state: Mutex<RecordsFile>,
    /// The last write failed: memory holds records the file does not.
    unwritten: AtomicBool,
    /// Serializes writes, so that an older state is never written after a newer one.
    writing: Mutex<()>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// Changes made so far, and how many of them the file holds.
    changed: u64,
    written: u64,
    stop: bool,
    /// Why the last write failed.
    error: String,
}

/// How long the writer waits before trying a failed write again.
const WRITE_RETRY: Duration = Duration::from_secs(1);

impl Shared {
    fn new(file: Option<PathBuf>, state: RecordsFile) -> Arc<Self> {
        Arc::new(Self {
            file,
            state: Mutex::new(state),
            unwritten: AtomicBool::new(false),
            writing: Mutex::new(()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the newest state now (on the calling thread).
    fn write_now(&self) -> Result<(), RecordsError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (bytes, changed) = {
            let state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (serde_json::to_vec_pretty(&*state), self.queue().changed)
        };
        let written = bytes
            .map_err(|err| RecordsError::Io {
                path: file.clone(),
                source: err.into(),
            })
            .and_then(|bytes| write_bytes_atomically(file, &bytes));
        let mut queue = self.queue();
        match &written {
            Ok(()) => {
                queue.written = queue.written.max(changed);
                queue.error.clear();
                self.unwritten.store(false, Ordering::SeqCst);
            }
            Err(err) => {
                queue.error = err.to_string();
                self.unwritten.store(true, Ordering::SeqCst);
            }
        }
        written
    }

    /// The writer thread: waits for changes, writes the newest state, retries a failed
    /// write every [`WRITE_RETRY`], and writes once more when told to stop.
    fn run_writer(&self) {
        loop {
            let stop = {
                let mut queue = self.queue();
                while queue.changed == queue.written && !queue.stop {
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                queue.stop
            };
            let failed = self.write_now().is_err();
            if stop {
                return;
            }
            if failed {
                let queue = self.queue();
                let _ = self
                    .wake
                    .wait_timeout_while(queue, WRITE_RETRY, |q| !q.stop);
            }
        }
    }
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

/// The HMAC key of the credential hashes; its `Debug` shows nothing of it.
struct HashKey([u8; KEY_BYTES]);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

impl HashKey {
    /// A new random key (the OS's random source; without it, the time and PID hashed,
    /// which still keeps hashes from being compared across nodes).
    fn random() -> Self {
        let mut key = [0u8; KEY_BYTES];
        if getrandom::fill(&mut key).is_err() {
            let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
            key.copy_from_slice(&Sha256::digest(seed.as_bytes()));
        }
        Self(key)
    }

    /// The key in `path`, or a new one written there (mode 0600; its directory created).
    fn load_or_create(path: &Path) -> Result<Self, RecordsError> {
        let io = |source| RecordsError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] =
                    bytes
                        .try_into()
                        .map_err(|bytes: Vec<u8>| RecordsError::Invalid {
                            path: path.to_owned(),
                            reason: format!(
                                "a records key is {KEY_BYTES} bytes, this file has {}",
                                bytes.len()
                            ),
                        })?;
                Ok(Self(key))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let key = Self::random();
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    temporary
                        .as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                temporary.write_all(&key.0).map_err(io)?;
                temporary.as_file().sync_all().map_err(io)?;
                // Never over a key another process wrote meanwhile.
                temporary
                    .persist_noclobber(path)
                    .map_err(|err| io(err.error))?;
                Ok(key)
            }
            Err(source) => Err(io(source)),
        }
    }
}

/// The key file for the records directory `dir` by default: `DIR.key` beside it.
pub fn default_key_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".key");
    dir.with_file_name(name)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordsFile {
    version: u32,
    /// Version 1's salt: read to recognize such a file, never written.
    #[serde(default, skip_serializing)]
    salt: String,
    /// By image ID.
    images: BTreeMap<String, ImageRecord>,
    /// The images (by ID) on the node when regcred first listed them with these records:
    /// what "preloaded" means. `None` until that listing (a fresh file; a file of an
    /// earlier regcred, which is then given the images without a record it finds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preloaded: Option<BTreeSet<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageRecord {
    /// Names the image was pulled as, the most recently used last; at most
    /// [`MAX_NAMES`] (pod authors choose them: a record must not grow with them).
    names: Vec<String>,
    /// Other references the runtime gave for the image (a pull answered with a
    /// repository digest), looked up like the ID; at most [`MAX_NAMES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    aliases: Vec<String>,
    /// Seconds since the epoch of the last pull with credentials (the image stays private
    /// while it is on the node, whatever the age of its credential records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_since: Option<u64>,
    /// Seconds since the epoch of the last pull without credentials that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_at: Option<u64>,
    /// Seconds since the epoch of the last pull with credentials kubelet sent itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kubelet_pulled_at: Option<u64>,
    /// The credentials that pulled it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    credentials: Vec<CredentialRecord>,
    /// Pods that were allowed to use it, by uid: their containers restart without a
    /// question to the API server or the registry until the record lifetime ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pods: Vec<PodGrant>,
}

impl ImageRecord {
    /// Notes that the pod `pod` with `uid` may use the image (its newest grant last; the
    /// oldest beyond [`MAX_POD_GRANTS`] go).
    fn grant(&mut self, pod: &str, uid: &str, secret: &str, at: u64) {
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
    fn name_used(&mut self, name: &str) {
        self.names.retain(|n| n != name);
        self.names.push(name.to_owned());
        let excess = self.names.len().saturating_sub(MAX_NAMES);
        self.names.drain(..excess);
    }

    /// Notes that the credentials hashed `hash`, from `secret`, pulled or were accepted for
    /// the image at `at` (their newest use replaces an older one).
    fn credential_used(&mut self, hash: &str, secret: &str, at: u64) {
        self.credentials.retain(|c| c.hash != hash);
        self.credentials.push(CredentialRecord {
            hash: hash.to_owned(),
            secret: secret.to_owned(),
            at,
        });
    }

    fn alias(&mut self, alias: Option<&str>) {
        let Some(alias) = alias else { return };
        self.aliases.retain(|a| a != alias);
        self.aliases.push(alias.to_owned());
        let excess = self.aliases.len().saturating_sub(MAX_NAMES);
        self.aliases.drain(..excess);
    }
}

impl RecordsFile {
    /// The ID of the record `reference` names: its own, or the one it is an alias of.
    fn id_of(&self, reference: &str) -> Option<&str> {
        if let Some((id, _)) = self.images.get_key_value(reference) {
            return Some(id);
        }
        self.images
            .iter()
            .find(|(_, r)| r.aliases.iter().any(|a| a == reference))
            .map(|(id, _)| id.as_str())
    }

    fn record(&self, reference: &str) -> Option<&ImageRecord> {
        self.id_of(reference).and_then(|id| self.images.get(id))
    }

    /// The record of `image`, created under its ID when there is none, with its alias.
    fn entry(&mut self, image: ImageKey<'_>) -> &mut ImageRecord {
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
struct CredentialRecord {
    /// `hmac-sha256:` hex of the credential fields under the node's key.
    hash: String,
    /// The Secret the credentials came from (`namespace/name`), for logs.
    secret: String,
    /// Seconds since the epoch of the last pull or verification with them.
    at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodGrant {
    /// `namespace/name`.
    pod: String,
    /// The pod's uid (a pod deleted and created again under its name is another pod).
    uid: String,
    /// The Secret whose credentials were accepted (empty for a pull without credentials).
    secret: String,
    /// Seconds since the epoch of the decision.
    at: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordsError::Io { path, source }
        };
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                for entry in std::fs::read_dir(dir).map_err(io(dir))? {
                    let name = entry.map_err(io(dir))?.file_name();
                    let name = name.to_string_lossy();
                    if name != RECORDS_FILE
                        && name != LOCK_FILE
                        && !name.starts_with(TEMPORARY_PREFIX)
                    {
                        return Err(RecordsError::NotOurs {
                            path: dir.to_owned(),
                            entry: name.into_owned(),
                        });
                    }
                }
            }
            Err(err) => return Err(io(dir)(err)),
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(RecordsError::Locked {
                    path: dir.to_owned(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(&lock_path)(err)),
        }
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
        use hmac::{KeyInit as _, Mac as _};
        let mut digest = hmac::Hmac::<Sha256>::new_from_slice(&self.key.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        for field in [
            credential.username,
            credential.password,
            credential.auth,
            credential.server_address,
            credential.identity_token,
            credential.registry_token,
        ] {
            // Length-prefixed, so that no two different credentials hash alike.
            digest.update(&(field.len() as u64).to_be_bytes());
            digest.update(field.as_bytes());
        }
        format!("hmac-sha256:{}", hex(&digest.finalize().into_bytes()))
    }

    /// What the records say about `image_id` (an image ID, or an alias of one).
    pub fn access(&self, image_id: &str) -> ImageAccess {
        let state = self.lock();
        let record = state.record(image_id);
        // Private wins: once pulled with credentials, a pull without them under some name
        // (a mirror, another repository with the same bytes) does not make it public;
        // each pod then shows its own access.
        if record.is_some_and(|r| r.private_since.is_some()) {
            ImageAccess::Private
        } else if record.is_some_and(|r| r.public_at.is_some_and(|at| self.fresh(at))) {
            ImageAccess::Public
        } else if record.is_some_and(|r| r.kubelet_pulled_at.is_some()) {
            ImageAccess::KubeletChecked
        } else if state
            .preloaded
            .as_ref()
            .is_some_and(|p| p.contains(state.id_of(image_id).unwrap_or(image_id)))
        {
            ImageAccess::Preloaded
        } else {
            ImageAccess::Unrecorded
        }
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
            if state.preloaded.is_some() {
                return false;
            }
            let private: BTreeSet<&String> = state
                .images
                .iter()
                .filter(|(_, r)| r.private_since.is_some())
                .map(|(id, _)| id)
                .collect();
            state.preloaded = Some(
                present
                    .iter()
                    .filter(|id| !private.contains(id))
                    .cloned()
                    .collect(),
            );
            taken = true;
            true
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
        let (id, secrets, pods, names) = {
            let state = self.lock();
            let id = state.id_of(reference).map(str::to_owned).or_else(|| {
                state
                    .images
                    .iter()
                    .find(|(_, r)| r.names.iter().any(|n| n == reference))
                    .map(|(id, _)| id.clone())
            })?;
            let record = state.images.get(&id)?;
            let secrets: BTreeSet<String> = record
                .credentials
                .iter()
                .filter(|c| self.fresh(c.at))
                .map(|c| c.secret.clone())
                .collect();
            let pods = record
                .pods
                .iter()
                .filter(|g| self.fresh(g.at))
                .map(|g| PodSummary {
                    pod: g.pod.clone(),
                    uid: g.uid.clone(),
                    secret: g.secret.clone(),
                })
                .collect();
            let names = record.names.iter().rev().cloned().collect();
            (id, secrets.into_iter().collect(), pods, names)
        };
        let access = self.access(&id).as_str();
        Some(ImageSummary {
            id,
            access,
            names,
            secrets,
            pods,
        })
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
        let ttl = self.ttl;
        let cutoff = now().saturating_sub(ttl.as_secs());
        self.change(|state| {
            let before = state.images.len();
            state.images.retain(|id, _| present.contains(id));
            forgotten = before - state.images.len();
            let preloaded_before = state.preloaded.as_ref().map_or(0, BTreeSet::len);
            if let Some(preloaded) = state.preloaded.as_mut() {
                preloaded.retain(|id| present.contains(id));
            }
            let unpreloaded = preloaded_before - state.preloaded.as_ref().map_or(0, BTreeSet::len);
            let mut expired = 0;
            for record in state.images.values_mut() {
                let before = record.credentials.len() + record.pods.len();
                record.credentials.retain(|c| c.at >= cutoff);
                record.pods.retain(|g| g.at >= cutoff);
                expired += before - record.credentials.len() - record.pods.len();
            }
            forgotten > 0 || expired > 0 || unpreloaded > 0
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

impl RecordsFile {
    fn fresh() -> Self {
        Self {
            version: VERSION,
            salt: String::new(),
            images: BTreeMap::new(),
            preloaded: None,
        }
    }
}

/// The records in `file` (which this process has locked), or a fresh file written there
/// when there is none.
fn read_or_create(file: &Path) -> Result<RecordsFile, RecordsError> {
    match std::fs::read(file) {
        Ok(bytes) => parse(file, &bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let fresh = RecordsFile::fresh();
            write_atomically(file, &fresh)?;
            Ok(fresh)
        }
        Err(source) => Err(RecordsError::Io {
            path: file.to_owned(),
            source,
        }),
    }
}

/// The records file's bytes, checked: this version's format, or version 1's, whose
/// salted hashes (and pod grants) are dropped: the images keep their names and whether
/// they are private or public; pods are verified with the registry once more.
fn parse(file: &Path, bytes: &[u8]) -> Result<RecordsFile, RecordsError> {
    let mut parsed: RecordsFile =
        serde_json::from_slice(bytes).map_err(|err| RecordsError::Invalid {
            path: file.to_owned(),
            reason: err.to_string(),
        })?;
    match parsed.version {
        VERSION if parsed.salt.is_empty() => Ok(parsed),
        1 if parsed.salt.len() == 64 => {
            let mut dropped = 0;
            for record in parsed.images.values_mut() {
                dropped += record.credentials.len() + record.pods.len();
                record.credentials.clear();
                record.pods.clear();
            }
            tracing::warn!(file = %file.display(), dropped,
                "pulled-image records of an earlier regcred (salted hashes): their credential \
                 records are dropped, the images stay as recorded; pods are verified with the \
                 registry again once");
            parsed.version = VERSION;
            parsed.salt.clear();
            Ok(parsed)
        }
        version => Err(RecordsError::Invalid {
            path: file.to_owned(),
            reason: format!(
                "version {version}{}, expected version {VERSION} (or 1, which is migrated)",
                if parsed.salt.is_empty() {
                    ""
                } else {
                    " with a salt"
                }
            ),
        }),
    }
}

fn write_atomically(file: &Path, state: &RecordsFile) -> Result<(), RecordsError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|err| RecordsError::Io {
        path: file.to_owned(),
        source: err.into(),
    })?;
    write_bytes_atomically(file, &bytes)
}

/// `bytes` into `file`: a temporary file beside it, fsync, rename, fsync of the directory.
fn write_bytes_atomically(file: &Path, bytes: &[u8]) -> Result<(), RecordsError> {
    let io = |source| RecordsError::Io {
        path: file.to_owned(),
        source,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    temporary.write_all(bytes).map_err(io)?;
    temporary.as_file().sync_all().map_err(io)?;
    temporary.persist(file).map_err(|err| io(err.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
