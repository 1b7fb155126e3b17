//! `dir:PATH`: Pod and Secret manifests in a directory, read again on every pull.
//!
//! Reading again on every pull (instead of watching the directory) was measured: a
//! directory of a few manifests reads and parses in tens of microseconds, against
//! 50-200 ms for the pull itself (BENCHMARKS.md, `## CRI proxy`). Nothing is cached, so a
//! rotated Secret is used on the very next pull, however the file was replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regcred_types::reader::{self, ManifestError, ManifestObject};
use regcred_types::{DEFAULT_NAMESPACE, SecretManifest};

use super::{PodPullSecrets, PodRef, PullSecretSource, SourceError, SourceFuture};
use regcred_serve::{BlockingError, BlockingExecutor};

/// Files larger than this are skipped with a warning.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// At most this many files are read; the rest are skipped with a warning.
const MAX_FILES: usize = 1000;

/// Pod and Secret manifests (`.yaml`, `.yml`, `.json`; multi-document YAML and
/// `kind: List` too) in one directory, for nodes without an API server and for tests.
///
/// The directory is read on a [`BlockingExecutor`] (its own, of [`Self::DEFAULT_READERS`]
/// slots, unless [`Self::executor`] shares one), never on the async runtime's threads.
///
/// A pod is found by `metadata.namespace` (default `default`) and `metadata.name`; its
/// `spec.imagePullSecrets` name Secrets in the same namespace. When the manifest has a
/// `metadata.uid`, it must be the sandbox's uid: a manifest of another pod of that name
/// (an older one, say) gives no credentials, with a warning. A manifest without a uid
/// matches any sandbox of that namespace and name; write the uid to bind it to one pod. A file that does not
/// parse is skipped with a warning (a file being rewritten must not break every pull);
/// warnings never quote a file's contents.
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
    executor: BlockingExecutor,
}

impl DirSource {
    /// How many reads of the directory run at once on a source's own executor.
    pub const DEFAULT_READERS: usize = 4;

    /// A source reading `dir`. Nothing is read until the first pull.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            executor: BlockingExecutor::new(Self::DEFAULT_READERS),
        }
    }

    /// Reads on `executor` instead of the source's own (to share one bound with the
    /// policy calls).
    #[must_use]
    pub fn executor(mut self, executor: BlockingExecutor) -> Self {
        self.executor = executor;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory and looks up `pod` (what each pull does, on the executor),
    /// blocking the calling thread.
    ///
    /// # Errors
    ///
    /// [`SourceError::Dir`] when the directory cannot be listed.
    pub fn lookup(&self, pod: &PodRef) -> Result<PodPullSecrets, SourceError> {
        let manifests = Manifests::read(&self.dir)?;
        let mut found = PodPullSecrets {
            warnings: manifests.warnings,
            ..PodPullSecrets::default()
        };
        let Some(listed) = manifests
            .pods
            .get(&(pod.namespace.clone(), pod.name.clone()))
        else {
            return Ok(found);
        };
        if let Some(uid) = &listed.uid
            && *uid != pod.uid
        {
            found.warnings.push(format!(
                "pod {pod} (uid {}) is not known as that pod: its manifest in {} has uid \
                 {uid}; no credentials for its pulls",
                pod.uid,
                self.dir.display()
            ));
            return Ok(found);
        }
        found.pod_found = true;
        let names = &listed.pull_secrets;
        for name in names {
            match manifests
                .secrets
                .get(&(pod.namespace.clone(), name.clone()))
            {
                Some(secret) => found.secrets.push(secret.clone()),
                None => found.missing.push(name.clone()),
            }
        }
        Ok(found)
    }
}

impl PullSecretSource for DirSource {
    fn pull_secrets<'a>(&'a self, pod: &'a PodRef) -> SourceFuture<'a> {
        Box::pin(async move {
            let source = self.clone();
            let pod = pod.clone();
            match self.executor.run(move || source.lookup(&pod)).await {
                Ok(found) => found,
                Err(err) => Err(SourceError::Dir {
                    path: self.dir.clone(),
                    source: std::io::Error::other(match err {
                        BlockingError::Closed => "the proxy is shutting down",
                        _ => "reading the directory failed unexpectedly",
                    }),
                }),
            }
        })
    }
}

/// What the source reads of a Pod manifest.
struct PodManifest {
    /// `metadata.uid`, when the manifest has one.
    uid: Option<String>,
    /// `spec.imagePullSecrets` names.
    pull_secrets: Vec<String>,
}

/// What one read of the directory found.
#[derive(Default)]
struct Manifests {
    /// (namespace, name) -> the pod's manifest.
    pods: HashMap<(String, String), PodManifest>,
    /// (namespace, name) -> Secret.
    secrets: HashMap<(String, String), SecretManifest>,
    warnings: Vec<String>,
}

