//! Where the proxy finds a pod's image pull Secrets: [`PullSecretSource`], with the
//! Kubernetes API ([`KubeSource`]) and a directory of manifests ([`DirSource`]).

pub(crate) mod client;
mod dir;
mod kube;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;

use regcred_types::SecretManifest;

pub use dir::DirSource;
pub use kube::{
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALE_FOR, DEFAULT_TTL, KubeSource, KubeSourceBuilder,
};

/// The pod a `PullImage` is for, from the request's `sandbox_config.metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`: the pod whose Secrets are used must have this uid (a static pod's
    /// mirror carries it in the `kubernetes.io/config.mirror` annotation instead).
    pub uid: String,
}

impl PodRef {
    /// The pod a request's `sandbox_config` names; `None` without one or without a name
    /// (not kubelet: crictl and other node-local clients).
    pub fn from_sandbox(
        config: Option<regcred_cri_api::runtime::v1::PodSandboxConfig>,
    ) -> Option<Self> {
        config
            .and_then(|c| c.metadata)
            .filter(|m| !m.name.is_empty())
            .map(|m| Self {
                namespace: m.namespace,
                name: m.name,
                uid: m.uid,
            })
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a source found for one pod.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PodPullSecrets {
    /// False when the source does not know the pod (the pull then goes on without
    /// credentials, as kubelet's would).
    pub pod_found: bool,
    /// The pod's image pull Secrets that exist, in `imagePullSecrets` order.
    pub secrets: Vec<SecretManifest>,
    /// `imagePullSecrets` names that do not exist (kubelet skips them too).
    pub missing: Vec<String>,
    /// Things the operator should know (unreadable files, cached answers served), one
    /// line each; never a secret value.
    pub warnings: Vec<String>,
    /// `imagePullSecrets` the source may not read, each as `NAMESPACE/NAME: why` (the
    /// API's status); their credentials are not used, and a failed pull says so.
    pub unreadable: Vec<String>,
}

/// Why a source could not answer. Messages name files, pods and Secrets, never values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The manifest directory could not be read.
    #[error("cannot read the manifest directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Kubernetes API failed and no cached answer young enough was at hand.
    #[error("the Kubernetes API failed to get {object} and no cached copy is usable: {reason}")]
    Api {
        /// `pod NAMESPACE/NAME` or `secret NAMESPACE/NAME`.
        object: String,
        /// The API's or the transport's error.
        reason: String,
    },
}

/// A future returned by [`PullSecretSource::pull_secrets`].
pub type SourceFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PodPullSecrets, SourceError>> + Send + 'a>>;

/// Finds a pod's image pull Secrets.
///
/// Implementations hold no state that matters across restarts (caches only), and follow
/// updates: a rotated Secret is used on a later pull without restarting the proxy.
pub trait PullSecretSource: fmt::Debug + Send + Sync {
    /// The Secrets named by the pod's `spec.imagePullSecrets`, in order.
    fn pull_secrets<'a>(&'a self, pod: &'a PodRef) -> SourceFuture<'a>;
}

/// The `--secrets-from` flag: `kube` or `dir:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsFrom {
    /// The Kubernetes API ([`KubeSource`]).
    Kube,
    /// A directory of manifests ([`DirSource`]).
    Dir(PathBuf),
}

impl FromStr for SecretsFrom {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "kube" => Ok(Self::Kube),
            _ => match value.strip_prefix("dir:") {
                Some(path) if !path.is_empty() => Ok(Self::Dir(PathBuf::from(path))),
                _ => Err(format!(
                    "`{value}` is not a pull secret source: use `kube` or `dir:PATH`"
                )),
            },
        }
    }
}

impl fmt::Display for SecretsFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kube => f.write_str("kube"),
            Self::Dir(path) => write!(f, "dir:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_from_parses_kube_and_dir() {
        assert_eq!("kube".parse(), Ok(SecretsFrom::Kube));
        assert_eq!(
            "dir:/etc/regcred".parse(),
            Ok(SecretsFrom::Dir("/etc/regcred".into()))
        );
        for bad in ["", "dir:", "kubernetes", "/etc/regcred"] {
            assert!(bad.parse::<SecretsFrom>().is_err(), "{bad}");
        }
        assert_eq!(SecretsFrom::Dir("/x".into()).to_string(), "dir:/x");
    }
}
