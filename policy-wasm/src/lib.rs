//! The regcredentials rules (work in progress).

use regcred_types::wire::{PolicyError, PolicyResponse, codes};

/// Answers one JSON request (see `ABI.md`) with one JSON response. Never panics.
pub fn evaluate(request: &[u8]) -> Vec<u8> {
    let _ = request;
    let response = PolicyResponse::Error {
        error: PolicyError {
            code: codes::BAD_REQUEST.into(),
            message: "not implemented yet".into(),
        },
    };
    serde_json::to_vec(&response).unwrap_or_default()
}
