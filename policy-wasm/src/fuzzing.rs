//! The properties regcred's fuzzing checks, one per parser, each returning what went
//! wrong instead of panicking so that a harness can name the input. cargo-fuzz's targets
//! (`fuzz/`, nightly) and the stable campaign of `scripts/test`
//! (`host/tests/wasm/fuzz.rs`) both call these.

use crate::{ImageRef, ServerAddress, evaluate};

/// Any bytes into the policy's JSON entry point: the answer is a JSON object (never a
/// panic). Returns the answer.
///
/// # Errors
/// The answer is not a JSON object.
pub fn evaluate_answers_a_json_object(request: &[u8]) -> Result<Vec<u8>, String> {
    let response = evaluate(request);
    match serde_json::from_slice::<serde_json::Value>(&response) {
        Ok(serde_json::Value::Object(_)) => Ok(response),
        _ => Err(format!(
            "evaluate answered with something that is not a JSON object: {:?}",
            String::from_utf8_lossy(&response)
        )),
    }
}

/// Any text as a `serverAddress`: parsed or refused; a parsed address's key parses again
/// to the same key.
///
/// # Errors
/// The key does not parse, or parses to another key.
pub fn server_address_key_round_trips(text: &str) -> Result<(), String> {
    round_trips(text, "key", |t| ServerAddress::parse(t).map(|a| a.key()))
}

/// Any text as an image reference: parsed or refused; a parsed reference's normalized
/// name parses again to the same name.
///
/// # Errors
/// The name does not parse, or parses to another name.
pub fn image_name_round_trips(text: &str) -> Result<(), String> {
    round_trips(text, "name", |t| ImageRef::parse(t).map(|r| r.name()))
}

/// `normal(text)`, when it is `Ok`, is a fixed point of `normal`.
fn round_trips<E: std::fmt::Display>(
    text: &str,
    what: &str,
    normal: impl Fn(&str) -> Result<String, E>,
) -> Result<(), String> {
    let Ok(first) = normal(text) else {
        return Ok(());
    };
    match normal(&first) {
        Ok(again) if again == first => Ok(()),
        Ok(again) => Err(format!(
            "{text:?}: {what} {first:?} parses to another {what} {again:?}"
        )),
        Err(e) => Err(format!("{text:?}: {what} {first:?} does not parse: {e}")),
    }
}
