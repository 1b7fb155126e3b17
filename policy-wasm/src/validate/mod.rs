//! Validation: from a Secret manifest to a [`ValidationReport`] and, when valid, to the
//! decoded credentials. One module per job: [`metadata`] (the object and its metadata),
//! [`value`] (decoding `data`/`stringData`), [`credentials`] (the credential rules) and
//! [`docker`] (Docker config parsing, shared with `convert`).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use regcred_types::{
    DOCKER_CONFIG_JSON_TYPE, DOCKERCFG_TYPE, DockerCfg, DockerConfigEntry, DockerConfigJson,
    FieldErrorType, IDENTITY_TOKEN_USERNAME, PolicyConfig, REGCREDENTIALS_TYPE,
    RegistryCredentials, SecretManifest, SecretValue, ValidationReport, Violation, Warning, keys,
};

use crate::server::{Containment, KubeletReading, Scheme, ServerAddress, without_user_info};

mod credentials;
mod docker;
mod metadata;
mod value;

use credentials::*;
use docker::*;
pub(crate) use docker::{docker_entry_fields, read_docker_config};
use metadata::*;
use value::*;
pub(crate) use value::{Field, RawCredentials};

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

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn decoded_values_never_reach_debug_output() {
        const CANARY: &str = "canary-Zq7xW3";
        let field = |path: &str| {
            Some(Field {
                path: path.into(),
                value: CANARY.into(),
            })
        };
        let raw = RawCredentials {
            server_address: field("data[serverAddress]"),
            username: field("data[username]"),
            password: field("data[password]"),
            auth: field("data[auth]"),
            identity_token: field("stringData[identityToken]"),
            registry_token: field("stringData[registryToken]"),
        };
        for shown in [format!("{raw:?}"), format!("{raw:#?}")] {
            assert!(!shown.contains(CANARY), "{shown}");
            assert!(shown.contains("data[password]"), "{shown}");
        }
    }
}
