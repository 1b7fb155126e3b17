//! Docker config parsing (`.dockerconfigjson`, `.dockercfg`), shared by validation and
//! `convert`.

use super::*;

/// A Docker config key kubelet reads otherwise than regcred: refused when kubelet would
/// use the entry for another host, a warning when kubelet ignores it.
fn check_kubelet_reading(registry: &str, container: &str, findings: &mut Findings) {
    match crate::server::kubelet_reading(registry) {
        Some(KubeletReading::OtherHost(host)) => findings.violation(
            container,
            FieldErrorType::FieldValueInvalid,
            format!(
                "kubelet reads this key as a URL, where '?' starts a query: it would use these \
                 credentials for the host {host:?}; put a '?' glob in a \
                 kubernetes.io/regcredentials Secret instead"
            ),
        ),
        Some(KubeletReading::Ignored) => findings.warning(
            container,
            "kubelet reads this key as a URL and cannot parse a '[' outside an IPv6 address, \
             so it ignores this entry; regcred matches it as a glob",
        ),
        None => {}
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum DockerFormat {
    Json,
    Cfg,
}

/// Reads the Docker config out of a dockerconfigjson or dockercfg Secret.
pub(crate) fn read_docker_config(
    secret: &SecretManifest,
    config: &PolicyConfig,
) -> Result<Vec<(String, DockerConfigEntry)>, Violation> {
    let json = secret.secret_type() == DOCKER_CONFIG_JSON_TYPE;
    let format = if json {
        DockerFormat::Json
    } else {
        DockerFormat::Cfg
    };
    let mut findings = Findings::default();
    let entries = read_docker(secret, config, format, &mut findings);
    match findings.violations.into_iter().next() {
        Some(violation) => Err(violation),
        None => Ok(entries.unwrap_or_default()),
    }
}

pub(super) fn read_docker(
    secret: &SecretManifest,
    config: &PolicyConfig,
    format: DockerFormat,
    findings: &mut Findings,
) -> Option<Vec<(String, DockerConfigEntry)>> {
    let key = match format {
        DockerFormat::Json => keys::DOCKER_CONFIG_JSON,
        DockerFormat::Cfg => keys::DOCKERCFG,
    };
    let from_string_data = secret.string_data.as_ref().and_then(|m| m.get(key));
    let (source, value) = match (
        from_string_data,
        secret.data.as_ref().and_then(|m| m.get(key)),
    ) {
        (Some(value), _) => (Source::StringData, value),
        (None, Some(value)) => (Source::Data, value),
        (None, None) => {
            findings.violation(
                &Source::Data.path(key),
                FieldErrorType::FieldValueRequired,
                format!(
                    "a Secret of type {} needs the key {key}",
                    secret.secret_type()
                ),
            );
            return None;
        }
    };
    let path = source.path(key);
    let relaxed = PolicyConfig {
        max_value_bytes: config.max_secret_bytes,
        ..config.clone()
    };
    let text = decode(source, key, value, Holds::Document, &relaxed, findings)?;
    let parsed = match format {
        DockerFormat::Json => serde_json::from_str::<DockerConfigJson>(&text)
            .map(|c| c.auths.into_iter().collect::<Vec<_>>()),
        DockerFormat::Cfg => {
            serde_json::from_str::<DockerCfg>(&text).map(|c| c.into_iter().collect::<Vec<_>>())
        }
    };
    match parsed {
        Ok(entries) => Some(entries),
        Err(error) => {
            // serde_json's message names the line and column, never the text itself.
            findings.violation(
                &path,
                FieldErrorType::FieldValueInvalid,
                format!("is not a valid Docker config: {}", error_category(&error)),
            );
            None
        }
    }
}

/// A JSON error description that cannot carry the document's content.
pub(super) fn error_category(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => {
            "wrong structure (expected {\"auths\": {REGISTRY: {...}}})"
        }
        serde_json::error::Category::Eof => "unexpected end",
        serde_json::error::Category::Io => "read error",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

pub(super) fn check_docker(
    secret: &SecretManifest,
    config: &PolicyConfig,
    format: DockerFormat,
    findings: &mut Findings,
) -> Vec<ValidCredentials> {
    let Some(entries) = read_docker(secret, config, format, findings) else {
        return Vec::new();
    };
    let key = match format {
        DockerFormat::Json => keys::DOCKER_CONFIG_JSON,
        DockerFormat::Cfg => keys::DOCKERCFG,
    };
    let base = match format {
        DockerFormat::Json => format!("data[{key}].auths"),
        DockerFormat::Cfg => format!("data[{key}]"),
    };
    let mut valid = Vec::new();
    for (registry, entry) in entries {
        let container = format!("{base}[{}]", without_user_info(&registry));
        let raw = docker_entry_fields(&registry, &entry, &container);
        let before = findings.violations.len();
        check_kubelet_reading(&registry, &container, findings);
        let checked = check_credentials(&raw, &container, config, findings);
        if findings.violations.len() == before {
            valid.extend(checked);
        }
    }
    valid
}

/// The fields of a Docker config entry, read as kubelet reads them but keeping tokens:
/// the map key is the server address; the credential helpers' `<token>` user name means
/// the entry holds an identity token.
pub(crate) fn docker_entry_fields(
    registry: &str,
    entry: &DockerConfigEntry,
    container: &str,
) -> RawCredentials {
    let field = |name: &str, value: Option<&str>| {
        value.filter(|v| !v.is_empty()).map(|v| Field {
            path: format!("{container}.{name}"),
            value: v.to_string(),
        })
    };
    let mut raw = RawCredentials {
        server_address: Some(Field {
            path: container.to_string(),
            value: registry.to_string(),
        }),
        username: field("username", entry.username.as_deref()),
        password: field("password", entry.password.as_ref().map(SecretValue::expose)),
        auth: field("auth", entry.auth.as_ref().map(SecretValue::expose)),
        identity_token: field(
            "identitytoken",
            entry.identitytoken.as_ref().map(SecretValue::expose),
        ),
        registry_token: field(
            "registrytoken",
            entry.registrytoken.as_ref().map(SecretValue::expose),
        ),
    };
    if raw
        .username
        .as_ref()
        .is_some_and(|u| u.value == IDENTITY_TOKEN_USERNAME)
    {
        let password = raw.password.take();
        raw.username = None;
        if raw.identity_token.is_none() {
            raw.identity_token = password;
        }
    }
    raw
}
