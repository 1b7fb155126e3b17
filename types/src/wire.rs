//! The JSON requests and responses of the policy module's ABI (`policy-wasm/ABI.md`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{PolicyConfig, RuntimeProfile, SecretManifest};

/// A request to the policy, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum PolicyRequest {
    /// Validate one Secret; the result is a [`crate::ValidationReport`].
    Validate {
        /// The Secret object.
        secret: SecretManifest,
        /// Site policy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<PolicyConfig>,
    },
    /// Resolve candidates for an image; the result is a list of [`crate::Candidate`]s
    /// and the response carries `warnings`.
    Resolve {
        /// The image reference as written in the pod spec.
        image: String,
        /// Pull secrets in imagePullSecrets order.
        secrets: Vec<SecretManifest>,
        /// The runtime that receives the `AuthConfig`.
        #[serde(default)]
        runtime: RuntimeProfile,
        /// Site policy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<PolicyConfig>,
    },
    /// Convert a dockerconfigjson or dockercfg Secret into regcredentials Secrets; the
    /// result is a list of Secret objects.
    Convert {
        /// The Secret object.
        secret: SecretManifest,
    },
}

/// The error half of a response: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyError {
    /// A stable machine-readable code, such as `bad_request` or `invalid_image`.
    pub code: String,
    /// What went wrong, for people. Never contains a secret value.
    pub message: String,
}

/// A response: `{"ok": RESULT}` (with `warnings` for `resolve`) or `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PolicyResponse {
    /// The operation ran.
    Ok {
        /// The operation's result.
        ok: serde_json::Value,
        /// Warnings that do not belong to the result (secrets skipped by `resolve`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// The request could not be answered.
    Error {
        /// What went wrong.
        error: PolicyError,
    },
}

/// Error codes used in [`PolicyError::code`].
pub mod codes {
    /// The request is not JSON, not UTF-8, or not one of the operations.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The request exceeds the module's input limit.
    pub const TOO_LARGE: &str = "too_large";
    /// The image reference is malformed.
    pub const INVALID_IMAGE: &str = "invalid_image";
    /// The policy configuration is invalid.
    pub const INVALID_CONFIG: &str = "invalid_config";
    /// The Secret cannot be converted.
    pub const INVALID_SECRET: &str = "invalid_secret";
}
