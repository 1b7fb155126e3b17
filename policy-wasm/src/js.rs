//! The JavaScript package's exports (feature `js`, built with wasm-bindgen): the same
//! operations as the raw ABI, on plain JS objects.
//!
//! Every function builds the ABI request and calls [`crate::evaluate`], so the package
//! answers exactly what the raw module answers. An `{"error": ...}` response is thrown as
//! an `Error` whose `code` property is the response's code.
#![expect(
    unreachable_pub,
    reason = "wasm-bindgen exports only `pub` functions; they reach JavaScript, not Rust"
)]

use js_sys::{Error, JSON, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;

/// One JSON request as text, one JSON response as text: the raw ABI's `evaluate`.
#[wasm_bindgen]
pub fn evaluate(request: &str) -> String {
    String::from_utf8(crate::evaluate(request.as_bytes())).unwrap_or_default()
}

/// One JSON request as bytes (which need not be UTF-8), one JSON response as bytes.
#[wasm_bindgen(js_name = evaluateBytes)]
pub fn evaluate_bytes(request: &[u8]) -> Vec<u8> {
    crate::evaluate(request)
}

/// Validates a Secret object; returns the validation report.
///
/// # Errors
///
/// Throws an `Error` with `code` (`bad_request`, `invalid_config`).
#[wasm_bindgen]
pub fn validate(secret: JsValue, config: JsValue) -> Result<JsValue, JsValue> {
    let mut fields = vec![
        ("op", "\"validate\"".to_string()),
        ("secret", json(&secret)?),
    ];
    push_optional(&mut fields, "config", &config)?;
    call(&fields).and_then(|response| ok(&response["ok"]))
}

/// The credentials to try for `image` from `secrets` (Secret objects in
/// imagePullSecrets order) for `runtime` (`containerd`, `cri-o` or `passthrough`;
/// default `containerd`); returns `{candidates, warnings}`.
///
/// # Errors
///
/// Throws an `Error` with `code` (`bad_request`, `invalid_image`, `invalid_config`).
#[wasm_bindgen]
pub fn resolve(
    image: &str,
    secrets: JsValue,
    runtime: JsValue,
    config: JsValue,
) -> Result<JsValue, JsValue> {
    let mut fields = vec![
        ("op", "\"resolve\"".to_string()),
        ("image", Value::from(image).to_string()),
        ("secrets", json(&secrets)?),
    ];
    push_optional(&mut fields, "runtime", &runtime)?;
    push_optional(&mut fields, "config", &config)?;
    call(&fields).and_then(|response| {
        let warnings = response
            .get("warnings")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        ok(&serde_json::json!({ "candidates": response["ok"], "warnings": warnings }))
    })
}

/// Converts a dockerconfigjson or dockercfg Secret object; returns the regcredentials
/// Secret objects.
///
/// # Errors
///
/// Throws an `Error` with `code` (`bad_request`, `invalid_secret`).
#[wasm_bindgen]
pub fn convert(secret: JsValue) -> Result<JsValue, JsValue> {
    let fields = vec![
        ("op", "\"convert\"".to_string()),
        ("secret", json(&secret)?),
    ];
    call(&fields).and_then(|response| ok(&response["ok"]))
}

/// A JS value as JSON text.
fn json(value: &JsValue) -> Result<String, JsValue> {
    JSON::stringify(value)?
        .as_string()
        .ok_or_else(|| Error::new("value cannot be represented as JSON").into())
}

/// Adds `name` unless the value is `undefined` or `null`.
fn push_optional(
    fields: &mut Vec<(&'static str, String)>,
    name: &'static str,
    value: &JsValue,
) -> Result<(), JsValue> {
    if !value.is_undefined() && !value.is_null() {
        fields.push((name, json(value)?));
    }
    Ok(())
}

/// Evaluates the request made of `fields`; an error response becomes a thrown `Error`.
fn call(fields: &[(&str, String)]) -> Result<Value, JsValue> {
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    let request = format!("{{{}}}", body.join(","));
    let response: Value = serde_json::from_slice(&crate::evaluate(request.as_bytes()))
        .map_err(|_| Error::new("the policy answered with invalid JSON"))?;
    if let Some(error) = response.get("error") {
        let message = error["message"].as_str().unwrap_or_default();
        let thrown = Error::new(message);
        Reflect::set(
            &thrown,
            &"code".into(),
            &error["code"].as_str().unwrap_or_default().into(),
        )?;
        return Err(thrown.into());
    }
    Ok(response)
}

/// A result as a plain JS object.
fn ok(result: &Value) -> Result<JsValue, JsValue> {
    JSON::parse(&result.to_string())
}
