//! The installer's record of a node: which files it wrote, what was there before each
//! (kept byte for byte under the state directory), and whether the last install finished.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Content, Layout, Mode, Part};

/// The suffix of a file staged beside its target, and of a replaced file kept beside it
/// until the switch is done.
pub(super) const STAGED: &str = ".regcred-new";
pub(super) const KEPT: &str = ".regcred-old";

/// `path` with `suffix` added to its file name.
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The state file's name in the state directory.
const STATE_FILE: &str = "state.json";
/// The directory of the replaced files' copies, in the state directory.
const BACKUP_DIR: &str = "backup";
/// The installed files' identities (`stat`), in the state directory: what lets `status`
/// (the installer pod's readiness probe, every few seconds) know a file is unchanged
/// without reading tens of MiB of binaries each time.
const IDENTITIES_FILE: &str = "identities.json";
/// Who installed what is there now (the installer pod's UID), in the state directory:
/// the pod is Ready only once it has installed the node itself, not as soon as an
/// earlier version's install is in place.
const INSTALLED_BY_FILE: &str = "installed-by";

/// Records `id` as the installer of what the state describes.
///
/// # Errors
/// The state directory cannot be written.
pub(crate) fn record_installer(layout: &Layout, id: &str) -> Result<(), String> {
    write_atomic(
        &layout.on_host(&layout.state_dir.join(INSTALLED_BY_FILE)),
        &Content::Bytes(format!("{id}\n").into_bytes()),
        0o600,
    )
}

/// The installer recorded by [`record_installer`], if any.
pub(crate) fn installed_by(layout: &Layout) -> Option<String> {
    std::fs::read_to_string(layout.on_host(&layout.state_dir.join(INSTALLED_BY_FILE)))
        .ok()
        .map(|id| id.trim().to_owned())
}

/// A file's identity as `stat` gives it. A write, a rename over it or a change of its
/// permissions gives another one (the ctime cannot be set back from user space).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn identity(path: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt as _;
    // The file hashing reads (links followed), and a regular file only.
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    Some(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        ctime: meta.ctime(),
        ctime_nsec: meta.ctime_nsec(),
    })
}

fn identities_path(layout: &Layout) -> PathBuf {
    layout.on_host(&layout.state_dir.join(IDENTITIES_FILE))
}

/// Records the identity of every file of `state` whose bytes are, read now, what the
/// state records (stat, hash, stat again: a file that changed meanwhile, or differs, is
/// left out, and `status` hashes it each time).
///
/// # Errors
/// The state directory cannot be written.
pub(super) fn store_identities(layout: &Layout, state: &InstallState) -> Result<(), String> {
    let identities: BTreeMap<&Path, Identity> = state
        .files
        .iter()
        .filter_map(|file| {
            let on_host = layout.on_host(&file.path);
            let first = identity(&on_host)?;
            let digest = sha256_of_file(&on_host).ok()?;
            (digest == file.sha256 && identity(&on_host) == Some(first))
                .then_some((file.path.as_path(), first))
        })
        .collect();
    let bytes = serde_json::to_vec_pretty(&identities)
        .map_err(|e| format!("serializing the installed files' identities: {e}"))?;
    write_atomic(&identities_path(layout), &Content::Bytes(bytes), 0o600)
}

/// Forgets the recorded identities (on uninstall). Identities left from an earlier
/// install are harmless: a file switched or put back since has another ctime, so it is
/// hashed; and they count only while the state says `installed`.
///
/// # Errors
/// The file exists and cannot be removed.
fn forget_identities(layout: &Layout) -> Result<(), String> {
    remove_if_present(&identities_path(layout))
}

/// Removes the file `path`; one that is not there is fine.
fn remove_if_present(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// The recorded identities; none when there is no file or it cannot be read (then every
/// file is hashed).
fn load_identities(layout: &Layout) -> BTreeMap<PathBuf, Identity> {
    std::fs::read(identities_path(layout))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// What the installer did to a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InstallState {
    /// The format of this file (1).
    pub version: u32,
    /// The mode installed.
    pub mode: Mode,
    /// `installed`, or `switching` while (or if interrupted while) files are switched.
    pub phase: Phase,
    /// The regcred version that wrote it.
    pub regcred_version: String,
    /// Each file written, in switching order.
    pub files: Vec<FileRecord>,
    /// Host directories the installer created (removed again when empty).
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
}

/// Where an install stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// Files are being switched in (an interrupted install leaves this; `install` again
    /// finishes it, `uninstall` undoes it).
    Switching,
    /// Every file is in place and the services were restarted.
    Installed,
}

