//! The committed schemas checked by a second, independent JSON Schema implementation
//! (Python's `jsonschema` package, installed by scripts/setup) next to the `jsonschema`
//! crate: both give every example the same verdict, and it is the one the example's
//! `# schema:` header promises. Editors (yaml-language-server) and CI validators use
//! other implementations than ours; a schema only one implementation reads our way
//! would mislead them.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use regcred_tests::examples::{header, repo_root as root, yaml_files};
use serde_json::Value;

/// Python's verdicts on `documents` against `schema`.
fn python_verdicts(schema: &Path, documents: &[Value]) -> Vec<bool> {
    let mut child = Command::new("python3")
        .arg(root().join("tests/python/jsonschema_verdicts.py"))
        .arg(schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is not installed: run scripts/setup");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(documents).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'jsonschema'"),
        "Python's jsonschema package is missing: run scripts/setup (pip install jsonschema)"
    );
    assert!(
        output.status.success(),
        "the Python validator failed: {stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn both_implementations_give_every_example_the_promised_verdict() {
    let schema_path = root().join("schemas/regcredentials-secret.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let rust = jsonschema::validator_for(&schema).unwrap();

    // (file, document, the header's promise: Some(valid) or None for no promise).
    let mut cases: Vec<(String, Value, Option<bool>)> = Vec::new();
    for (dir, bad) in [("examples", false), ("examples/bad", true)] {
        for path in yaml_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let document: Value = serde::Deserialize::deserialize(document).unwrap();
                if document["kind"] != "Secret" {
                    continue;
                }
                let promise = if bad {
                    match header(&path, "schema").as_deref() {
                        Some("reject") => Some(false),
                        Some("accept") => Some(true),
                        Some("none") => None,
                        other => panic!("{}: '# schema: {other:?}'", path.display()),
                    }
                } else if document["type"] == regcred_types::REGCREDENTIALS_TYPE {
                    Some(true)
                } else {
                    None
                };
                let name = path.strip_prefix(root()).unwrap().display().to_string();
                cases.push((name, document, promise));
            }
        }
    }
    assert!(cases.len() >= 20, "only {} examples", cases.len());

    let documents: Vec<Value> = cases.iter().map(|(_, d, _)| d.clone()).collect();
    let python = python_verdicts(&schema_path, &documents);
    assert_eq!(python.len(), cases.len());
    let mut promised = 0;
    for ((name, document, promise), python) in cases.iter().zip(python) {
        let ours = rust.is_valid(document);
        assert_eq!(
            ours, python,
            "{name}: the jsonschema crate says {ours}, Python's jsonschema says {python}"
        );
        if let Some(valid) = promise {
            assert_eq!(ours, *valid, "{name}: the header promises valid = {valid}");
            promised += 1;
        }
    }
    assert!(promised >= 15, "only {promised} verdicts were promised");
}

#[test]
fn both_implementations_accept_the_schemas_themselves() {
    for file in [
        "regcredentials-secret.schema.json",
        "policy-config.schema.json",
        "authconfig.schema.json",
    ] {
        let path = root().join("schemas").join(file);
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        jsonschema::meta::validate(&schema).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The Python side runs check_schema before validating anything.
        assert_eq!(python_verdicts(&path, &[]), Vec::<bool>::new(), "{file}");
    }
}

#[test]
fn both_implementations_agree_on_the_policy_configuration_example() {
    let path = root().join("schemas/policy-config.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rust = jsonschema::validator_for(&schema).unwrap();
    let example: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("examples/policy-config.yaml")).unwrap(),
    )
    .unwrap();
    let broken = serde_json::json!({"allowedRegistries": "not-a-list", "maxValueBytes": 70000});
    let typo = serde_json::json!({"allowedRegistry": ["quay.io"]});
    let documents = [example, broken, typo];
    let python = python_verdicts(&path, &documents);
    let ours: Vec<bool> = documents.iter().map(|d| rust.is_valid(d)).collect();
    assert_eq!(ours, python);
    assert_eq!(ours, [true, false, false]);
}
