//! Types for `kubernetes.io/regcredentials` Secrets, the CRI `AuthConfig`, and Docker's
//! credential formats.
//!
//! The sig-node proposal "Arbitrary image pull secrets" defines a Secret type,
//! [`REGCREDENTIALS_TYPE`], whose keys map one to one onto the CRI
//! `runtime.v1.AuthConfig` that kubelet hands to the container runtime. This crate holds
//! that data and nothing else: no rules (see `regcred-policy`), no I/O. Every public type
//! derives `serde` and `schemars::JsonSchema`; passwords and tokens are [`SecretValue`]s,
//! whose `Debug` and `Display` never show them.
//!
//! # Quick start
//!
//! ```
//! use regcred_types::{AuthConfig, SecretManifest, REGCREDENTIALS_TYPE, keys};
//!
//! let manifest: SecretManifest = serde_json::from_str(r#"{
//!     "apiVersion": "v1", "kind": "Secret",
//!     "metadata": {"name": "quay", "namespace": "apps"},
//!     "type": "kubernetes.io/regcredentials",
//!     "stringData": {"serverAddress": "quay.io", "username": "robot", "password": "s3cret"}
//! }"#).unwrap();
//! assert_eq!(manifest.secret_type(), REGCREDENTIALS_TYPE);
//! assert_eq!(manifest.display_name(), "apps/quay");
//! assert!(manifest.string_data.unwrap().contains_key(keys::SERVER_ADDRESS));
//!
//! let auth = AuthConfig { username: "robot".into(), password: "s3cret".into(), ..Default::default() };
//! assert!(!format!("{auth:?}").contains("s3cret"));
//! ```
//!
//! # Features
//!
//! - `k8s-openapi`: conversions between [`SecretManifest`] and
//!   `k8s_openapi::api::core::v1::Secret`.
//! - `yaml`: [`reader`], the one manifest reader (YAML and JSON, multi-document files,
//!   `List`s). [`redact`], the one redactor of serde error text, needs no feature.

#![warn(missing_docs)]

mod auth_config;
mod config;
mod credentials;
mod docker;
mod manifest;
#[cfg(feature = "yaml")]
pub mod reader;
pub mod redact;
mod report;
pub mod schema;
mod secret_value;
pub mod wire;

pub use auth_config::AuthConfig;
pub use config::{MAX_SECRET_BYTES, MAX_VALUE_BYTES, PolicyConfig};
pub use credentials::RegistryCredentials;
pub use docker::{DockerCfg, DockerConfigEntry, DockerConfigJson, IDENTITY_TOKEN_USERNAME};
#[cfg(feature = "k8s-openapi")]
pub use manifest::ToK8sSecretError;
pub use manifest::{DEFAULT_NAMESPACE, SecretManifest, SecretMetadata};
pub use report::{
    Candidate, FieldErrorType, Resolution, RuntimeProfile, ValidationReport, Violation, Warning,
};
pub use secret_value::{REDACTED, SecretValue};

/// The Secret type this project implements.
pub const REGCREDENTIALS_TYPE: &str = "kubernetes.io/regcredentials";
/// The Secret type holding a Docker `config.json`.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The legacy Secret type holding a `.dockercfg`.
pub const DOCKERCFG_TYPE: &str = "kubernetes.io/dockercfg";

/// The keys of a `kubernetes.io/regcredentials` Secret.
pub mod keys {
    /// The registry the credentials are for. Required.
    pub const SERVER_ADDRESS: &str = "serverAddress";
    /// User name.
    pub const USERNAME: &str = "username";
    /// Password.
    pub const PASSWORD: &str = "password";
    /// Base64 of `username:password`.
    pub const AUTH: &str = "auth";
    /// OAuth2 refresh token.
    pub const IDENTITY_TOKEN: &str = "identityToken";
    /// Registry bearer token.
    pub const REGISTRY_TOKEN: &str = "registryToken";
    /// Every allowed key, in the order of the CRI `AuthConfig` fields they map to.
    pub const ALL: [&str; 6] = [
        SERVER_ADDRESS,
        USERNAME,
        PASSWORD,
        AUTH,
        IDENTITY_TOKEN,
        REGISTRY_TOKEN,
    ];
    /// The key of a `kubernetes.io/dockerconfigjson` Secret.
    pub const DOCKER_CONFIG_JSON: &str = ".dockerconfigjson";
    /// The key of a `kubernetes.io/dockercfg` Secret.
    pub const DOCKERCFG: &str = ".dockercfg";
}
