//! Validation: from a Secret manifest to a [`ValidationReport`] and, when valid, to the
//! decoded credentials.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regcred_types::{
    DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE, DockerCfg, DockerConfigEntry, DockerConfigJson,
    FieldErrorType, IDENTITY_TOKEN_USERNAME, PolicyConfig, REGCREDENTIALS_TYPE,
    RegistryCredentials, SecretManifest, SecretValue, ValidationReport, Violation, Warning, keys,
};

use crate::server::{Containment, KubeletReading, Scheme, ServerAddress, without_user_info};

/// A decoded, valid set of credentials and the registry they are for.
#[derive(Debug, Clone)]
pub struct ValidCredentials {
    /// The parsed `serverAddress`.
    pub server: ServerAddress,
    /// The decoded values.
    pub credentials: RegistryCredentials,
}

/// What validation found: the report, and the decoded credentials when valid (one set
/// for a regcredentials Secret, one per entry for a Docker config Secret).
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) report: ValidationReport,
    /// Decoded credentials with the entry's field path, only those without a violation.
    pub(crate) credentials: Vec<ValidCredentials>,
}

/// Accumulates violations and warnings.
#[derive(Debug, Default)]
struct Findings {
    violations: Vec<Violation>,
    warnings: Vec<Warning>,
}

impl Findings {
    fn violation(&mut self, field: &str, error_type: FieldErrorType, message: impl Into<String>) {
        self.violations.push(Violation {
            field: field.to_string(),
            error_type,
            message: message.into(),
        });
    }

    fn warning(&mut self, field: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            field: field.to_string(),
            message: message.into(),
        });
    }
}

/// Validates a Secret of any of the three credential types against the rules and
/// `config`. Other types get one `FieldValueNotSupported` violation on `type`.
pub fn validate(secret: &SecretManifest, config: &PolicyConfig) -> ValidationReport {
    check(secret, config).report
}

pub(crate) fn check(secret: &SecretManifest, config: &PolicyConfig) -> Checked {
    let mut findings = Findings::default();
    check_top_level(secret, &mut findings);
    check_metadata(secret, &mut findings);
    let credentials = match secret.secret_type() {
        REGCREDENTIALS_TYPE => check_regcredentials(secret, config, &mut findings)
            .into_iter()
            .collect(),
        DOCKER_CONFIG_JSON_TYPE => check_docker(secret, config, DockerFormat::Json, &mut findings),
        DOCKERCFG_TYPE => check_docker(secret, config, DockerFormat::Cfg, &mut findings),
        other => {
            findings.violation(
                "type",
                FieldErrorType::FieldValueNotSupported,
                format!(
                    "type {other:?} carries no registry credentials; supported values: \
                     \"{REGCREDENTIALS_TYPE}\", \"{DOCKER_CONFIG_JSON_TYPE}\", \"{DOCKERCFG_TYPE}\""
                ),
            );
            Vec::new()
        }
    };
    // Per-type checks return only credentials without violations (for a Docker config,
    // the good entries of a Secret with some bad ones); a bad name spoils them all.
    let metadata_ok = !findings
        .violations
        .iter()
        .any(|v| v.field.starts_with("metadata."));
    Checked {
        report: ValidationReport {
            secret: secret.display_name(),
            valid: findings.violations.is_empty(),
            violations: findings.violations,
            warnings: findings.warnings,
        },
        credentials: if metadata_ok { credentials } else { Vec::new() },
    }
}

/// The fields of a Secret object.
const SECRET_FIELDS: [&str; 7] = [
    "apiVersion",
    "kind",
    "metadata",
    "type",
    "data",
    "stringData",
    "immutable",
];

fn check_top_level(secret: &SecretManifest, findings: &mut Findings) {
    for field in secret.unknown_fields.keys() {
        let hint = SECRET_FIELDS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(field))
            .map(|known| format!("did you mean {known:?}? "))
            .unwrap_or_default();
        findings.violation(
            field,
            FieldErrorType::FieldValueNotSupported,
            format!(
                "a Secret has no field {field:?}; {hint}its fields are {}",
                SECRET_FIELDS.join(", ")
            ),
        );
    }
}

fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && ok(bytes[0])
        && ok(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| ok(b) || b == b'-')
}

fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns1123_label)
}

