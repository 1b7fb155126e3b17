//! The JSON request/response entry point shared by every runner (native, wasm, JS).

use regcred_types::wire::{PolicyError, PolicyRequest, codes};
use regcred_types::{PolicyConfig, SecretManifest};
use serde::Serialize;

use crate::server::ServerAddress;
use crate::{convert, resolve, validate};

#[derive(Serialize)]
struct OkResponse<'a, T: Serialize> {
    ok: &'a T,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct ErrorResponse {
    error: PolicyError,
}

fn ok<T: Serialize>(result: &T, warnings: &[String]) -> Vec<u8> {
    serde_json::to_vec(&OkResponse {
        ok: result,
        warnings,
    })
    .unwrap_or_else(|_| error(codes::BAD_REQUEST, "result could not be serialized".into()))
}

fn error(code: &str, message: String) -> Vec<u8> {
    let response = ErrorResponse {
        error: PolicyError {
            code: code.into(),
            message,
        },
    };
    serde_json::to_vec(&response)
        .unwrap_or_else(|_| b"{\"error\":{\"code\":\"bad_request\",\"message\":\"\"}}".to_vec())
}

/// Answers one JSON request (a [`PolicyRequest`]) with one JSON response, the bytes the
/// WebAssembly module returns for the same input (see `ABI.md`). Never panics: a bad
/// request gets an `{"error": ...}` response. Error messages never quote secret values.
pub fn evaluate(request: &[u8]) -> Vec<u8> {
    let text = match std::str::from_utf8(request) {
        Ok(text) => text,
        Err(e) => {
            return error(
                codes::BAD_REQUEST,
                format!(
                    "request is not UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            );
        }
    };
    let request: PolicyRequest = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) => {
            return error(
                codes::BAD_REQUEST,
                format!("request is not valid: {}", scrub(&e)),
            );
        }
    };
    match request {
        PolicyRequest::Validate { secret, config } => {
            let config = match checked_config(config) {
                Ok(config) => config,
                Err(message) => return error(codes::INVALID_CONFIG, message),
            };
            ok(&validate(&secret, &config), &[])
        }
        PolicyRequest::Resolve {
            image,
            secrets,
            runtime,
            config,
        } => {
            let config = match checked_config(config) {
                Ok(config) => config,
                Err(message) => return error(codes::INVALID_CONFIG, message),
            };
            match resolve(&image, &secrets, runtime, &config) {
                Ok(resolution) => ok(&resolution.candidates, &resolution.warnings),
                Err(e) => error(codes::INVALID_IMAGE, e.to_string()),
            }
        }
        PolicyRequest::Convert { secret } => match convert(&secret) {
            Ok(converted) => ok::<Vec<SecretManifest>>(&converted, &[]),
            Err(e) => error(codes::INVALID_SECRET, e.to_string()),
        },
    }
}

/// Checks a policy configuration: limits may only be lowered, patterns must parse.
///
/// # Errors
///
/// A message naming the field that is wrong.
pub fn check_config(config: &PolicyConfig) -> Result<(), String> {
    for (name, value, max) in [
        (
            "maxValueBytes",
            config.max_value_bytes,
            regcred_types::MAX_VALUE_BYTES,
        ),
        (
            "maxSecretBytes",
            config.max_secret_bytes,
            regcred_types::MAX_SECRET_BYTES,
        ),
    ] {
        match value {
            Some(0) => return Err(format!("{name} must be at least 1")),
            Some(v) if v > max => {
                return Err(format!(
                    "{name} is {v}, but a policy can only lower the limit of {max}"
                ));
            }
            _ => {}
        }
    }
    for (i, pattern) in config.allowed_registries.iter().flatten().enumerate() {
        ServerAddress::parse(pattern).map_err(|e| {
            format!("allowedRegistries[{i}] {pattern:?} is not a registry pattern: {e}")
        })?;
    }
    Ok(())
}

fn checked_config(config: Option<PolicyConfig>) -> Result<PolicyConfig, String> {
    let config = config.unwrap_or_default();
    check_config(&config)?;
    Ok(config)
}

/// serde's message without any quoted input value
/// ([`regcred_types::redact::serde_message`]).
fn scrub(error: &serde_json::Error) -> String {
    regcred_types::redact::serde_message(&error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn call(request: &Value) -> Value {
        serde_json::from_slice(&evaluate(request.to_string().as_bytes())).unwrap()
    }

    #[test]
    fn validate_answers_with_the_report() {
        let response = call(&json!({"op": "validate", "secret": {
            "metadata": {"name": "a"}, "type": "kubernetes.io/regcredentials",
            "stringData": {"serverAddress": "r.example", "registryToken": "t"}}}));
        assert_eq!(response["ok"]["valid"], json!(true));
        assert_eq!(
            response["ok"]["warnings"][0]["field"],
            json!("stringData[registryToken]")
        );
    }

    #[test]
    fn bad_requests_get_error_responses() {
        for input in [
            &b"\xff\xfe"[..],
            b"",
            b"{",
            b"[]",
            br#"{"op":"nope"}"#,
            br#"{"op":"resolve"}"#,
        ] {
            let response: Value = serde_json::from_slice(&evaluate(input)).unwrap();
            assert_eq!(response["error"]["code"], json!("bad_request"), "{input:?}");
        }
    }

    #[test]
    fn error_messages_do_not_quote_input_strings() {
        let response = call(&json!({"op": "validate", "secret": {"data": "CANARY-pw"}}));
        let message = response["error"]["message"].as_str().unwrap();
        assert!(!message.contains("CANARY"), "{message}");
        assert!(
            message.contains("invalid type: string, expected"),
            "{message}"
        );
    }

    #[test]
    fn config_limits_can_only_be_lowered() {
        let response =
            call(&json!({"op": "validate", "secret": {}, "config": {"maxValueBytes": 100000}}));
        assert_eq!(response["error"]["code"], json!("invalid_config"));
        let response = call(
            &json!({"op": "validate", "secret": {}, "config": {"allowedRegistries": ["ftp://x"]}}),
        );
        assert_eq!(response["error"]["code"], json!("invalid_config"));
    }

    #[test]
    fn resolve_carries_warnings_beside_the_result() {
        let response = call(
            &json!({"op": "resolve", "image": "r.example/app", "secrets": [
                {"metadata": {"name": "a"}, "type": "kubernetes.io/regcredentials", "stringData": {"serverAddress": "r.example"}}
            ]}),
        );
        assert_eq!(response["ok"], json!([]));
        assert_eq!(response["warnings"].as_array().unwrap().len(), 1);
        let response = call(&json!({"op": "resolve", "image": "Bad/Image", "secrets": []}));
        assert_eq!(response["error"]["code"], json!("invalid_image"));
    }
}
