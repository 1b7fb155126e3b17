//! One entry point for the rules, natively or in the module: what the CLI and the servers
//! hold.

use std::sync::Arc;

use regcred_types::{PolicyConfig, Resolution, RuntimeProfile, SecretManifest, ValidationReport};

use regcred_types::wire::codes;

use crate::engine::PolicyPre;
use crate::error::EvalError;

/// Where the rules run: in the WebAssembly module (the default everywhere: the same
/// bytes as every other host) or natively (the `regcred-policy` crate linked in: for
/// tests, benchmarks, and debugging a module against the source).
///
/// Both give the same results for the same request; the shared test vectors prove it.
///
/// ```
/// use regcred_host::PolicyRunner;
/// use regcred_types::{PolicyConfig, SecretManifest};
///
/// let wasm = PolicyRunner::wasm()?;
/// let native = PolicyRunner::Native;
/// let secret = SecretManifest::new("s", None, "kubernetes.io/regcredentials");
/// assert_eq!(
///     wasm.validate(&secret, &PolicyConfig::default())?,
///     native.validate(&secret, &PolicyConfig::default())?,
/// );
/// assert_eq!(
///     wasm.evaluate_raw(br#"{"op": "nope"}"#)?,
///     native.evaluate_raw(br#"{"op": "nope"}"#)?,
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PolicyRunner {
    /// The rules compiled into this binary.
    Native,
    /// A loaded policy module.
    Wasm(Arc<PolicyPre>),
}

impl PolicyRunner {
    /// The embedded module with the default limits.
    ///
    /// # Errors
    ///
    /// See [`PolicyPre::new`].
    pub fn wasm() -> Result<Self, crate::LoadError> {
        Ok(Self::Wasm(Arc::new(PolicyPre::new()?)))
    }

    /// Validates one Secret. See [`PolicyPre::validate`].
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] when the rules refuse the request; in the module, any
    /// other [`EvalError`] when it misbehaves or hits a limit.
    pub fn validate(
        &self,
        secret: &SecretManifest,
        config: &PolicyConfig,
    ) -> Result<ValidationReport, EvalError> {
        match self {
            Self::Wasm(policy) => policy.validate(secret, config),
            Self::Native => {
                native_config(config)?;
                Ok(regcred_policy::validate(secret, config))
            }
        }
    }

    /// The credentials to try for `image`. See [`PolicyPre::resolve`].
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] with code `invalid_image` for a malformed reference; in
    /// the module, any other [`EvalError`] when it misbehaves or hits a limit.
    pub fn resolve(
        &self,
        image: &str,
        secrets: &[SecretManifest],
        runtime: RuntimeProfile,
        config: &PolicyConfig,
    ) -> Result<Resolution, EvalError> {
        match self {
            Self::Wasm(policy) => policy.resolve(image, secrets, runtime, config),
            Self::Native => {
                native_config(config)?;
                regcred_policy::resolve(image, secrets, runtime, config)
                    .map_err(|err| rejected(codes::INVALID_IMAGE, &err))
            }
        }
    }

    /// Converts a dockerconfigjson or dockercfg Secret. See [`PolicyPre::convert`].
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] with code `invalid_secret` when it cannot be converted;
    /// in the module, any other [`EvalError`] when it misbehaves or hits a limit.
    pub fn convert(&self, secret: &SecretManifest) -> Result<Vec<SecretManifest>, EvalError> {
        match self {
            Self::Wasm(policy) => policy.convert(secret),
            Self::Native => {
                regcred_policy::convert(secret).map_err(|err| rejected(codes::INVALID_SECRET, &err))
            }
        }
    }

    /// Checks a policy configuration as every operation does before it runs (limits may
    /// only be lowered, patterns must parse): for a caller that reads a configuration
    /// once and wants to refuse it at start rather than at the first evaluation. In the
    /// module, the configuration goes with a validation of an empty Secret, whose report
    /// is ignored.
    ///
    /// # Errors
    ///
    /// [`EvalError::Rejected`] with code `invalid_config` and a message naming the field;
    /// in the module, any other [`EvalError`] when it misbehaves or hits a limit.
    pub fn check_config(&self, config: &PolicyConfig) -> Result<(), EvalError> {
        match self {
            Self::Wasm(policy) => {
                let probe =
                    SecretManifest::new("config-check", None, regcred_types::REGCREDENTIALS_TYPE);
                policy.validate(&probe, config).map(drop)
            }
            Self::Native => native_config(config),
        }
    }

    /// One JSON request, one JSON response. See [`PolicyPre::evaluate_raw`].
    ///
    /// # Errors
    ///
    /// Natively, none (bad requests get an error response); in the module, an
    /// [`EvalError`] when it misbehaves or hits a limit.
    pub fn evaluate_raw(&self, request: &[u8]) -> Result<Vec<u8>, EvalError> {
        match self {
            Self::Wasm(policy) => policy.evaluate_raw(request),
            Self::Native => Ok(regcred_policy::evaluate(request)),
        }
    }
}

/// The configuration check `evaluate` makes before every operation, with its code.
fn native_config(config: &PolicyConfig) -> Result<(), EvalError> {
    regcred_policy::check_config(config).map_err(|message| EvalError::Rejected {
        code: codes::INVALID_CONFIG.into(),
        message,
    })
}

/// The error response `evaluate` gives for `err`, as an [`EvalError::Rejected`].
fn rejected(code: &str, err: &dyn std::fmt::Display) -> EvalError {
    EvalError::Rejected {
        code: code.into(),
        message: err.to_string(),
    }
}
