//! The typed operations on top of the JSON ABI: requests built from borrowed values, and
//! responses parsed straight into the `regcred-types` results.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use regcred_types::wire::PolicyError;
use regcred_types::{
    Candidate, PolicyConfig, Resolution, RuntimeProfile, SecretManifest, ValidationReport,
};

use crate::error::EvalError;

/// [`regcred_types::wire::PolicyRequest`] by reference, so that nothing is cloned to
/// serialize it.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum RequestRef<'a> {
    Validate {
        secret: &'a SecretManifest,
        #[serde(skip_serializing_if = "Option::is_none")]
        config: Option<&'a PolicyConfig>,
    },
    Resolve {
        image: &'a str,
        secrets: &'a [SecretManifest],
        runtime: RuntimeProfile,
        #[serde(skip_serializing_if = "Option::is_none")]
        config: Option<&'a PolicyConfig>,
    },
    Convert {
        secret: &'a SecretManifest,
    },
}

/// `None` for the default configuration, which the request then leaves out.
pub(crate) fn non_default(config: &PolicyConfig) -> Option<&PolicyConfig> {
    (*config != PolicyConfig::default()).then_some(config)
}

impl RequestRef<'_> {
    pub(crate) fn to_json(&self) -> Result<Vec<u8>, EvalError> {
        serde_json::to_vec(self).map_err(|error| EvalError::Runtime {
            reason: format!("cannot encode the request ({:?} error)", error.classify()),
        })
    }
}

/// Either half of a response, parsed in one pass.
#[derive(Deserialize)]
struct Response<T> {
    ok: Option<T>,
    #[serde(default)]
    warnings: Vec<String>,
    error: Option<PolicyError>,
}

fn parse<T: DeserializeOwned>(
    response: &[u8],
    expected: &'static str,
) -> Result<(T, Vec<String>), EvalError> {
    let response: Response<T> = serde_json::from_slice(response)
        .map_err(|error| EvalError::invalid_json(expected, &error))?;
    match (response.ok, response.error) {
        (Some(ok), None) => Ok((ok, response.warnings)),
        (None, Some(error)) => Err(EvalError::Rejected {
            code: error.code,
            message: error.message,
        }),
        _ => Err(EvalError::InvalidJson {
            expected,
            line: 1,
            column: 1,
        }),
    }
}

pub(crate) fn parse_validation(response: &[u8]) -> Result<ValidationReport, EvalError> {
    parse(response, "a validation report response").map(|(report, _)| report)
}

pub(crate) fn parse_resolution(response: &[u8]) -> Result<Resolution, EvalError> {
    parse::<Vec<Candidate>>(response, "a resolution response").map(|(candidates, warnings)| {
        Resolution {
            candidates,
            warnings,
        }
    })
}

pub(crate) fn parse_conversion(response: &[u8]) -> Result<Vec<SecretManifest>, EvalError> {
    parse(response, "a conversion response").map(|(secrets, _)| secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_matches_the_wire_type() {
        let secret = SecretManifest::new("s", None, regcred_types::REGCREDENTIALS_TYPE);
        let json = RequestRef::Resolve {
            image: "quay.io/a/b",
            secrets: std::slice::from_ref(&secret),
            runtime: RuntimeProfile::CriO,
            config: None,
        }
        .to_json()
        .expect("encodes");
        let back: regcred_types::wire::PolicyRequest =
            serde_json::from_slice(&json).expect("decodes as the wire type");
        assert!(matches!(
            back,
            regcred_types::wire::PolicyRequest::Resolve {
                runtime: RuntimeProfile::CriO,
                ..
            }
        ));
    }

    #[test]
    fn error_response_is_rejected_and_garbage_is_invalid_json() {
        let err = parse_validation(br#"{"error":{"code":"bad_request","message":"no"}}"#);
        assert_eq!(
            err,
            Err(EvalError::Rejected {
                code: "bad_request".into(),
                message: "no".into()
            })
        );
        let err = parse_validation(br#"{"ok":{"password":"hunter2"}}"#).expect_err("bad shape");
        assert!(matches!(err, EvalError::InvalidJson { .. }));
        assert!(!err.to_string().contains("hunter2"));
    }
}
