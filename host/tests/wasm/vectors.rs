//! The shared test vectors (`tests/vectors/`) through the native rules and the wasmtime
//! host, raw and typed. The Node runners are in `node.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use regcred_host::{EvalError, InstanceStrategy, PolicyPre, PolicyRunner};
use regcred_types::wire::PolicyRequest;
use rstest::rstest;
use serde_json::{Value, json};

/// One vector file, read.
pub(crate) struct Vector {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) request: Vec<u8>,
    pub(crate) expected: Value,
}

pub(crate) fn vectors_dir() -> PathBuf {
    crate::shared_tests_dir().join("vectors")
}

pub(crate) fn load_vectors() -> Vec<Vector> {
    let dir = vectors_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no vectors in {}", dir.display());
    paths.iter().map(|path| read_vector(path)).collect()
}

fn read_vector(path: &std::path::Path) -> Vector {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("UTF-8 file name")
        .to_string();
    let text = std::fs::read_to_string(path).expect("readable vector");
    let vector: Value =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}: not JSON: {err}"));
    let sources: Vec<&str> = ["request", "request_text", "request_base64"]
        .into_iter()
        .filter(|key| vector.get(key).is_some())
        .collect();
    assert_eq!(sources.len(), 1, "{name}: needs exactly one request field");
    let request = match sources[0] {
        "request" => serde_json::to_vec(&vector["request"]).expect("serializes"),
        "request_text" => vector["request_text"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: request_text is not a string"))
            .as_bytes()
            .to_vec(),
        _ => base64::engine::general_purpose::STANDARD
            .decode(vector["request_base64"].as_str().expect("a string"))
            .unwrap_or_else(|err| panic!("{name}: request_base64: {err}")),
    };
    let expected = vector
        .get("response")
        .cloned()
        .unwrap_or_else(|| panic!("{name}: no response"));
    Vector {
        name,
        description: vector["description"].as_str().unwrap_or_default().into(),
        request,
        expected,
    }
}

/// How a runner answers raw request bytes.
type Raw = Box<dyn Fn(&[u8]) -> Vec<u8>>;

fn wasm(strategy: InstanceStrategy) -> Arc<PolicyPre> {
    Arc::new(
        PolicyPre::builder()
            .instance_strategy(strategy)
            .build()
            .expect("the embedded module loads"),
    )
}

fn raw_runner(name: &str) -> Raw {
    match name {
        "native" => Box::new(regcred_policy::evaluate),
        "wasmtime_fresh" | "wasmtime_reused" => {
            let strategy = if name == "wasmtime_fresh" {
                InstanceStrategy::Fresh
            } else {
                InstanceStrategy::Reuse
            };
            let policy = wasm(strategy);
            Box::new(move |request| policy.evaluate_raw(request).expect("the module answers"))
        }
        other => panic!("unknown runner {other}"),
    }
}

/// Asserts every vector, reporting all mismatches at once.
fn check_all(runner: &str, answer: impl Fn(&Vector) -> Option<Value>) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for vector in load_vectors() {
        let Some(actual) = answer(&vector) else {
            continue;
        };
        checked += 1;
        if actual != vector.expected {
            failures.push(format!(
                "{} ({}):\n  expected {}\n  actual   {}",
                vector.name, vector.description, vector.expected, actual
            ));
        }
    }
    assert!(checked > 0, "{runner}: no vector checked");
    assert!(
        failures.is_empty(),
        "{runner}: {} of {checked} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[rstest]
#[case::native("native")]
#[case::wasmtime_fresh("wasmtime_fresh")]
#[case::wasmtime_reused("wasmtime_reused")]
fn raw_runner_agrees_with_every_vector(#[case] runner: &str) {
    let evaluate = raw_runner(runner);
    check_all(runner, |vector| {
        let response = evaluate(&vector.request);
        Some(
            serde_json::from_slice(&response)
                .unwrap_or_else(|err| panic!("{}: the response is not JSON: {err}", vector.name)),
        )
    });
}

/// The response rebuilt from the typed API's result, the way the module would write it.
fn typed_response(runner: &PolicyRunner, request: &PolicyRequest) -> Value {
    let result = match request {
        PolicyRequest::Validate { secret, config } => runner
            .validate(secret, &config.clone().unwrap_or_default())
            .map(|report| json!({ "ok": report })),
        PolicyRequest::Resolve {
            image,
            secrets,
            runtime,
            config,
        } => runner
            .resolve(
                image,
                secrets,
                *runtime,
                &config.clone().unwrap_or_default(),
            )
            .map(|resolution| {
                if resolution.warnings.is_empty() {
                    json!({ "ok": resolution.candidates })
                } else {
                    json!({ "ok": resolution.candidates, "warnings": resolution.warnings })
                }
            }),
        PolicyRequest::Convert { secret } => runner
            .convert(secret)
            .map(|secrets| json!({ "ok": secrets })),
    };
    match result {
        Ok(response) => response,
        Err(EvalError::Rejected { code, message }) => {
            json!({ "error": { "code": code, "message": message } })
        }
        Err(err) => panic!("the runner failed: {err}"),
    }
}

#[rstest]
#[case::native("native")]
#[case::wasmtime("wasmtime")]
fn typed_api_agrees_with_every_vector(#[case] name: &str) {
    let runner = match name {
        "native" => PolicyRunner::Native,
        _ => PolicyRunner::Wasm(wasm(InstanceStrategy::Fresh)),
    };
    check_all(name, |vector| {
        // Only requests the typed API can express: well-formed ones.
        let request: PolicyRequest = serde_json::from_slice(&vector.request).ok()?;
        Some(typed_response(&runner, &request))
    });
}

/// `check_config` refuses what every operation refuses, with the same field named, in
/// the module and natively, and takes a configuration that only lowers the limits.
#[test]
fn check_config_refuses_the_same_configurations_in_both_runners() {
    let runners = [
        PolicyRunner::Native,
        PolicyRunner::Wasm(wasm(InstanceStrategy::Fresh)),
    ];
    let raised: regcred_types::PolicyConfig =
        serde_json::from_value(json!({"maxValueBytes": 100_000_000})).unwrap();
    let bad_glob: regcred_types::PolicyConfig =
        serde_json::from_value(json!({"allowedRegistries": ["ftp://x"]})).unwrap();
    let lowered: regcred_types::PolicyConfig =
        serde_json::from_value(json!({"maxValueBytes": 1000})).unwrap();
    let mut messages = Vec::new();
    for runner in &runners {
        for (config, field) in [(&raised, "maxValueBytes"), (&bad_glob, "allowedRegistries")] {
            match runner.check_config(config) {
                Err(EvalError::Rejected { code, message }) => {
                    assert_eq!(code, "invalid_config", "{message}");
                    assert!(message.contains(field), "{message}");
                    messages.push(message);
                }
                other => panic!("{field}: expected invalid_config, got {other:?}"),
            }
        }
        runner.check_config(&lowered).unwrap();
        runner
            .check_config(&regcred_types::PolicyConfig::default())
            .unwrap();
    }
    assert_eq!(messages[..2], messages[2..], "native and module differ");
}
