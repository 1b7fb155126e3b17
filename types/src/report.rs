//! Results of the rules: validation reports, field errors, resolution candidates.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AuthConfig;

/// A Kubernetes field error type (`k8s.io/apimachinery/pkg/util/validation/field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FieldErrorType {
    /// A required field is missing or empty.
    FieldValueRequired,
    /// The value is malformed.
    FieldValueInvalid,
    /// The value is not one of the supported ones (an unknown key).
    FieldValueNotSupported,
    /// The value is too long.
    FieldValueTooLong,
    /// The value is well-formed but not allowed (by policy or by a rule).
    FieldValueForbidden,
    /// The value has the wrong JSON type (a number where a string belongs).
    FieldValueTypeInvalid,
}

impl FieldErrorType {
    /// The name as Kubernetes spells it (`FieldValueInvalid`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FieldValueRequired => "FieldValueRequired",
            Self::FieldValueInvalid => "FieldValueInvalid",
            Self::FieldValueNotSupported => "FieldValueNotSupported",
            Self::FieldValueTooLong => "FieldValueTooLong",
            Self::FieldValueForbidden => "FieldValueForbidden",
            Self::FieldValueTypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

impl fmt::Display for FieldErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken rule, at one field. Messages never contain a password or token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Violation {
    /// The field path, Kubernetes style: `data[serverAddress]`, `metadata.name`.
    pub field: String,
    /// The field error type.
    #[serde(rename = "type")]
    pub error_type: FieldErrorType,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Something that is allowed but will not work as the author probably expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Warning {
    /// The field path the warning is about.
    pub field: String,
    /// What will happen.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The verdict on one Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ValidationReport {
    /// `NAMESPACE/NAME` of the Secret.
    pub secret: String,
    /// True when there is no violation.
    pub valid: bool,
    /// Every broken rule, in field order.
    pub violations: Vec<Violation>,
    /// What will silently not work.
    pub warnings: Vec<Warning>,
}

/// One set of credentials to try for an image, in try order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// `NAMESPACE/NAME` of the Secret the credentials come from.
    pub secret: String,
    /// The registry key that matched the image (`host[:port][/path]`).
    pub matched: String,
    /// What the runtime receives.
    pub auth_config: AuthConfig,
}

impl Candidate {
    /// A copy whose secrets print as `<redacted>`.
    pub fn redacted(&self) -> Self {
        Self {
            secret: self.secret.clone(),
            matched: self.matched.clone(),
            auth_config: self.auth_config.redacted(),
        }
    }
}

/// The candidates for one image and the warnings about secrets that were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Resolution {
    /// Candidates, most specific first.
    pub candidates: Vec<Candidate>,
    /// One line per skipped secret or entry, naming it and the reason.
    pub warnings: Vec<String>,
}

/// The runtime that receives the `AuthConfig`, which decides how it is filled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeProfile {
    /// containerd: `serverAddress` becomes `https://HOST[:PORT]` of the registry contacted,
    /// the only form containerd accepts; every other field as in the secret.
    #[default]
    Containerd,
    /// CRI-O: `username`, `password` and `auth` as in the secret, `serverAddress` the
    /// registry host; tokens, which CRI-O ignores, are left out.
    #[serde(rename = "cri-o")]
    CriO,
    /// Every field exactly as in the secret, as the proposal writes it.
    Passthrough,
}

impl RuntimeProfile {
    /// The name used on the command line and in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Passthrough => "passthrough",
        }
    }
}

impl fmt::Display for RuntimeProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
