//! Where the records live: the directory claimed by its lock, the file read and checked,
//! and the writer thread that writes each newest state atomically.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::file::RecordsFile;
use super::{LOCK_FILE, RECORDS_FILE, TEMPORARY_PREFIX, VERSION};

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

/// What the records and their writer share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) file: Option<PathBuf>,
    pub(super) state: Mutex<RecordsFile>,
    /// The last write failed: memory holds records the file does not.
    pub(super) unwritten: AtomicBool,
    /// Serializes writes, so that an older state is never written after a newer one.
    pub(super) writing: Mutex<()>,
    pub(super) queue: Mutex<Queue>,
    pub(super) wake: Condvar,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    /// Changes made so far, and how many of them the file holds.
    pub(super) changed: u64,
    pub(super) written: u64,
    pub(super) stop: bool,
    /// Why the last write failed.
    pub(super) error: String,
}

/// How long the writer waits before trying a failed write again.
const WRITE_RETRY: Duration = Duration::from_secs(1);

impl Shared {
    pub(super) fn new(file: Option<PathBuf>, state: RecordsFile) -> Arc<Self> {
        Arc::new(Self {
            file,
            state: Mutex::new(state),
            unwritten: AtomicBool::new(false),
            writing: Mutex::new(()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        })
    }

    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the newest state now (on the calling thread).
    pub(super) fn write_now(&self) -> Result<(), RecordsError> {
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
    pub(super) fn run_writer(&self) {
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

/// The records in `file` (which this process has locked), or a fresh file written there
/// when there is none.
pub(super) fn read_or_create(file: &Path) -> Result<RecordsFile, RecordsError> {
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
pub(super) fn parse(file: &Path, bytes: &[u8]) -> Result<RecordsFile, RecordsError> {
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

pub(super) fn write_atomically(file: &Path, state: &RecordsFile) -> Result<(), RecordsError> {
    let bytes = serde_json::to_vec_pretty(state).map_err(|err| RecordsError::Io {
        path: file.to_owned(),
        source: err.into(),
    })?;
    write_bytes_atomically(file, &bytes)
}

/// `bytes` into `file`: a temporary file beside it, fsync, rename, fsync of the directory.
pub(super) fn write_bytes_atomically(file: &Path, bytes: &[u8]) -> Result<(), RecordsError> {
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

/// Claims the records directory `dir` for this process: creates it (mode 0700) when
/// missing, refuses one that holds anything but regcred's records, makes it mode 0700,
/// and locks its lock file, returned to be held as long as the records live.
pub(super) fn claim(dir: &Path) -> Result<std::fs::File, RecordsError> {
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
                if name != RECORDS_FILE && name != LOCK_FILE && !name.starts_with(TEMPORARY_PREFIX)
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
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
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
    Ok(lock)
}
