//! The committed schemas and the example manifests: the schemas are what the generator
//! makes today, every example gets the verdict its header promises from the rules, and
//! the schemas agree with the rules wherever JSON Schema can say the rule.

use regcred_tests::examples::{header, repo_root as root, yaml_documents, yaml_files};
use regcred_types::{PolicyConfig, SecretManifest};

fn secret_schema() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(root().join("schemas/regcredentials-secret.schema.json")).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[test]
fn committed_schemas_are_what_the_generator_makes() {
    let generated = regcred_types::schema::all();
    let mut expected_names: Vec<&str> = generated.iter().map(|f| f.file_name).collect();
    for file in &generated {
        let committed = std::fs::read_to_string(root().join("schemas").join(file.file_name))
            .unwrap_or_else(|e| panic!("schemas/{}: {e}", file.file_name));
        assert!(
            committed == file.to_pretty_json(),
            "schemas/{} differs from the generated schema; regenerate with \
             `cargo run -p regcred -- schema --out schemas` and commit",
            file.file_name
        );
    }
    let mut committed_names: Vec<String> = std::fs::read_dir(root().join("schemas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    committed_names.sort();
    expected_names.sort();
    assert_eq!(
        committed_names, expected_names,
        "schemas/ holds files the generator does not make"
    );
}

#[test]
fn every_schema_declares_its_dialect_and_id_and_compiles() {
    for file in regcred_types::schema::all() {
        let value = serde_json::to_value(&file.schema).unwrap();
        assert_eq!(
            value["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(
            value["$id"],
            format!("{}{}", regcred_types::schema::ID_BASE, file.file_name)
        );
        jsonschema::meta::validate(&value).unwrap_or_else(|e| panic!("{}: {e}", file.file_name));
    }
}

#[test]
fn good_examples_pass_the_rules_and_the_schema() {
    let schema = secret_schema();
    let mut checked = 0;
    for path in yaml_files(&root().join("examples")) {
        for document in yaml_documents(&path) {
            if document.get("kind").and_then(|k| k.as_str()) != Some("Secret") {
                continue;
            }
            let secret: SecretManifest = serde_json::from_value(document.clone()).unwrap();
            let report = regcred_policy::validate(&secret, &PolicyConfig::default());
            assert!(report.valid, "{}: {:?}", path.display(), report.violations);
            if secret.secret_type() == regcred_types::REGCREDENTIALS_TYPE {
                let errors: Vec<String> = schema
                    .iter_errors(&document)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} good examples found");
}

#[test]
fn every_bad_example_gets_its_violation_and_the_schema_agrees_where_it_can() {
    let schema = secret_schema();
    let files = yaml_files(&root().join("examples/bad"));
    assert!(files.len() >= 15, "only {} bad examples", files.len());
    for path in files {
        let expect = header(&path, "expect")
            .unwrap_or_else(|| panic!("{}: no '# expect:' header", path.display()));
        let (field, error_type) = expect.rsplit_once(' ').unwrap();
        let config: PolicyConfig = match header(&path, "policy-config") {
            Some(file) => {
                let text = std::fs::read_to_string(path.parent().unwrap().join(file)).unwrap();
                serde_yaml::from_str(&text).unwrap()
            }
            None => PolicyConfig::default(),
        };
        let document = yaml_documents(&path).remove(0);
        let secret: SecretManifest = serde_json::from_value(document.clone()).unwrap();
        let report = regcred_policy::validate(&secret, &config);
        assert!(!report.valid, "{} is valid", path.display());
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.field == field && v.error_type.as_str() == error_type),
            "{}: expected {field} {error_type}, got {:?}",
            path.display(),
            report.violations
        );
        match header(&path, "schema").as_deref() {
            Some("reject") => assert!(
                !schema.is_valid(&document),
                "{}: the schema accepts it",
                path.display()
            ),
            Some("accept") => assert!(
                schema.is_valid(&document),
                "{}: the schema rejects it",
                path.display()
            ),
            Some("none") => {}
            other => panic!(
                "{}: '# schema:' must be reject, accept or none, not {other:?}",
                path.display()
            ),
        }
    }
}

#[test]
fn the_policy_config_example_matches_its_schema_and_type() {
    let text = std::fs::read_to_string(root().join("schemas/policy-config.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let example = yaml_documents(&root().join("examples/policy-config.yaml")).remove(0);
    assert!(validator.is_valid(&example));
    let config: PolicyConfig = serde_json::from_value(example).unwrap();
    regcred_policy::check_config(&config).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({"maxValueBytes": 70000})));
    assert!(!validator.is_valid(&serde_json::json!({"allowedRegistry": []})));
}

#[test]
fn the_authconfig_schema_accepts_what_resolve_produces() {
    let text = std::fs::read_to_string(root().join("schemas/authconfig.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap();
    let secrets: Vec<SecretManifest> = yaml_files(&root().join("examples"))
        .iter()
        .flat_map(|p| yaml_documents(p))
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Secret"))
        .map(|d| serde_json::from_value(d).unwrap())
        .collect();
    let resolution = regcred_policy::resolve(
        "quay.io/my-org/app",
        &secrets,
        regcred_types::RuntimeProfile::Containerd,
        &PolicyConfig::default(),
    )
    .unwrap();
    assert_eq!(resolution.candidates.len(), 1);
    for candidate in resolution.candidates {
        assert!(validator.is_valid(&serde_json::to_value(&candidate.auth_config).unwrap()));
    }
}
