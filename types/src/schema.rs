//! The JSON schemas committed under `schemas/`, generated from the types.
//!
//! Each schema declares JSON Schema 2020-12 (`$schema`) and a stable `$id`. The
//! file names and `$id`s are a contract: editors and CI pipelines point at them.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::Deserialize;

use crate::{AuthConfig, PolicyConfig};

/// Where the `$id`s of regcred's schemas start.
pub const ID_BASE: &str = "https://regcred.dev/schemas/v1/";

/// One schema file: its name under `schemas/` and its content.
#[derive(Debug, Clone)]
pub struct SchemaFile {
    /// The file name, such as `authconfig.schema.json`.
    pub file_name: &'static str,
    /// The schema.
    pub schema: Schema,
}

impl SchemaFile {
    /// The file's text: pretty JSON with a final newline.
    pub fn to_pretty_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.schema)
            .unwrap_or_else(|_| unreachable!("a schema is plain JSON"));
        text.push('\n');
        text
    }
}

/// Every schema regcred publishes, in a fixed order.
pub fn all() -> Vec<SchemaFile> {
    vec![
        file::<RegCredentialsSecretManifest>("regcredentials-secret.schema.json"),
        file::<AuthConfig>("authconfig.schema.json"),
        file::<PolicyConfig>("policy-config.schema.json"),
    ]
}

fn file<T: JsonSchema>(file_name: &'static str) -> SchemaFile {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("$id".into(), format!("{ID_BASE}{file_name}").into());
    SchemaFile { file_name, schema }
}

/// Base64 text, standard alphabet, padded (what the API server accepts under `data`).
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
/// A DNS-1123 subdomain (the rule for `metadata.name`).
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 label (the rule for `metadata.namespace`).
pub const DNS1123_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

// The types below exist only to shape the manifest schema; the lenient
// `SecretManifest` is what the code parses.

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code, reason = "only the derived schema is used")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "kubernetes.io/regcredentials Secret",
    description = "A Secret with registry credentials that map directly onto the CRI AuthConfig. serverAddress is required, in data (base64) or stringData (plain text).",
    extend("anyOf" = [
        {"required": ["data"], "properties": {"data": {"required": ["serverAddress"]}}},
        {"required": ["stringData"], "properties": {"stringData": {"required": ["serverAddress"]}}}
    ])
)]
struct RegCredentialsSecretManifest {
    /// Always `v1`.
    #[schemars(extend("const" = "v1"))]
    api_version: String,
    /// Always `Secret`.
    #[schemars(extend("const" = "Secret"))]
    kind: String,
    metadata: ManifestMetadata,
    /// Always `kubernetes.io/regcredentials`.
    #[serde(rename = "type")]
    #[schemars(extend("const" = "kubernetes.io/regcredentials"))]
    type_: String,
    data: Option<Base64Keys>,
    string_data: Option<PlainKeys>,
    immutable: Option<bool>,
}

/// Object metadata; only name and namespace are checked.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code, reason = "only the derived schema is used")]
#[serde(rename_all = "camelCase")]
struct ManifestMetadata {
    /// A DNS-1123 subdomain.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    name: Option<String>,
    /// Prefix for a name the API server generates.
    generate_name: Option<String>,
    /// A DNS-1123 label.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL_PATTERN))]
    namespace: Option<String>,
}

/// Values base64-encoded (standard alphabet, padded). Only these keys are allowed.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code, reason = "only the derived schema is used")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Base64Keys {
    /// The registry, base64-encoded.
    #[schemars(length(min = 1, max = 87384), regex(pattern = BASE64_PATTERN))]
    server_address: Option<String>,
    /// User name, base64-encoded.
    #[schemars(length(max = 87384), regex(pattern = BASE64_PATTERN))]
    username: Option<String>,
    /// Password, base64-encoded.
    #[schemars(length(max = 87384), regex(pattern = BASE64_PATTERN))]
    password: Option<String>,
    /// Base64 of `user:pass`, base64-encoded once more (as every `data` value is).
    #[schemars(length(max = 87384), regex(pattern = BASE64_PATTERN))]
    auth: Option<String>,
    /// OAuth2 refresh token, base64-encoded.
    #[schemars(length(max = 87384), regex(pattern = BASE64_PATTERN))]
    identity_token: Option<String>,
    /// Registry bearer token, base64-encoded.
    #[schemars(length(max = 87384), regex(pattern = BASE64_PATTERN))]
    registry_token: Option<String>,
}

/// Values in plain text. Only these keys are allowed.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code, reason = "only the derived schema is used")]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlainKeys {
    /// The registry: `[https://|http://]HOST[:PORT][/PATH]`.
    #[schemars(length(min = 1, max = 65536), regex(pattern = "^[^\\s]+$"))]
    server_address: Option<String>,
    /// User name; no `:`.
    #[schemars(length(max = 65536), regex(pattern = "^[^:]*$"))]
    username: Option<String>,
    /// Password.
    #[schemars(length(max = 65536))]
    password: Option<String>,
    /// Base64 of `user:pass`.
    #[schemars(length(max = 87384), regex(pattern = BASE64_PATTERN))]
    auth: Option<String>,
    /// OAuth2 refresh token.
    #[schemars(length(max = 65536))]
    identity_token: Option<String>,
    /// Registry bearer token.
    #[schemars(length(max = 65536))]
    registry_token: Option<String>,
}
