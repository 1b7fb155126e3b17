//! The `kube` source's client, rebuilt when the files it was built from change.
//!
//! kubelet rotates its client certificate (`rotateCertificates`, on by default): it writes
//! a new `kubelet-client-DATE.pem` and turns the `kubelet-client-current.pem` link to it.
//! A client built once keeps presenting the old certificate; once that expires the API
//! server authenticates nobody, the node's reads become `system:anonymous`'s and are
//! refused (403), and every pod on the node pulls without its Secrets. So the client
//! notes the files its kubeconfig names (the kubeconfig files themselves, client
//! certificates, keys and token files) and is rebuilt when any of them changes, and
//! when the API server stops accepting it.
//!
//! A node agent may also start before its kubeconfig exists (kubelet's TLS bootstrap
//! writes it): the client is then built at the first read after the files appear, and
//! reads fail with a clear error until then, instead of the agent exiting (issue 23,
//! finding 7).

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the files are looked at, at most (a `stat` each).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A [`kube::Client`] that follows its configuration's files.
pub(crate) struct ReloadingClient {
    /// `None` until a client could be built.
    current: RwLock<Option<kube::Client>>,
    /// Why it could not be built yet.
    missing: Mutex<String>,
    /// `None`: a client given as is (tests, library users), never rebuilt.
    watch: Option<Watch>,
}

struct Watch {
    files: Vec<PathBuf>,
    state: Mutex<(Fingerprint, Instant)>,
    /// When a refusal last rebuilt the client: concurrent refused reads rebuild it once.
    last_refused: Mutex<Option<Instant>>,
}

/// What identifies each file's content cheaply: the file the path leads to (links
/// followed), its size and its modification time; `None` for a file that is absent.
type Fingerprint = Vec<Option<(u64, u64, SystemTime)>>;

impl std::fmt::Debug for ReloadingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClient")
            .field("files", &self.watch.as_ref().map(|w| &w.files))
            .finish_non_exhaustive()
    }
}

impl ReloadingClient {
    /// `client` as it is, never rebuilt.
    pub(crate) fn fixed(client: kube::Client) -> Self {
        Self {
            current: RwLock::new(Some(client)),
            missing: Mutex::new(String::new()),
            watch: None,
        }
    }

    /// A client from `KUBECONFIG` or `~/.kube/config`, else the in-cluster service
    /// account (whose token file kube itself reads again), following the kubeconfig's
    /// files. When none is usable yet, the client is built once one is (looked for at
    /// most once a second, at a read).
    pub(crate) async fn infer() -> Self {
        let (client, missing) = match build().await {
            Ok(client) => (Some(client), String::new()),
            Err(err) => {
                tracing::warn!(error = %err,
                    "no usable kubeconfig or in-cluster configuration yet; pods' Secrets \
                     cannot be read (their pulls fail with UNAVAILABLE) until one appears, \
                     looked for again at each read");
                (None, err)
            }
        };
        let mut watch = Watch {
            state: Mutex::new((Vec::new(), Instant::now())),
            files: kubeconfig_paths(),
            last_refused: Mutex::new(None),
        };
        // The same files the later looks compare (the kubeconfigs and what they name), or
        // the first look would see a change that is not one.
        let first = fingerprint(&watch.files_now());
        watch.state.get_mut().unwrap_or_else(|e| e.into_inner()).0 = first;
        Self {
            current: RwLock::new(client),
            missing: Mutex::new(missing),
            watch: Some(watch),
        }
    }

    /// The client to use now: rebuilt first when a file changed since the last look, or
    /// built when there was none yet; `Err` says why there is none.
    pub(crate) async fn get(&self) -> Result<kube::Client, String> {
        if let Some(watch) = &self.watch {
            let absent = self
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_none();
            let changed = {
                let mut state = watch.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.1.elapsed() < CHECK_EVERY {
                    None
                } else {
                    state.1 = Instant::now();
                    let now = fingerprint(&watch.files_now());
                    (now != state.0 || absent).then_some(now)
                }
            };
            if let Some(now) = changed {
                // Kept as the last seen state only once a client is built from it: a
                // half-written file is tried again at the next look.
                if self.rebuild("a file of its kubeconfig changed").await {
                    let mut state = watch.state.lock().unwrap_or_else(|e| e.into_inner());
                    state.0 = now;
                }
            }
        }
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        current.ok_or_else(|| {
            format!(
                "no usable kubeconfig yet ({}); looked for again at the next read",
                self.missing.lock().unwrap_or_else(|e| e.into_inner())
            )
        })
    }

