//! The credential rules: which keys go together, `auth` against `username`/`password`,
//! and the policy configuration's allowed registries.

use super::*;

pub(super) fn check_regcredentials(
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
            let Some(decoded) = decode(source, key, value, Holds::Value, config, findings) else {
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
pub(super) fn check_credentials(
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
pub(super) fn sibling(path: &str, key: &str) -> String {
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

pub(super) fn check_auth(auth: &Field, raw: &RawCredentials, findings: &mut Findings) {
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

pub(super) fn check_allowed(
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