/// One file the installer wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FileRecord {
    /// The host path.
    pub path: PathBuf,
    /// What it is for.
    pub part: Part,
    /// sha256 of what the installer wrote.
    pub sha256: String,
    /// What was there before the first install.
    pub previous: Previous,
}

/// A file as it was before regcred wrote it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub(crate) enum Previous {
    /// There was no file.
    Absent,
    /// There was one; its bytes and permission bits are kept at `backup` (a host path).
    Kept {
        /// The copy's host path.
        backup: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// sha256 of its bytes.
        sha256: String,
    },
}

/// The hex sha256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex sha256 of a file's bytes, read in pieces.
///
/// # Errors
/// The file cannot be opened or read (`NotFound` as such).
pub(super) fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

impl Content {
    /// The hex sha256 of the content.
    ///
    /// # Errors
    /// A file content cannot be read (named).
    pub(crate) fn sha256(&self) -> Result<String, String> {
        match self {
            Self::Bytes(bytes) => Ok(sha256(bytes)),
            Self::File(path) => sha256_of_file(path)
                .map_err(|e| format!("reading the binary {}: {e}", path.display())),
        }
    }

    /// Writes the content into `out` (a file content in pieces).
    fn write_into(&self, out: &mut std::fs::File) -> std::io::Result<()> {
        match self {
            Self::Bytes(bytes) => out.write_all(bytes),
            Self::File(path) => std::io::copy(&mut std::fs::File::open(path)?, out).map(drop),
        }
    }
}

impl InstallState {
    /// The state file's host path.
    pub(crate) fn path(layout: &Layout) -> PathBuf {
        layout.state_dir.join(STATE_FILE)
    }

    /// Reads the node's state; `None` when regcred installed nothing here.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed (named, with what to do).
    pub(crate) fn load(layout: &Layout) -> Result<Option<Self>, String> {
        let path = layout.on_host(&Self::path(layout));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let state: Self = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{} is not an installer state regcred can read ({e}); the files it lists are \
                 left as they are",
                path.display()
            )
        })?;
        if state.version != 1 {
            return Err(format!(
                "{} has state version {}, which this regcred does not know: use the regcred \
                 that installed it",
                path.display(),
                state.version
            ));
        }
        Ok(Some(state))
    }

    /// Writes the state atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// The state directory cannot be written.
    pub(crate) fn store(&self, layout: &Layout) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| format!("serializing the installer state: {e}"))?;
        write_atomic(
            &layout.on_host(&Self::path(layout)),
            &Content::Bytes(bytes),
            0o600,
        )
    }

    /// Removes the state file and, with `copies`, the kept copies.
    ///
    /// # Errors
    /// They cannot be removed.
    pub(crate) fn remove(layout: &Layout, copies: bool) -> Result<(), String> {
        forget_identities(layout)?;
        remove_if_present(&layout.on_host(&layout.state_dir.join(INSTALLED_BY_FILE)))?;
        let state = layout.on_host(&Self::path(layout));
        let backups = layout.on_host(&layout.state_dir.join(BACKUP_DIR));
        if copies && backups.exists() {
            std::fs::remove_dir_all(&backups)
                .map_err(|e| format!("removing {}: {e}", backups.display()))?;
        }
        remove_if_present(&state)
    }
}

/// The host directories that writing `paths` (host files) would create, deepest first.
pub(super) fn missing_dirs<'a>(
    layout: &Layout,
    paths: impl IntoIterator<Item = &'a Path>,
) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    for path in paths {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d.parent().is_none() || layout.on_host(d).exists() || missing.iter().any(|m| m == d)
            {
                break;
            }
            missing.push(d.to_owned());
            dir = d.parent();
        }
    }
    missing.sort_by_key(|d: &PathBuf| std::cmp::Reverse(d.components().count()));
    missing
}

