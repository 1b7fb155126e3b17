//! The checks' configuration: kubelet's verification policy, its allowlist of preloaded
//! images, and the records the decisions at `CreateContainer` (see [`super::verify`]) read.

use std::sync::Arc;

use regcred_policy::ImageRef;

use super::records::PullRecords;

/// Which images need a pod's own credentials: kubelet's
/// `imagePullCredentialsVerificationPolicy`, applied to regcred's pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VerificationPolicy {
    /// No check: every pod uses every image on the node (regcred 0.1).
    NeverVerify,
    /// Images pulled with credentials need the pod's own; images without records
    /// (preloaded) and public ones do not. The default, as kubelet's.
    #[default]
    NeverVerifyPreloadedImages,
    /// As `NeverVerifyPreloadedImages`, except that preloaded images need credentials
    /// too unless they are in the allowlist.
    NeverVerifyAllowlistedImages,
    /// Every image needs the pod's credentials, or a pull without credentials that
    /// succeeds (a public image).
    AlwaysVerify,
}

impl VerificationPolicy {
    /// kubelet's name of the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverVerify => "NeverVerify",
            Self::NeverVerifyPreloadedImages => "NeverVerifyPreloadedImages",
            Self::NeverVerifyAllowlistedImages => "NeverVerifyAllowlistedImages",
            Self::AlwaysVerify => "AlwaysVerify",
        }
    }
}

impl std::fmt::Display for VerificationPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VerificationPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::NeverVerify,
            Self::NeverVerifyPreloadedImages,
            Self::NeverVerifyAllowlistedImages,
            Self::AlwaysVerify,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            format!(
                "`{s}` is not a verification policy: NeverVerify, NeverVerifyPreloadedImages, \
                 NeverVerifyAllowlistedImages or AlwaysVerify"
            )
        })
    }
}

/// The checks on images already on the node: a policy, its allowlist, and the records.
#[derive(Debug)]
pub struct ImageVerification {
    pub(super) policy: VerificationPolicy,
    pub(super) allowlist: Vec<String>,
    pub(super) records: Arc<PullRecords>,
}

impl ImageVerification {
    /// `policy` with the records in `records` and an empty allowlist.
    pub fn new(policy: VerificationPolicy, records: Arc<PullRecords>) -> Self {
        Self {
            policy,
            allowlist: Vec::new(),
            records,
        }
    }

    /// Image names (no tag or digest; `/*` at the end for everything under a path) that
    /// `NeverVerifyAllowlistedImages` lets every pod use when they are preloaded:
    /// kubelet's `preloadedImagesVerificationAllowlist`.
    ///
    /// # Errors
    ///
    /// A message naming a pattern with a tag, a digest or a `*` elsewhere.
    pub fn allowlist(mut self, patterns: Vec<String>) -> Result<Self, String> {
        let mut names = Vec::with_capacity(patterns.len());
        for pattern in &patterns {
            let (body, under) = match pattern.strip_suffix("/*") {
                Some(body) => (body, "/*"),
                None => (pattern.as_str(), ""),
            };
            let wrong = |why: &str| {
                format!(
                    "allowlist entry `{pattern}`: {why}; write an image name without tag or \
                     digest, optionally ending in /* (registry.example.com/team/*)"
                )
            };
            if body.is_empty() || body.contains('*') {
                return Err(wrong("a `*` may only end it, as `/*`"));
            }
            let name = if under.is_empty() {
                let image = ImageRef::parse(body).map_err(|err| wrong(&err.reason))?;
                if image.tag.is_some() || image.digest.is_some() {
                    return Err(wrong("it has a tag or a digest"));
                }
                image.name()
            } else {
                // A prefix: parsed with two made-up path components after it, so that a
                // registry alone (`registry.example.com/*`, `docker.io/*`) stays a
                // registry, and no `library/` is put in for Docker Hub.
                const UNDER: &str = "/regcred-x/regcred-y";
                let image =
                    ImageRef::parse(&format!("{body}{UNDER}")).map_err(|err| wrong(&err.reason))?;
                if image.tag.is_some() || image.digest.is_some() {
                    return Err(wrong("it has a tag or a digest"));
                }
                let name = image.name();
                name.strip_suffix(UNDER).unwrap_or(&name).to_owned()
            };
            names.push(format!("{name}{under}"));
        }
        self.allowlist = names;
        Ok(self)
    }

    /// The policy.
    pub fn policy(&self) -> VerificationPolicy {
        self.policy
    }

    /// The records.
    pub fn records(&self) -> &Arc<PullRecords> {
        &self.records
    }

    pub(super) fn allowlisted(&self, image: &str) -> bool {
        let Some(name) = repository_name(image) else {
            return false;
        };
        self.allowlist
            .iter()
            .any(|pattern| match pattern.strip_suffix("/*") {
                Some(prefix) => name
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/')),
                None => &name == pattern,
            })
    }
}

/// The normalized repository name of `image`, without tag or digest (`busybox:1.36` is
/// `docker.io/library/busybox`), by the policy's own image grammar ([`ImageRef`], which
/// owns Docker Hub's rules); `None` for what is not an image reference.
pub(super) fn repository_name(image: &str) -> Option<String> {
    ImageRef::parse(image).ok().map(|image| image.name())
}

#[cfg(test)]
#[path = "verification_tests.rs"]
mod tests;
