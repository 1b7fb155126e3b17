//! The CRI `runtime.v1.AuthConfig` message.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SecretValue;

/// CRI `runtime.v1.AuthConfig`, the credentials kubelet hands to the runtime on `PullImage`.
///
/// Serialized with the proto3 JSON names; empty fields (proto3's "unset") are omitted.
///
/// | field | proto field number |
/// |---|---|
/// | `username` | 1 |
/// | `password` | 2 |
/// | `auth` | 3 |
/// | `serverAddress` | 4 |
/// | `identityToken` | 5 |
/// | `registryToken` | 6 |
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "CRI runtime.v1.AuthConfig")]
pub struct AuthConfig {
    /// User name (field 1).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Password (field 2).
    #[serde(default, skip_serializing_if = "SecretValue::is_empty")]
    pub password: SecretValue,
    /// Base64 of `username:password` (field 3).
    #[serde(default, skip_serializing_if = "SecretValue::is_empty")]
    pub auth: SecretValue,
    /// The registry the credentials are for (field 4). containerd drops the credentials
    /// unless this parses as a URL whose host is the host it contacts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_address: String,
    /// OAuth2 refresh token (field 5).
    #[serde(default, skip_serializing_if = "SecretValue::is_empty")]
    pub identity_token: SecretValue,
    /// Bearer token for the registry (field 6).
    #[serde(default, skip_serializing_if = "SecretValue::is_empty")]
    pub registry_token: SecretValue,
}

impl AuthConfig {
    /// A copy in which password, auth and tokens are replaced by `<redacted>`.
    pub fn redacted(&self) -> Self {
        Self {
            username: self.username.clone(),
            password: self.password.redacted(),
            auth: self.auth.redacted(),
            server_address: self.server_address.clone(),
            identity_token: self.identity_token.redacted(),
            registry_token: self.registry_token.redacted(),
        }
    }

    /// True when no credential field is set (the pull would be anonymous).
    pub fn has_no_credentials(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.auth.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_proto3_json_names_and_omits_empty_fields() {
        let config = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            server_address: "https://r.example".into(),
            identity_token: "t".into(),
            ..AuthConfig::default()
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "username": "u",
                "password": "p",
                "serverAddress": "https://r.example",
                "identityToken": "t"
            })
        );
    }

    #[test]
    fn debug_and_redacted_hide_every_secret_field() {
        let canary = "CANARY-s3cr3t";
        let config = AuthConfig {
            username: "u".into(),
            password: canary.into(),
            auth: canary.into(),
            identity_token: canary.into(),
            registry_token: canary.into(),
            ..AuthConfig::default()
        };
        assert!(!format!("{config:?}").contains(canary));
        let shown = serde_json::to_string(&config.redacted()).unwrap();
        assert!(!shown.contains(canary), "{shown}");
        assert_eq!(shown.matches("<redacted>").count(), 4);
    }
}
