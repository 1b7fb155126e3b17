//! The policy configuration.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API server's limit on a Secret's total data size, 1 MiB.
pub const MAX_SECRET_BYTES: u32 = 1024 * 1024;
/// regcred's limit on one value, 64 KiB.
pub const MAX_VALUE_BYTES: u32 = 64 * 1024;

/// Site policy applied on top of the rules. Every field is optional; limits can only be
/// lowered.
///
/// ```json
/// { "allowedRegistries": ["*.corp.example", "ghcr.io/my-org"], "maxValueBytes": 8192 }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "regcred policy configuration")]
pub struct PolicyConfig {
    /// Registries a Secret may name in `serverAddress`, as `HOST[:PORT][/PATH]` patterns
    /// whose host labels may use `*`, `?` and `[...]` globs. Absent: any registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_registries: Option<Vec<String>>,
    /// Largest decoded value, in bytes (at most 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_value_bytes: Option<u32>,
    /// Largest total of decoded values, in bytes (at most 1048576).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_048_576))]
    pub max_secret_bytes: Option<u32>,
}

impl PolicyConfig {
    /// The value limit in force.
    pub fn value_limit(&self) -> usize {
        self.max_value_bytes
            .unwrap_or(MAX_VALUE_BYTES)
            .min(MAX_VALUE_BYTES) as usize
    }

    /// The whole-secret limit in force.
    pub fn secret_limit(&self) -> usize {
        self.max_secret_bytes
            .unwrap_or(MAX_SECRET_BYTES)
            .min(MAX_SECRET_BYTES) as usize
    }
}
