//! A lenient model of a Secret manifest, as a user writes it or the API server returns it.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Secret manifest as it is written, before any rule is applied.
///
/// `Debug` shows the keys of `data`, `stringData`, unknown fields and annotations, never
/// their values (an annotation such as `kubectl.kubernetes.io/last-applied-configuration`
/// holds the whole Secret).
///
/// Unlike `k8s_openapi`'s `Secret`, `data` keeps its values as the raw text, so that text
/// which is not base64 (the proposal's own example puts plain text there) reaches the
/// validator and gets a precise message instead of failing the whole parse. Values are
/// kept as JSON values for the same reason: YAML turns `password: 1234` into a number.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretManifest {
    /// `v1` for a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and namespace.
    #[serde(default)]
    pub metadata: SecretMetadata,
    /// The Secret type, such as [`crate::REGCREDENTIALS_TYPE`].
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Base64-encoded values, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, serde_json::Value>>,
    /// Plain-text values; a key here wins over the same key in `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_data: Option<BTreeMap<String, serde_json::Value>>,
    /// Whether the Secret is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Top-level fields a Secret does not have (`stringdata`, say), kept so that
    /// validation can name them instead of silently ignoring a typo.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown_fields: BTreeMap<String, serde_json::Value>,
}

/// The part of `metadata` that regcred reads.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretMetadata {
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `metadata.generateName`, used by the API server when `name` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// `metadata.namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The keys of a map, each shown with [`crate::REDACTED`] for its value.
struct KeysOnly<'a, V>(&'a BTreeMap<String, V>);

impl<V> fmt::Debug for KeysOnly<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|key| (key, Redacted)))
            .finish()
    }
}

/// Prints [`crate::REDACTED`].
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::REDACTED)
    }
}

impl fmt::Debug for SecretManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretManifest")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("metadata", &self.metadata)
            .field("type_", &self.type_)
            .field("data", &self.data.as_ref().map(KeysOnly))
            .field("string_data", &self.string_data.as_ref().map(KeysOnly))
            .field("immutable", &self.immutable)
            .field("unknown_fields", &KeysOnly(&self.unknown_fields))
            .finish()
    }
}

impl fmt::Debug for SecretMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretMetadata")
            .field("name", &self.name)
            .field("generate_name", &self.generate_name)
            .field("namespace", &self.namespace)
            .field("labels", &self.labels)
            .field("annotations", &self.annotations.as_ref().map(KeysOnly))
            .finish()
    }
}

/// The namespace kubectl assumes when a manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

impl SecretManifest {
    /// A new `v1` `Secret` of the given type with name and namespace set.
    pub fn new(name: impl Into<String>, namespace: Option<String>, type_: &str) -> Self {
        Self {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            metadata: SecretMetadata {
                name: Some(name.into()),
                namespace,
                ..SecretMetadata::default()
            },
            type_: Some(type_.into()),
            ..Self::default()
        }
    }

    /// `NAMESPACE/NAME`, with [`DEFAULT_NAMESPACE`] when the manifest names no namespace
    /// and `<unnamed>` when it has no name (nor `generateName`).
    pub fn display_name(&self) -> String {
        let namespace = self
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        let name = match (&self.metadata.name, &self.metadata.generate_name) {
            (Some(name), _) if !name.is_empty() => name.clone(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}*"),
            _ => "<unnamed>".to_string(),
        };
        format!("{namespace}/{name}")
    }

    /// The Secret's `type`, with the API server's default `Opaque` when absent.
    pub fn secret_type(&self) -> &str {
        self.type_.as_deref().unwrap_or("Opaque")
    }

    /// Puts `value` under `data[key]`, base64-encoded.
    pub fn insert_data(&mut self, key: &str, value: &[u8]) {
        self.data.get_or_insert_with(BTreeMap::new).insert(
            key.to_string(),
            serde_json::Value::String(STANDARD.encode(value)),
        );
    }
}

