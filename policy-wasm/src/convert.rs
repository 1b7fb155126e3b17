//! Conversion of Docker config Secrets into `kubernetes.io/regcredentials` Secrets.

use std::collections::BTreeMap;
use std::fmt;

use regcred_types::{
    DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE, PolicyConfig, REGCREDENTIALS_TYPE, SecretManifest,
    keys,
};

use crate::server::without_user_info;
use crate::validate::{docker_entry_fields, read_docker_config};

/// The annotation that records where a converted Secret came from.
pub const CONVERTED_FROM_ANNOTATION: &str = "regcred.dev/converted-from";

/// Why a Secret could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// `NAMESPACE/NAME` of the Secret.
    pub secret: String,
    /// What is wrong; never contains a secret value.
    pub reason: String,
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "secret {}: {}", self.secret, self.reason)
    }
}

impl std::error::Error for ConvertError {}

/// Converts a `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg` Secret into
/// one regcredentials Secret per registry entry, identity and registry tokens kept. The
/// new Secrets are named `NAME-REGISTRY` (made a DNS-1123 subdomain) in the same
/// namespace, and annotated with [`CONVERTED_FROM_ANNOTATION`]. Entries are converted as
/// they are; validate the result to see what the rules think of them.
///
/// # Errors
///
/// [`ConvertError`] when the Secret is of another type or its Docker config is unreadable.
pub fn convert(secret: &SecretManifest) -> Result<Vec<SecretManifest>, ConvertError> {
    let name = secret.display_name();
    let fail = |reason: String| ConvertError {
        secret: name.clone(),
        reason,
    };
    let type_ = secret.secret_type();
    if type_ != DOCKER_CONFIG_JSON_TYPE && type_ != DOCKERCFG_TYPE {
        return Err(fail(format!(
            "type {type_:?} cannot be converted: only {DOCKER_CONFIG_JSON_TYPE} and {DOCKERCFG_TYPE} Secrets can"
        )));
    }
    let entries = read_docker_config(secret, &PolicyConfig::default())
        .map_err(|violation| fail(violation.to_string()))?;
    let base_name = secret
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "converted".into());
    let mut used: Vec<String> = Vec::new();
    let mut converted = Vec::new();
    for (registry, entry) in entries {
        let raw = docker_entry_fields(&registry, &entry, "");
        // Names and annotations are not secret: no user info (a password) in them.
        let shown = without_user_info(&registry);
        let host_and_path = registry.rsplit('@').next().unwrap_or_default();
        let mut new_name = secret_name(&base_name, host_and_path);
        let mut n = 2;
        while used.contains(&new_name) {
            new_name = format!("{}-{n}", secret_name(&base_name, host_and_path));
            n += 1;
        }
        used.push(new_name.clone());
        let mut manifest = SecretManifest::new(
            new_name,
            secret.metadata.namespace.clone(),
            REGCREDENTIALS_TYPE,
        );
        manifest.metadata.annotations = Some(BTreeMap::from([(
            CONVERTED_FROM_ANNOTATION.to_string(),
            format!("{name} {shown}"),
        )]));
        for (key, field) in [
            (keys::SERVER_ADDRESS, &raw.server_address),
            (keys::USERNAME, &raw.username),
            (keys::PASSWORD, &raw.password),
            (keys::AUTH, &raw.auth),
            (keys::IDENTITY_TOKEN, &raw.identity_token),
            (keys::REGISTRY_TOKEN, &raw.registry_token),
        ] {
            if let Some(field) = field {
                manifest.insert_data(key, field.value.as_bytes());
            }
        }
        converted.push(manifest);
    }
    Ok(converted)
}

/// `BASE-REGISTRY` as a DNS-1123 subdomain of at most 253 characters.
fn secret_name(base: &str, registry: &str) -> String {
    let mut registry = registry;
    while let Some(rest) = registry.strip_prefix("https://") {
        registry = rest;
    }
    while let Some(rest) = registry.strip_prefix("http://") {
        registry = rest;
    }
    let registry = registry.trim_end_matches('/');
    let mut slug = String::new();
    for c in registry.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' {
            c
        } else {
            '-'
        };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    let name: String = format!("{base}-{slug}").chars().take(240).collect();
    name.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    #[test]
    fn one_secret_per_entry_with_tokens_kept() {
        let config = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": STANDARD.encode("u:p"), "email": "x@y"},
            "r.example:5000": {"identitytoken": "refresh"},
        }});
        let secret: SecretManifest = serde_json::from_value(json!({
            "metadata": {"name": "pull", "namespace": "apps"},
            "type": DOCKER_CONFIG_JSON_TYPE,
            "stringData": {".dockerconfigjson": config.to_string()},
        }))
        .unwrap();
        let converted = convert(&secret).unwrap();
        let names: Vec<_> = converted.iter().map(SecretManifest::display_name).collect();
        assert_eq!(
            names,
            vec!["apps/pull-index.docker.io-v1", "apps/pull-r.example-5000"]
        );
        for manifest in &converted {
            let report = validate(manifest, &PolicyConfig::default());
            assert!(report.valid, "{:?}", report.violations);
        }
        let data = converted[1].data.as_ref().unwrap();
        assert_eq!(data["identityToken"], json!(STANDARD.encode("refresh")));
    }

    #[test]
    fn long_and_non_ascii_names_are_cut_on_character_boundaries() {
        let name = secret_name(&"ü".repeat(300), "r.example");
        assert!(name.chars().count() <= 240);
        assert_eq!(
            secret_name("pull", "https://R.Example:5000/v1/"),
            "pull-r.example-5000-v1"
        );
    }

    #[test]
    fn user_info_never_reaches_names_or_annotations() {
        let canary = "canary-3c9f";
        let config = json!({"auths": {format!("https://robot:{canary}@r.example"): {"auth": STANDARD.encode("u:p")}}});
        let secret: SecretManifest = serde_json::from_value(json!({
            "metadata": {"name": "pull", "namespace": "apps"},
            "type": DOCKER_CONFIG_JSON_TYPE,
            "stringData": {".dockerconfigjson": config.to_string()},
        }))
        .unwrap();
        let converted = convert(&secret).unwrap();
        let manifest = &converted[0];
        let metadata = serde_json::to_string(&manifest.metadata).unwrap();
        assert!(!metadata.contains(canary), "{metadata}");
        assert_eq!(manifest.display_name(), "apps/pull-r.example");
        let report = validate(manifest, &PolicyConfig::default());
        assert!(!report.valid);
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains(canary), "{text}");
    }

    #[test]
    fn other_types_are_refused() {
        let secret = SecretManifest::new("x", None, "Opaque");
        assert!(
            convert(&secret)
                .unwrap_err()
                .reason
                .contains("cannot be converted")
        );
    }
}