    /// Rebuilds the client because the API server did not accept its credentials;
    /// whether a new client was built (a fixed client never is).
    pub(crate) async fn rejected(&self) -> bool {
        let Some(watch) = &self.watch else {
            return false;
        };
        {
            let mut last = watch.last_refused.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < CHECK_EVERY) {
                // Rebuilt a moment ago for another refused read: use that client.
                return true;
            }
            *last = Some(Instant::now());
        }
        let rebuilt = self
            .rebuild("the API server did not accept its credentials")
            .await;
        if rebuilt {
            let mut state = watch.state.lock().unwrap_or_else(|e| e.into_inner());
            *state = (fingerprint(&watch.files_now()), Instant::now());
        }
        rebuilt
    }

    async fn rebuild(&self, why: &str) -> bool {
        match build().await {
            Ok(client) => {
                let first = self
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(client)
                    .is_none();
                if first {
                    tracing::info!("a usable kubeconfig appeared; the Kubernetes client is built");
                } else {
                    tracing::info!(reason = why, "the Kubernetes client was rebuilt");
                }
                true
            }
            Err(err) => {
                tracing::warn!(reason = why, error = %err,
                    "the Kubernetes client could not be rebuilt; the previous one (if any) is kept");
                *self.missing.lock().unwrap_or_else(|e| e.into_inner()) = err;
                false
            }
        }
    }
}

impl Watch {
    /// The files to look at now: the kubeconfig paths, and the files the kubeconfig
    /// names once it can be read (it may not exist yet).
    fn files_now(&self) -> Vec<PathBuf> {
        let mut files = self.files.clone();
        files.extend(named_files());
        files.sort();
        files.dedup();
        files
    }
}

/// A client from the kubeconfig or the in-cluster configuration.
async fn build() -> Result<kube::Client, String> {
    let config = kube::Config::infer().await.map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// The kubeconfig files in effect: each `KUBECONFIG` path, else `~/.kube/config`
/// (whether or not they exist yet).
fn kubeconfig_paths() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG") {
        Some(value) if !value.is_empty() => std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => std::env::home_dir()
            .map(|h| h.join(".kube").join("config"))
            .into_iter()
            .collect(),
    }
}

/// The client certificates, keys and token files the kubeconfig names (absolute: kube
/// resolves them against their kubeconfig's directory); none while it cannot be read.
fn named_files() -> Vec<PathBuf> {
    let Ok(config) = kube::config::Kubeconfig::read() else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for info in config
        .auth_infos
        .iter()
        .filter_map(|n| n.auth_info.as_ref())
    {
        for path in [&info.client_certificate, &info.client_key, &info.token_file]
            .into_iter()
            .flatten()
        {
            files.push(PathBuf::from(path));
        }
    }
    files
}

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.ino(), m.len(), m.modified().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turned_link_or_a_rewritten_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("client-a.pem");
        let b = dir.path().join("client-b.pem");
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        let current = dir.path().join("client-current.pem");
        std::os::unix::fs::symlink(&a, &current).unwrap();
        let files = vec![current.clone(), dir.path().join("absent")];
        let before = fingerprint(&files);
        assert_eq!(before, fingerprint(&files));
        assert!(before[1].is_none());

        // kubelet's rotation: the link turned to a new file.
        let next = dir.path().join("next");
        std::os::unix::fs::symlink(&b, &next).unwrap();
        std::fs::rename(&next, &current).unwrap();
        let turned = fingerprint(&files);
        assert_ne!(before, turned);

        // A file written again in place, same size.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&b, "TWO").unwrap();
        assert_ne!(turned, fingerprint(&files));
    }
}
