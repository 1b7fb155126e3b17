//! The decoded content of a `kubernetes.io/regcredentials` Secret.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// The decoded keys of a `kubernetes.io/regcredentials` Secret, one field per key.
///
/// This is data only: the rules that make it valid live in `regcred-policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryCredentials {
    /// The registry (and optional path prefix) these credentials are for.
    pub server_address: String,
    /// User name for basic authentication or the OAuth2 password grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password that goes with `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValue>,
    /// Base64 of `username:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SecretValue>,
    /// OAuth2 refresh token, exchanged at the registry's token server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<SecretValue>,
    /// Bearer token sent to the registry as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_token: Option<SecretValue>,
}

impl RegistryCredentials {
    /// A copy whose password, auth and tokens print as `<redacted>` even when serialized.
    pub fn redacted(&self) -> Self {
        Self {
            server_address: self.server_address.clone(),
            username: self.username.clone(),
            password: self.password.as_ref().map(SecretValue::redacted),
            auth: self.auth.as_ref().map(SecretValue::redacted),
            identity_token: self.identity_token.as_ref().map(SecretValue::redacted),
            registry_token: self.registry_token.as_ref().map(SecretValue::redacted),
        }
    }
}