#[cfg(feature = "k8s-openapi")]
mod k8s {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// Why a [`SecretManifest`] could not become a `k8s_openapi` `Secret`.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum ToK8sSecretError {
        /// A `data` value is not a string of base64 text.
        #[error("secret {secret}: data[{key}] is not valid base64")]
        InvalidBase64 {
            /// `NAMESPACE/NAME` of the Secret.
            secret: String,
            /// The key under `data`.
            key: String,
        },
        /// A `stringData` value is not a string.
        #[error("secret {secret}: stringData[{key}] must be a string")]
        NotAString {
            /// `NAMESPACE/NAME` of the Secret.
            secret: String,
            /// The key under `stringData`.
            key: String,
        },
    }

    impl From<Secret> for SecretManifest {
        fn from(secret: Secret) -> Self {
            let data = secret.data.map(|data| {
                data.into_iter()
                    .map(|(k, ByteString(v))| (k, serde_json::Value::String(STANDARD.encode(v))))
                    .collect()
            });
            let string_data = secret.string_data.map(|data| {
                data.into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect()
            });
            Self {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                metadata: SecretMetadata {
                    name: secret.metadata.name,
                    generate_name: secret.metadata.generate_name,
                    namespace: secret.metadata.namespace,
                    labels: secret.metadata.labels,
                    annotations: secret.metadata.annotations,
                },
                type_: secret.type_,
                data,
                string_data,
                immutable: secret.immutable,
                unknown_fields: BTreeMap::new(),
            }
        }
    }

    impl TryFrom<SecretManifest> for Secret {
        type Error = ToK8sSecretError;

        fn try_from(manifest: SecretManifest) -> Result<Self, Self::Error> {
            let secret = manifest.display_name();
            let data = match manifest.data {
                None => None,
                Some(data) => Some(
                    data.into_iter()
                        .map(|(key, value)| {
                            let bytes = value
                                .as_str()
                                .and_then(|text| STANDARD.decode(text).ok())
                                .ok_or_else(|| ToK8sSecretError::InvalidBase64 {
                                    secret: secret.clone(),
                                    key: key.clone(),
                                })?;
                            Ok((key, ByteString(bytes)))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            let string_data = match manifest.string_data {
                None => None,
                Some(data) => Some(
                    data.into_iter()
                        .map(|(key, value)| match value {
                            serde_json::Value::String(text) => Ok((key, text)),
                            _ => Err(ToK8sSecretError::NotAString {
                                secret: secret.clone(),
                                key,
                            }),
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            Ok(Secret {
                metadata: ObjectMeta {
                    name: manifest.metadata.name,
                    generate_name: manifest.metadata.generate_name,
                    namespace: manifest.metadata.namespace,
                    labels: manifest.metadata.labels,
                    annotations: manifest.metadata.annotations,
                    ..ObjectMeta::default()
                },
                type_: manifest.type_,
                data,
                string_data,
                immutable: manifest.immutable,
            })
        }
    }
}

#[cfg(feature = "k8s-openapi")]
pub use k8s::ToK8sSecretError;

#[cfg(test)]
mod debug_tests {
    use super::*;

    const CANARY: &str = "canary-Zq7xW3";

    #[test]
    fn debug_shows_keys_never_values() {
        let manifest: SecretManifest = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "quay", "namespace": "apps",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": CANARY}},
            "type": "kubernetes.io/regcredentials",
            "data": {"password": STANDARD.encode(CANARY), "auth": CANARY},
            "stringData": {"identityToken": CANARY, "registryToken": {"nested": CANARY}},
            "stringdata": {"password": CANARY},
        }))
        .unwrap();
        let request = crate::wire::PolicyRequest::Resolve {
            image: "quay.io/app".into(),
            secrets: vec![manifest.clone()],
            runtime: crate::RuntimeProfile::default(),
            config: None,
        };
        let encoded = STANDARD.encode(CANARY);
        for shown in [
            format!("{manifest:?}"),
            format!("{manifest:#?}"),
            format!("{request:?}"),
            format!("{request:#?}"),
        ] {
            assert!(!shown.contains(CANARY), "{shown}");
            assert!(!shown.contains(&encoded), "{shown}");
            for key in [
                "password",
                "auth",
                "identityToken",
                "registryToken",
                "stringdata",
            ] {
                assert!(shown.contains(key), "{key} missing in {shown}");
            }
        }
    }
}

#[cfg(all(test, feature = "k8s-openapi"))]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    #[test]
    fn converts_from_and_to_k8s_openapi_secrets() {
        let manifest: SecretManifest = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "quay", "namespace": "apps", "labels": {"team": "a"}},
            "type": "kubernetes.io/regcredentials",
            "data": {"serverAddress": "cXVheS5pbw=="},
            "stringData": {"username": "robot"},
        }))
        .unwrap();
        let secret = Secret::try_from(manifest.clone()).unwrap();
        assert_eq!(
            secret.data.as_ref().unwrap()["serverAddress"],
            ByteString(b"quay.io".to_vec())
        );
        assert_eq!(secret.string_data.as_ref().unwrap()["username"], "robot");
        assert_eq!(SecretManifest::from(secret), manifest);
    }

    #[test]
    fn plain_text_under_data_is_a_conversion_error_naming_the_key() {
        let mut manifest =
            SecretManifest::new("quay", Some("apps".into()), crate::REGCREDENTIALS_TYPE);
        manifest.data = Some(BTreeMap::from([(
            "serverAddress".to_string(),
            serde_json::Value::String("my.custom-registry.com".into()),
        )]));
        let error = Secret::try_from(manifest).unwrap_err();
        assert_eq!(
            error.to_string(),
            "secret apps/quay: data[serverAddress] is not valid base64"
        );
    }
}