fn check_metadata(secret: &SecretManifest, findings: &mut Findings) {
    let metadata = &secret.metadata;
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => {
            if !is_dns1123_subdomain(name) {
                findings.violation(
                    "metadata.name",
                    FieldErrorType::FieldValueInvalid,
                    format!(
                        "{name:?} is not a DNS-1123 subdomain: at most 253 lower-case letters, \
                         digits, '-' and '.', starting and ending with a letter or digit"
                    ),
                );
            }
        }
        _ if metadata
            .generate_name
            .as_deref()
            .is_some_and(|g| !g.is_empty()) => {}
        _ => findings.violation(
            "metadata.name",
            FieldErrorType::FieldValueRequired,
            "name or generateName is required",
        ),
    }
    if let Some(namespace) = metadata.namespace.as_deref()
        && !is_dns1123_label(namespace)
    {
        findings.violation(
            "metadata.namespace",
            FieldErrorType::FieldValueInvalid,
            format!(
                "{namespace:?} is not a DNS-1123 label: at most 63 lower-case letters, \
                 digits and '-', starting and ending with a letter or digit"
            ),
        );
    }
}

/// A decoded value and the field path it came from.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) path: String,
    pub(crate) value: String,
}

/// The six keys as found (effective values: `stringData` over `data`).
#[derive(Debug, Default)]
pub(crate) struct RawCredentials {
    pub(crate) server_address: Option<Field>,
    pub(crate) username: Option<Field>,
    pub(crate) password: Option<Field>,
    pub(crate) auth: Option<Field>,
    pub(crate) identity_token: Option<Field>,
    pub(crate) registry_token: Option<Field>,
}

impl RawCredentials {
    fn slot(&mut self, key: &str) -> Option<&mut Option<Field>> {
        Some(match key {
            keys::SERVER_ADDRESS => &mut self.server_address,
            keys::USERNAME => &mut self.username,
            keys::PASSWORD => &mut self.password,
            keys::AUTH => &mut self.auth,
            keys::IDENTITY_TOKEN => &mut self.identity_token,
            keys::REGISTRY_TOKEN => &mut self.registry_token,
            _ => return None,
        })
    }
}

/// The key closest to `unknown`, if close enough to be a likely typo.
fn suggest(unknown: &str) -> Option<&'static str> {
    if let Some(exact) = keys::ALL.iter().find(|k| k.eq_ignore_ascii_case(unknown)) {
        return Some(exact);
    }
    let lower = unknown.to_ascii_lowercase();
    keys::ALL
        .iter()
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII; anything else is far anyway).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > 64 {
        return usize::MAX;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// Where a value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Data,
    StringData,
}

impl Source {
    fn path(self, key: &str) -> String {
        match self {
            Self::Data => format!("data[{key}]"),
            Self::StringData => format!("stringData[{key}]"),
        }
    }
}

