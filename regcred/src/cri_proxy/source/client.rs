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

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often the files are looked at, at most (a `stat` each).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A [`kube::Client`] that follows its configuration's files.
pub(crate) struct ReloadingClient {
    current: RwLock<kube::Client>,
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
            current: RwLock::new(client),
            watch: None,
        }
    }

    /// A client from `KUBECONFIG` or `~/.kube/config`, else the in-cluster service
    /// account (whose token file kube itself reads again), following the kubeconfig's
    /// files.
    pub(crate) async fn infer() -> Result<Self, kube::Error> {
        let client = kube::Client::try_default().await?;
        let files = kubeconfig_files();
        let watch = (!files.is_empty()).then(|| Watch {
            state: Mutex::new((fingerprint(&files), Instant::now())),
            files,
            last_refused: Mutex::new(None),
        });
        Ok(Self {
            current: RwLock::new(client),
            watch,
        })
    }

    /// The client to use now: rebuilt first when a file changed since the last look.
    pub(crate) async fn get(&self) -> kube::Client {
        if let Some(watch) = &self.watch {
            let changed = {
                let mut state = watch.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.1.elapsed() < CHECK_EVERY {
                    None
                } else {
                    state.1 = Instant::now();
                    let now = fingerprint(&watch.files);
                    (now != state.0).then_some(now)
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
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
            *state = (fingerprint(&watch.files), Instant::now());
        }
        rebuilt
    }

    async fn rebuild(&self, why: &str) -> bool {
        let built = match kube::Config::infer().await {
            Ok(config) => kube::Client::try_from(config).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match built {
            Ok(client) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = client;
                tracing::info!(reason = why, "the Kubernetes client was rebuilt");
                true
            }
            Err(err) => {
                tracing::warn!(reason = why, error = %err,
                    "the Kubernetes client could not be rebuilt; the previous one is kept");
                false
            }
        }
    }
}

/// The files the kubeconfig in effect is made of and names: each `KUBECONFIG` path
/// (or `~/.kube/config`), and every client certificate, key and token file in it
/// (absolute: kube resolves them against their kubeconfig's directory). Empty when no
/// kubeconfig is readable (in-cluster).
fn kubeconfig_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::env::var_os("KUBECONFIG") {
        Some(value) if !value.is_empty() => std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
        _ => std::env::home_dir()
            .map(|h| h.join(".kube").join("config"))
            .into_iter()
            .filter(|p| p.exists())
            .collect(),
    };
    if files.is_empty() {
        return files;
    }
    let Ok(config) = kube::config::Kubeconfig::read() else {
        return files;
    };
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
    files.sort();
    files.dedup();
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