impl Manifests {
    fn read(dir: &Path) -> Result<Self, SourceError> {
        let dir_error = |source| SourceError::Dir {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(dir_error)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        files.sort();
        let mut manifests = Self::default();
        if files.len() > MAX_FILES {
            manifests.warnings.push(format!(
                "{}: {} manifest files, only the first {MAX_FILES} are read",
                dir.display(),
                files.len()
            ));
            files.truncate(MAX_FILES);
        }
        for file in files {
            manifests.read_file(&file);
        }
        Ok(manifests)
    }

    fn read_file(&mut self, file: &Path) {
        let shown = file.display();
        match std::fs::metadata(file) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                self.warnings.push(format!(
                    "{shown}: skipped, larger than {MAX_FILE_BYTES} bytes"
                ));
                return;
            }
            Ok(_) => {}
            // Removed between listing and reading (a rename in progress): not an error.
            Err(_) => return,
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            self.warnings
                .push(format!("{shown}: skipped, unreadable or not UTF-8"));
            return;
        };
        for object in reader::read_manifests(&text) {
            match object {
                Ok(ManifestObject::Secret(secret)) => {
                    let key = (
                        secret
                            .metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
                        secret.metadata.name.clone().unwrap_or_default(),
                    );
                    self.secrets.insert(key, *secret);
                }
                Ok(ManifestObject::Other { kind, value, .. }) if kind == "Pod" => {
                    self.add_pod(&value);
                }
                Ok(_) | Err(ManifestError::NotAnObject { .. }) => {}
                Err(ManifestError::NotASecret { document, .. }) => self.warnings.push(format!(
                    "{shown}: document {document}: not a valid Secret manifest; skipped"
                )),
                // The reader's reason carries the position only, never the text.
                Err(err) => {
                    self.warnings
                        .push(format!("{shown}: {err}: not YAML or JSON; skipped"));
                }
            }
        }
    }

    fn add_pod(&mut self, value: &serde_json::Value) {
        let (namespace, name) = namespace_and_name(value);
        let secrets = value
            .pointer("/spec/imagePullSecrets")
            .and_then(|s| s.as_array())
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r.get("name").and_then(|n| n.as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let uid = value
            .pointer("/metadata/uid")
            .and_then(|v| v.as_str())
            .filter(|uid| !uid.is_empty())
            .map(str::to_owned);
        self.pods.insert(
            (namespace, name),
            PodManifest {
                uid,
                pull_secrets: secrets,
            },
        );
    }
}

fn namespace_and_name(value: &serde_json::Value) -> (String, String) {
    let field = |name| {
        value
            .pointer(&format!("/metadata/{name}"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    (
        field("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        field("name").unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str) -> PodRef {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: "u".into(),
        }
    }

    #[test]
    fn finds_the_pods_secrets_in_order_across_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pod.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: team}\n\
             spec:\n  imagePullSecrets: [{name: second}, {name: gone}, {name: first}]\n  containers: []\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("secrets.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: first, namespace: team}\n\
             type: kubernetes.io/regcredentials\nstringData: {serverAddress: r.io, username: u, password: p}\n\
             ---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: second, namespace: team}\n\
             type: kubernetes.io/regcredentials\nstringData: {serverAddress: r.io, auth: dTpw}\n\
             ---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: first, namespace: other}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("list.json"),
            r#"{"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "solo"}}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not read").unwrap();
        let source = DirSource::new(dir.path());

        let found = source.lookup(&pod("team", "app")).unwrap();
        assert!(found.pod_found);
        let names: Vec<_> = found.secrets.iter().map(|s| s.display_name()).collect();
        assert_eq!(names, ["team/second", "team/first"]);
        assert_eq!(found.missing, ["gone"]);
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);

        let solo = source.lookup(&pod("default", "solo")).unwrap();
        assert!(solo.pod_found && solo.secrets.is_empty());
        assert!(!source.lookup(&pod("team", "other")).unwrap().pod_found);
    }

    #[test]
    fn a_manifest_with_another_uid_is_not_the_sandboxs_pod() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pod.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: team, uid: new-uid}\n\
             spec:\n  imagePullSecrets: [{name: login}]\n  containers: []\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("secret.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: login, namespace: team}\n\
             type: kubernetes.io/regcredentials\nstringData: {serverAddress: r.io, auth: dTpw}\n",
        )
        .unwrap();
        let source = DirSource::new(dir.path());
        let sandbox = |uid: &str| PodRef {
            uid: uid.into(),
            ..pod("team", "app")
        };

        let current = source.lookup(&sandbox("new-uid")).unwrap();
        assert!(current.pod_found && current.secrets.len() == 1);
        let stale = source.lookup(&sandbox("old-uid")).unwrap();
        assert!(!stale.pod_found && stale.secrets.is_empty(), "{stale:?}");
        assert!(
            stale
                .warnings
                .iter()
                .any(|w| w.contains("team/app") && w.contains("old-uid") && w.contains("new-uid")),
            "{:?}",
            stale.warnings
        );
    }

    #[test]
    fn a_broken_file_is_a_warning_that_never_quotes_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a-not-a-secret.yaml"),
            "kind: Secret\nmetadata: {name: s}\ndata: CANARY-dir-secret\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b-not-yaml.yaml"),
            "kind: Pod\nmetadata: {name: CANARY-dir-secret\n  bad: [indent\n",
        )
        .unwrap();
        let found = DirSource::new(dir.path())
            .lookup(&pod("default", "x"))
            .unwrap();
        assert_eq!(found.warnings.len(), 2, "{:?}", found.warnings);
        for warning in &found.warnings {
            assert!(!warning.contains("CANARY"), "{warning}");
        }
        assert!(found.warnings[1].contains("line"), "{:?}", found.warnings);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = DirSource::new("/nonexistent/regcred-dir")
            .lookup(&pod("a", "b"))
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/regcred-dir"),
            "{err}"
        );
    }
}