/// Decodes one value of `data` or `stringData`, reporting why it cannot be used. Values
/// are never quoted in messages: they may be passwords.
fn decode_value(
    source: Source,
    key: &str,
    value: &serde_json::Value,
    config: &PolicyConfig,
    findings: &mut Findings,
) -> Option<String> {
    let path = source.path(key);
    let Some(text) = value.as_str() else {
        findings.violation(
            &path,
            FieldErrorType::FieldValueTypeInvalid,
            format!(
                "must be a string, not {}; quote it in YAML",
                json_type(value)
            ),
        );
        return None;
    };
    let plain_hint = || {
        format!(
            "put plain text under stringData instead (stringData[{key}]), or encode it: \
             printf %s 'VALUE' | base64 -w0"
        )
    };
    let decoded = match source {
        Source::StringData => text.to_string(),
        Source::Data => {
            let Ok(bytes) = STANDARD.decode(text) else {
                findings.violation(
                    &path,
                    FieldErrorType::FieldValueInvalid,
                    format!(
                        "is not valid base64: values under data must be base64-encoded \
                         (standard alphabet, padded); {}",
                        plain_hint()
                    ),
                );
                return None;
            };
            match String::from_utf8(bytes) {
                Ok(decoded) => decoded,
                Err(_) => {
                    findings.violation(
                        &path,
                        FieldErrorType::FieldValueInvalid,
                        format!(
                            "decodes to bytes that are not UTF-8 text; if you wrote plain text \
                             here, it only happens to look like base64: {}",
                            plain_hint()
                        ),
                    );
                    return None;
                }
            }
        }
    };
    let limit = config.value_limit();
    if decoded.len() > limit {
        findings.violation(
            &path,
            FieldErrorType::FieldValueTooLong,
            format!(
                "is {} bytes long; the limit is {limit} bytes",
                decoded.len()
            ),
        );
        return None;
    }
    if let Some((at, c)) = decoded.char_indices().find(|(_, c)| c.is_control()) {
        let hint = if c == '\n' {
            " (a trailing newline usually comes from `echo` without `-n`; use printf %s)"
        } else {
            ""
        };
        findings.violation(
            &path,
            FieldErrorType::FieldValueInvalid,
            format!(
                "must not contain control characters: found U+{:04X} at byte {at}{hint}",
                c as u32
            ),
        );
        return None;
    }
    Some(decoded)
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

fn check_regcredentials(
    secret: &SecretManifest,
    config: &PolicyConfig,
    findings: &mut Findings,
) -> Option<ValidCredentials> {
    let mut raw = RawCredentials::default();
    let mut total = 0usize;
    // Keys whose value is present but unusable: their absence must not cascade into
    // "required" violations.
    let mut broken: Vec<&str> = Vec::new();
    let empty = BTreeMap::new();
    // data first, then stringData, so that stringData wins as the API server merges them.
    for (source, map) in [
        (Source::Data, secret.data.as_ref().unwrap_or(&empty)),
        (
            Source::StringData,
            secret.string_data.as_ref().unwrap_or(&empty),
        ),
    ] {
        for (key, value) in map {
            let path = source.path(key);
            let Some(slot) = raw.slot(key) else {
                let message = if key == keys::DOCKER_CONFIG_JSON || key == keys::DOCKERCFG {
                    format!(
                        "{key} belongs to Secrets of type {DOCKER_CONFIG_JSON_TYPE} or {DOCKERCFG_TYPE}; \
                         `regcred convert` turns such a Secret into regcredentials Secrets"
                    )
                } else {
                    let suggestion = suggest(key);
                    // The likely-meant key is then not "missing" as well.
                    broken.extend(suggestion);
                    let hint = suggestion
                        .map(|k| format!("did you mean {k:?}? "))
                        .unwrap_or_default();
                    format!(
                        "unknown key {key:?}; {hint}supported keys: {}",
                        keys::ALL.join(", ")
                    )
                };
                findings.violation(&path, FieldErrorType::FieldValueNotSupported, message);
                continue;
            };
            let Some(decoded) = decode_value(source, key, value, config, findings) else {
                broken.extend(keys::ALL.iter().find(|k| **k == key));
                continue;
            };
            if let Some(previous) = slot.take() {
                total -= previous.value.len();
            }
            total += decoded.len();
            // An empty value is proto3's "unset".
            if !decoded.is_empty() {
                *slot = Some(Field {
                    path,
                    value: decoded,
                });
            }
        }
    }
    let limit = config.secret_limit();
    if total > limit {
        findings.violation(
            "data",
            FieldErrorType::FieldValueTooLong,
            format!("the values add up to {total} bytes; the limit is {limit} bytes"),
        );
    }
    let before = findings.violations.len();
    let checked = check_credentials(&raw, "data", config, findings);
    if !broken.is_empty() {
        let mut index = 0;
        findings.violations.retain(|v| {
            index += 1;
            let cascades = v.error_type == FieldErrorType::FieldValueRequired
                && ((v.field == "data" && broken.iter().any(|k| *k != keys::SERVER_ADDRESS))
                    || broken.iter().any(|k| v.field.ends_with(&format!("[{k}]"))));
            index <= before || !cascades
        });
        return None;
    }
    if findings.violations.len() > before {
        return None;
    }
    checked
}

/// The rules on a set of decoded keys, shared by regcredentials Secrets and Docker
/// config entries. `container` is the path reported when no credential is present.
fn check_credentials(
    raw: &RawCredentials,
    container: &str,
    config: &PolicyConfig,
    findings: &mut Findings,
) -> Option<ValidCredentials> {
    let server_path = format!("{container}[{}]", keys::SERVER_ADDRESS);
    let server = match &raw.server_address {
        None => {
            findings.violation(
                &server_path,
                FieldErrorType::FieldValueRequired,
                "serverAddress is required: the registry these credentials are for, such as \
                 registry.example.com or https://registry.example.com:5000",
            );
            None
        }
        Some(field) => match ServerAddress::parse(&field.value) {
            Err(error) => {
                findings.violation(
                    &field.path,
                    FieldErrorType::FieldValueInvalid,
                    format!(
                        "{:?} is not a registry address ([https://|http://]HOST[:PORT][/PATH]): {error}",
                        without_user_info(&field.value)
                    ),
                );
                None
            }
            Ok(server) => {
                check_allowed(&server, &field.path, &field.value, config, findings);
                if server.scheme == Some(Scheme::Http) {
                    findings.warning(
                        &field.path,
                        "uses plain http://: the registry must be configured as insecure on every \
                         node, and the credentials travel unencrypted",
                    );
                }
                Some(server)
            }
        },
    };

    if let Some(username) = &raw.username
        && username.value.contains(':')
    {
        findings.violation(
            &username.path,
            FieldErrorType::FieldValueInvalid,
            "must not contain ':' (basic authentication joins user name and password with ':')",
        );
    }
    match (&raw.username, &raw.password) {
        (Some(username), None) => findings.violation(
            &sibling(&username.path, keys::PASSWORD),
            FieldErrorType::FieldValueRequired,
            "password is required when username is set",
        ),
        (None, Some(password)) => findings.violation(
            &sibling(&password.path, keys::USERNAME),
            FieldErrorType::FieldValueRequired,
            "username is required when password is set",
        ),
        _ => {}
    }
    if let Some(auth) = &raw.auth {
        check_auth(auth, raw, findings);
    }
    let has_basic = raw.username.is_some() || raw.auth.is_some();
    // A lone password already has its own violation (username required).
    let attempted = has_basic || raw.password.is_some();
    if !attempted && raw.identity_token.is_none() && raw.registry_token.is_none() {
        findings.violation(
            container,
            FieldErrorType::FieldValueRequired,
            "no credential: set username and password, auth, identityToken or registryToken",
        );
    }
    if !has_basic
        && raw.identity_token.is_none()
        && let Some(token) = &raw.registry_token
    {
        findings.warning(
            &token.path,
            "registryToken is the only credential: containerd and CRI-O ignore registry \
             tokens, so pulls will be anonymous",
        );
    }
    if !has_basic && let Some(token) = &raw.identity_token {
        findings.warning(
            &token.path,
            "identityToken is the only credential, and CRI-O ignores identity tokens: \
             this Secret works on containerd only",
        );
    }

    let server = server?;
    let value = |field: &Option<Field>| field.as_ref().map(|f| f.value.clone());
    let secret = |field: &Option<Field>| field.as_ref().map(|f| SecretValue::new(f.value.clone()));
    Some(ValidCredentials {
        credentials: RegistryCredentials {
            server_address: raw
                .server_address
                .as_ref()
                .map(|f| f.value.clone())
                .unwrap_or_default(),
            username: value(&raw.username),
            password: secret(&raw.password),
            auth: secret(&raw.auth),
            identity_token: secret(&raw.identity_token),
            registry_token: secret(&raw.registry_token),
        },
        server,
    })
}

/// `data[username]` -> `data[password]`; `...auths[KEY].username` -> `...auths[KEY].password`.
fn sibling(path: &str, key: &str) -> String {
    if let Some(open) = path.rfind('[')
        && path.ends_with(']')
        && !path[open..].contains('.')
    {
        return format!("{}[{key}]", &path[..open]);
    }
    match path.rfind('.') {
        Some(dot) => format!("{}.{key}", &path[..dot]),
        None => key.to_string(),
    }
}

fn check_auth(auth: &Field, raw: &RawCredentials, findings: &mut Findings) {
    let decoded = STANDARD
        .decode(&auth.value)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(decoded) = decoded else {
        findings.violation(
            &auth.path,
            FieldErrorType::FieldValueInvalid,
            "must be the base64 of USER:PASSWORD (printf %s 'USER:PASSWORD' | base64 -w0)",
        );
        return;
    };
    let Some((user, password)) = decoded.split_once(':') else {
        findings.violation(
            &auth.path,
            FieldErrorType::FieldValueInvalid,
            "decodes to text without ':'; it must be the base64 of USER:PASSWORD",
        );
        return;
    };
    if user.is_empty() {
        findings.violation(
            &auth.path,
            FieldErrorType::FieldValueInvalid,
            "decodes to USER:PASSWORD with an empty user",
        );
        return;
    }
    let disagrees = raw.username.as_ref().is_some_and(|u| u.value != user)
        || raw.password.as_ref().is_some_and(|p| p.value != password);
    if disagrees {
        findings.violation(
            &auth.path,
            FieldErrorType::FieldValueInvalid,
            "does not agree with username and password; set either auth or username and \
             password, or make them the same credentials",
        );
    }
}

fn check_allowed(
    server: &ServerAddress,
    path: &str,
    written: &str,
    config: &PolicyConfig,
    findings: &mut Findings,
) {
    let Some(allowed) = &config.allowed_registries else {
        return;
    };
    let answers: Vec<Containment> = allowed
        .iter()
        .filter_map(|pattern| ServerAddress::parse(pattern).ok())
        .map(|pattern| server.containment(&pattern))
        .collect();
    if answers.contains(&Containment::Within) {
        return;
    }
    if answers.contains(&Containment::Undecided) {
        findings.violation(
            path,
            FieldErrorType::FieldValueForbidden,
            format!(
                "{written:?}: its host globs cannot be proven to stay within the allowed \
                 registries ({}) of the policy configuration; write a narrower or simpler glob",
                allowed.join(", ")
            ),
        );
    } else {
        findings.violation(
            path,
            FieldErrorType::FieldValueForbidden,
            format!(
                "{written:?} is not among the allowed registries ({}) of the policy configuration",
                allowed.join(", ")
            ),
        );
    }
}

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
enum DockerFormat {
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

fn read_docker(
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
    let text = decode_document(source, key, value, &relaxed, findings)?;
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

/// Like [`decode_value`], but for a whole document: control characters (newlines) are fine.
fn decode_document(
    source: Source,
    key: &str,
    value: &serde_json::Value,
    config: &PolicyConfig,
    findings: &mut Findings,
) -> Option<String> {
    let path = source.path(key);
    let Some(text) = value.as_str() else {
        findings.violation(
            &path,
            FieldErrorType::FieldValueTypeInvalid,
            format!("must be a string, not {}", json_type(value)),
        );
        return None;
    };
    let decoded = match source {
        Source::StringData => text.to_string(),
        Source::Data => match STANDARD.decode(text).ok().map(String::from_utf8) {
            Some(Ok(decoded)) => decoded,
            _ => {
                findings.violation(
                    &path,
                    FieldErrorType::FieldValueInvalid,
                    "is not base64 of UTF-8 JSON; put the JSON under stringData or encode it \
                     with base64 -w0",
                );
                return None;
            }
        },
    };
    if decoded.len() > config.value_limit().max(config.secret_limit()) {
        findings.violation(
            &path,
            FieldErrorType::FieldValueTooLong,
            format!(
                "is {} bytes long; the limit is {} bytes",
                decoded.len(),
                config.secret_limit()
            ),
        );
        return None;
    }
    Some(decoded)
}

/// A JSON error description that cannot carry the document's content.
fn error_category(error: &serde_json::Error) -> String {
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

fn check_docker(
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn secret(data: serde_json::Value, string_data: serde_json::Value) -> SecretManifest {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "apps"},
            "type": REGCREDENTIALS_TYPE,
            "data": data, "stringData": string_data,
        }))
        .unwrap()
    }

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    fn fields(report: &ValidationReport) -> Vec<(String, FieldErrorType)> {
        report
            .violations
            .iter()
            .map(|v| (v.field.clone(), v.error_type))
            .collect()
    }

    #[rstest]
    #[case::username_password(json!({}), json!({"serverAddress": "r.example", "username": "u", "password": "p"}))]
    #[case::base64_data(json!({"serverAddress": b64("r.example"), "username": b64("u"), "password": b64("p")}), json!({}))]
    #[case::auth_only(json!({}), json!({"serverAddress": "r.example", "auth": b64("u:p")}))]
    #[case::auth_agrees(json!({}), json!({"serverAddress": "r.example", "username": "u", "password": "p:q", "auth": b64("u:p:q")}))]
    #[case::identity_token(json!({}), json!({"serverAddress": "https://r.example:5000", "identityToken": "t"}))]
    #[case::string_data_wins(json!({"serverAddress": b64("ftp://old")}), json!({"serverAddress": "r.example", "auth": b64("u:p")}))]
    #[case::glob_and_path(json!({}), json!({"serverAddress": "*.r.example/team", "auth": b64("u:p")}))]
    fn accepts(#[case] data: serde_json::Value, #[case] string_data: serde_json::Value) {
        let report = validate(&secret(data, string_data), &PolicyConfig::default());
        assert!(report.valid, "{:?}", report.violations);
    }

    #[rstest]
    #[case::missing_server(json!({"username": "u", "password": "p"}), "data[serverAddress]", FieldErrorType::FieldValueRequired)]
    #[case::bad_server(json!({"serverAddress": "ftp://r.example", "auth": "dTpw"}), "stringData[serverAddress]", FieldErrorType::FieldValueInvalid)]
    #[case::unknown_key(json!({"serverAddress": "r.example", "auth": "dTpw", "email": "x"}), "stringData[email]", FieldErrorType::FieldValueNotSupported)]
    #[case::no_credential(json!({"serverAddress": "r.example"}), "data", FieldErrorType::FieldValueRequired)]
    #[case::username_without_password(json!({"serverAddress": "r.example", "username": "u"}), "stringData[password]", FieldErrorType::FieldValueRequired)]
    #[case::password_without_username(json!({"serverAddress": "r.example", "password": "p"}), "stringData[username]", FieldErrorType::FieldValueRequired)]
    #[case::colon_in_username(json!({"serverAddress": "r.example", "username": "u:x", "password": "p"}), "stringData[username]", FieldErrorType::FieldValueInvalid)]
    #[case::auth_not_base64(json!({"serverAddress": "r.example", "auth": "u:p"}), "stringData[auth]", FieldErrorType::FieldValueInvalid)]
    #[case::auth_no_colon(json!({"serverAddress": "r.example", "auth": "dXA="}), "stringData[auth]", FieldErrorType::FieldValueInvalid)]
    #[case::auth_empty_user(json!({"serverAddress": "r.example", "auth": "OnA="}), "stringData[auth]", FieldErrorType::FieldValueInvalid)]
    #[case::auth_disagrees(json!({"serverAddress": "r.example", "username": "u", "password": "other", "auth": "dTpw"}), "stringData[auth]", FieldErrorType::FieldValueInvalid)]
    #[case::control_char(json!({"serverAddress": "r.example", "username": "u", "password": "p\n"}), "stringData[password]", FieldErrorType::FieldValueInvalid)]
    #[case::number(json!({"serverAddress": "r.example", "username": "u", "password": 1234}), "stringData[password]", FieldErrorType::FieldValueTypeInvalid)]
    fn rejects(
        #[case] string_data: serde_json::Value,
        #[case] field: &str,
        #[case] error_type: FieldErrorType,
    ) {
        let report = validate(&secret(json!({}), string_data), &PolicyConfig::default());
        assert!(!report.valid);
        assert!(
            fields(&report).contains(&(field.to_string(), error_type)),
            "{:?}",
            report.violations
        );
    }

    #[test]
    fn plain_text_under_data_gets_a_stringdata_hint() {
        let report = validate(
            &secret(
                json!({"serverAddress": "my.custom-registry.com", "username": b64("u"), "password": b64("p")}),
                json!({}),
            ),
            &PolicyConfig::default(),
        );
        let violation = &report.violations[0];
        assert_eq!(violation.field, "data[serverAddress]");
        assert!(
            violation.message.contains("stringData"),
            "{}",
            violation.message
        );
    }

    #[rstest]
    #[case::lower("identitytoken", Some("identityToken"))]
    #[case::snake("server_address", Some("serverAddress"))]
    #[case::typo("usrname", Some("username"))]
    #[case::far("color", None)]
    fn suggests_the_nearest_key(#[case] key: &str, #[case] expected: Option<&str>) {
        assert_eq!(suggest(key), expected);
    }

    #[test]
    fn unknown_key_message_names_the_suggestion() {
        let report = validate(
            &secret(
                json!({}),
                json!({"serverAddress": "r.example", "identitytoken": "t"}),
            ),
            &PolicyConfig::default(),
        );
        let message = &report.violations[0].message;
        assert!(
            message.contains("did you mean \"identityToken\""),
            "{message}"
        );
    }

    #[rstest]
    #[case::bad_name("Creds_1", "metadata.name", FieldErrorType::FieldValueInvalid)]
    #[case::no_name("", "metadata.name", FieldErrorType::FieldValueRequired)]
    fn checks_metadata(
        #[case] name: &str,
        #[case] field: &str,
        #[case] error_type: FieldErrorType,
    ) {
        let mut s = secret(
            json!({}),
            json!({"serverAddress": "r.example", "auth": b64("u:p")}),
        );
        s.metadata.name = Some(name.into());
        let report = validate(&s, &PolicyConfig::default());
        assert_eq!(fields(&report), vec![(field.to_string(), error_type)]);
    }

    #[test]
    fn value_and_secret_limits_follow_the_policy_configuration() {
        let s = secret(
            json!({}),
            json!({"serverAddress": "r.example", "username": "u", "password": "x".repeat(100)}),
        );
        let config = PolicyConfig {
            max_value_bytes: Some(50),
            ..PolicyConfig::default()
        };
        assert_eq!(
            fields(&validate(&s, &config)),
            vec![(
                "stringData[password]".to_string(),
                FieldErrorType::FieldValueTooLong
            )]
        );
        let config = PolicyConfig {
            max_secret_bytes: Some(100),
            ..PolicyConfig::default()
        };
        assert_eq!(
            fields(&validate(&s, &config)),
            vec![("data".to_string(), FieldErrorType::FieldValueTooLong)]
        );
        let big = secret(
            json!({}),
            json!({"serverAddress": "r.example", "username": "u", "password": "x".repeat(70_000)}),
        );
        assert!(!validate(&big, &PolicyConfig::default()).valid);
    }

    #[test]
    fn allowed_registries_forbid_others() {
        let s = secret(
            json!({}),
            json!({"serverAddress": "evil.example", "auth": b64("u:p")}),
        );
        let config = PolicyConfig {
            allowed_registries: Some(vec!["*.corp.example".into()]),
            ..PolicyConfig::default()
        };
        assert_eq!(
            fields(&validate(&s, &config)),
            vec![(
                "stringData[serverAddress]".to_string(),
                FieldErrorType::FieldValueForbidden
            )]
        );
    }

    #[rstest]
    #[case::registry_token_only(json!({"serverAddress": "r.example", "registryToken": "t"}), "stringData[registryToken]")]
    #[case::identity_token_only(json!({"serverAddress": "r.example", "identityToken": "t"}), "stringData[identityToken]")]
    #[case::plain_http(json!({"serverAddress": "http://r.example", "auth": "dTpw"}), "stringData[serverAddress]")]
    fn warns(#[case] string_data: serde_json::Value, #[case] field: &str) {
        let report = validate(&secret(json!({}), string_data), &PolicyConfig::default());
        assert!(report.valid, "{:?}", report.violations);
        assert!(
            report.warnings.iter().any(|w| w.field == field),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn messages_never_contain_secret_values() {
        let canary = "CANARY-9f2c";
        let s = secret(
            json!({"password": canary, "identityToken": format!("{canary}!")}),
            json!({"serverAddress": "r.example", "username": "u:x", "auth": STANDARD.encode(format!("v:{canary}")), "registryToken": format!("{canary}\n")}),
        );
        let report = validate(&s, &PolicyConfig::default());
        assert!(!report.valid);
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains(canary), "{text}");
    }

    #[test]
    fn user_info_is_refused_without_quoting_the_password() {
        let canary = "CANARY-5e1d";
        let s = secret(
            json!({}),
            json!({"serverAddress": format!("https://robot:{canary}@r.example.com/team"), "username": "u", "password": "p"}),
        );
        let report = validate(&s, &PolicyConfig::default());
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains(canary), "{text}");
        assert_eq!(
            fields(&report),
            vec![(
                "stringData[serverAddress]".to_string(),
                FieldErrorType::FieldValueInvalid
            )]
        );
        let message = &report.violations[0].message;
        assert!(message.contains("user info"), "{message}");
        assert!(
            message.contains("https://***@r.example.com/team"),
            "{message}"
        );

        for (type_, key, document) in [
            (
                DOCKER_CONFIG_JSON_TYPE,
                ".dockerconfigjson",
                json!({"auths": {format!("https://robot:{canary}@r.example.com"): {"auth": b64("u:p")}}}),
            ),
            (
                DOCKERCFG_TYPE,
                ".dockercfg",
                json!({format!("robot:{canary}@r.example.com"): {"auth": b64("u:p")}}),
            ),
        ] {
            let s: SecretManifest = serde_json::from_value(json!({
                "metadata": {"name": "d"}, "type": type_,
                "data": {key: b64(&document.to_string())},
            }))
            .unwrap();
            let report = validate(&s, &PolicyConfig::default());
            let text = serde_json::to_string(&report).unwrap();
            assert!(!report.valid);
            assert!(!text.contains(canary), "{text}");
            assert!(text.contains("***@r.example.com"), "{text}");
        }
    }

    #[test]
    fn globs_that_cannot_be_proven_within_the_allowed_registries_are_forbidden() {
        let config = PolicyConfig {
            allowed_registries: Some(vec!["y[!x].corp.example".into()]),
            ..PolicyConfig::default()
        };
        let with = |server: &str| {
            validate(
                &secret(
                    json!({}),
                    json!({"serverAddress": server, "auth": b64("u:p")}),
                ),
                &config,
            )
        };
        assert_eq!(
            fields(&with("y*.corp.example")),
            vec![(
                "stringData[serverAddress]".to_string(),
                FieldErrorType::FieldValueForbidden
            )]
        );
        assert!(with("y[!x].corp.example").valid);
        assert!(with("ya.corp.example").valid);
        assert!(!with("yx.corp.example").valid);
    }

    #[test]
    fn docker_keys_kubelet_reads_as_a_query_are_refused() {
        let document = json!({"auths": {"r?.example.com": {"auth": b64("u:p")}, "[ab].example.com": {"auth": b64("u:p")}}});
        let s: SecretManifest = serde_json::from_value(json!({
            "metadata": {"name": "d"}, "type": DOCKER_CONFIG_JSON_TYPE,
            "data": {".dockerconfigjson": b64(&document.to_string())},
        }))
        .unwrap();
        let report = validate(&s, &PolicyConfig::default());
        assert_eq!(
            fields(&report),
            vec![(
                "data[.dockerconfigjson].auths[r?.example.com]".to_string(),
                FieldErrorType::FieldValueInvalid
            )]
        );
        assert!(report.violations[0].message.contains("kubelet"));
        assert!(
            report.warnings.iter().any(|w| w.field
                == "data[.dockerconfigjson].auths[[ab].example.com]"
                && w.message.contains("kubelet")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn docker_config_entries_are_checked_one_by_one() {
        let config = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("u:p")},
            "r.example": {"username": "u"},
            "t.example": {"username": "<token>", "password": "refresh"},
        }});
        let s: SecretManifest = serde_json::from_value(json!({
            "metadata": {"name": "d"}, "type": DOCKER_CONFIG_JSON_TYPE,
            "data": {".dockerconfigjson": b64(&config.to_string())},
        }))
        .unwrap();
        let report = validate(&s, &PolicyConfig::default());
        assert_eq!(
            fields(&report),
            vec![(
                "data[.dockerconfigjson].auths[r.example].password".to_string(),
                FieldErrorType::FieldValueRequired
            )]
        );
        let checked = check(
            &SecretManifest {
                data: Some([(".dockerconfigjson".to_string(), json!(b64(&json!({"auths": {"t.example": {"username": "<token>", "password": "refresh"}}}).to_string())))].into()),
                ..s
            },
            &PolicyConfig::default(),
        );
        let credentials = &checked.credentials[0].credentials;
        assert_eq!(credentials.username, None);
        assert_eq!(
            credentials.identity_token.as_ref().map(SecretValue::expose),
            Some("refresh")
        );
    }

    #[test]
    fn unknown_top_level_fields_are_named() {
        let mut s = secret(
            json!({}),
            json!({"serverAddress": "r.example", "auth": b64("u:p")}),
        );
        s.unknown_fields
            .insert("stringdata".into(), json!({"password": "x"}));
        let report = validate(&s, &PolicyConfig::default());
        assert_eq!(
            fields(&report),
            vec![(
                "stringdata".to_string(),
                FieldErrorType::FieldValueNotSupported
            )]
        );
        assert!(
            report.violations[0]
                .message
                .contains("did you mean \"stringData\"")
        );
    }

    #[test]
    fn other_types_are_not_supported() {
        let mut s = secret(json!({}), json!({}));
        s.type_ = Some("Opaque".into());
        assert_eq!(
            fields(&validate(&s, &PolicyConfig::default())),
            vec![("type".to_string(), FieldErrorType::FieldValueNotSupported)]
        );
    }
}
