//! The policy the CLI runs: every command goes through the same JSON request/response
//! as the WebAssembly module, so the CLI's verdicts are the module's.

use anyhow::{Result, anyhow};
use regcred_types::wire::{PolicyRequest, PolicyResponse};
use regcred_types::{
    Candidate, PolicyConfig, Resolution, RuntimeProfile, SecretManifest, ValidationReport,
};
use serde::de::DeserializeOwned;

/// Where the rules run.
pub(crate) enum Policy {
    /// The rules compiled into this binary.
    Native,
}

/// A failed request: the policy's error code and message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct PolicyCallError {
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Policy {
    fn call<T: DeserializeOwned>(&self, request: &PolicyRequest) -> Result<(T, Vec<String>)> {
        let bytes = serde_json::to_vec(request)?;
        let response = match self {
            Self::Native => regcred_policy::evaluate(&bytes),
        };
        match serde_json::from_slice::<PolicyResponse>(&response)
            .map_err(|e| anyhow!("the policy answered with malformed JSON: {e}"))?
        {
            PolicyResponse::Ok { ok, warnings } => Ok((
                serde_json::from_value(ok)
                    .map_err(|e| anyhow!("the policy answered with an unexpected result: {e}"))?,
                warnings,
            )),
            PolicyResponse::Error { error } => Err(PolicyCallError {
                code: error.code,
                message: error.message,
            }
            .into()),
        }
    }

    pub(crate) fn validate(
        &self,
        secret: &SecretManifest,
        config: &PolicyConfig,
    ) -> Result<ValidationReport> {
        let request = PolicyRequest::Validate {
            secret: secret.clone(),
            config: Some(config.clone()),
        };
        Ok(self.call(&request)?.0)
    }

    pub(crate) fn resolve(
        &self,
        image: &str,
        secrets: &[SecretManifest],
        runtime: RuntimeProfile,
        config: &PolicyConfig,
    ) -> Result<Resolution> {
        let request = PolicyRequest::Resolve {
            image: image.to_string(),
            secrets: secrets.to_vec(),
            runtime,
            config: Some(config.clone()),
        };
        let (candidates, warnings): (Vec<Candidate>, _) = self.call(&request)?;
        Ok(Resolution {
            candidates,
            warnings,
        })
    }

    pub(crate) fn convert(&self, secret: &SecretManifest) -> Result<Vec<SecretManifest>> {
        let request = PolicyRequest::Convert {
            secret: secret.clone(),
        };
        Ok(self.call(&request)?.0)
    }
}
