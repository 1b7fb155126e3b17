//! Docker's credential formats as stored in `kubernetes.io/dockerconfigjson` and
//! `kubernetes.io/dockercfg` Secrets.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// The content of the `.dockerconfigjson` key: Docker's `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DockerConfigJson {
    /// Entries keyed by registry (`https://index.docker.io/v1/`, `r.example:5000`, ...).
    #[serde(default)]
    pub auths: BTreeMap<String, DockerConfigEntry>,
}

/// The content of the legacy `.dockercfg` key: the entries without the `auths` wrapper.
pub type DockerCfg = BTreeMap<String, DockerConfigEntry>;

/// One registry entry of a Docker config. Unlike kubelet, regcred keeps `identitytoken`
/// and `registrytoken`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DockerConfigEntry {
    /// User name. Credential helpers write [`IDENTITY_TOKEN_USERNAME`] here when the
    /// entry holds an identity token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// Base64 of `username:password`; when set it overrides `username`/`password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SecretValue>,
    /// Deprecated, ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The registry; the map key is authoritative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serveraddress: Option<String>,
    /// OAuth2 refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identitytoken: Option<SecretValue>,
    /// Bearer token for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrytoken: Option<SecretValue>,
}

/// The user name Docker credential helpers store with an identity token.
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";