/// Removes those of `dirs` (host directories, deepest first) that are empty.
pub(super) fn remove_empty(layout: &Layout, dirs: &[PathBuf]) {
    for dir in dirs {
        let _ = std::fs::remove_dir(layout.on_host(dir));
    }
}

/// A host file's sha256 and permission bits as this process reaches it (`on_host`);
/// `None` when there is no file.
pub(super) fn read_with_mode(on_host: &Path) -> Result<Option<(String, u32)>, String> {
    let digest = match sha256_of_file(on_host) {
        Ok(digest) => digest,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", on_host.display())),
    };
    let mode = std::fs::metadata(on_host)
        .map_err(|e| format!("reading {}: {e}", on_host.display()))?
        .permissions()
        .mode()
        & 0o7777;
    Ok(Some((digest, mode)))
}

/// Keeps a copy of the host file `path` (whose `sha256` and `mode` were read) before
/// regcred first replaces it.
pub(super) fn keep(
    layout: &Layout,
    index: usize,
    path: &Path,
    sha256: &str,
    mode: u32,
) -> Result<Previous, String> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let backup = layout
        .state_dir
        .join(BACKUP_DIR)
        .join(format!("{index}-{name}"));
    put(
        &layout.on_host(&backup),
        &Content::File(layout.on_host(path)),
        sha256,
        0o600,
    )?;
    Ok(Previous::Kept {
        backup,
        mode,
        sha256: sha256.to_owned(),
    })
}

/// Writes `content` to `path` through a temporary file beside it: written, synced, given
/// `mode`, renamed over `path`. Parent directories are created.
pub(super) fn write_atomic(path: &Path, content: &Content, mode: u32) -> Result<(), String> {
    put(path, content, &content.sha256()?, mode)
}

/// [`write_atomic`] of a content whose sha256 (`expected`) is known.
fn put(path: &Path, content: &Content, expected: &str, mode: u32) -> Result<(), String> {
    let staged = stage(path, content, expected, mode)?;
    std::fs::rename(&staged, path).map_err(|e| {
        let _ = std::fs::remove_file(&staged);
        format!("renaming {} to {}: {e}", staged.display(), path.display())
    })
}

/// Writes `content` (whose sha256 is `expected`) beside `path` (as `NAME.regcred-new`),
/// synced, with `mode`, and reads it back; returns the staged path.
pub(super) fn stage(
    path: &Path,
    content: &Content,
    expected: &str,
    mode: u32,
) -> Result<PathBuf, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let staged = beside(path, STAGED);
    let written = (|| {
        let mut file = std::fs::File::create(&staged)?;
        content.write_into(&mut file)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(format!("writing {}: {e}", staged.display()));
    }
    let back = sha256_of_file(&staged).map_err(|e| format!("reading {}: {e}", staged.display()))?;
    if back != expected {
        let _ = std::fs::remove_file(&staged);
        return Err(format!("{} reads back different bytes", staged.display()));
    }
    Ok(staged)
}

/// One line per file: installed and unchanged, changed since, or missing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileStatus {
    /// The host path.
    pub path: PathBuf,
    /// `installed` (as written), `changed` (someone else's bytes now) or `missing`.
    pub state: &'static str,
    /// Whether the file was there before regcred.
    pub replaced_a_file: bool,
}

/// The node's install as the state file and the files say.
///
/// # Errors
/// The state file cannot be read.
pub(crate) fn status(layout: &Layout) -> Result<Option<(InstallState, Vec<FileStatus>)>, String> {
    let Some(state) = InstallState::load(layout)? else {
        return Ok(None);
    };
    let identities = load_identities(layout);
    let files = state
        .files
        .iter()
        .map(|file| FileStatus {
            path: file.path.clone(),
            state: {
                let on_host = layout.on_host(&file.path);
                let unchanged = state.phase == Phase::Installed
                    && identities
                        .get(&file.path)
                        .is_some_and(|was| identity(&on_host).as_ref() == Some(was));
                if unchanged {
                    "installed"
                } else {
                    match sha256_of_file(&on_host) {
                        Ok(digest) if digest == file.sha256 => "installed",
                        Ok(_) => "changed",
                        Err(_) => "missing",
                    }
                }
            },
            replaced_a_file: matches!(file.previous, Previous::Kept { .. }),
        })
        .collect();
    Ok(Some((state, files)))
}
