//! Secrets in and reports out: validate, resolve, create, convert and schema, their exit
//! codes and formats, and no password echoed.

use super::*;

#[test]
fn validate_exit_codes_follow_the_verdicts() {
    let good = run(regcred()
        .arg("validate")
        .arg(examples().join("regcredentials-stringdata.yaml")));
    assert_eq!(good.status.code(), Some(0), "{}", text(&good.stderr));
    assert!(text(&good.stdout).contains("apps/quay-robot: valid"));

    let bad = run(regcred()
        .arg("validate")
        .arg(examples().join("bad/auth-disagrees.yaml")));
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stdout).contains("stringData[auth]"),
        "{}",
        text(&bad.stdout)
    );

    let missing = run(regcred().args(["validate", "/nonexistent/secret.yaml"]));
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("/nonexistent/secret.yaml"));
}

#[test]
fn validate_json_lists_every_secret_and_skips_other_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = write(
        dir.path(),
        "mixed.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: tls}\ntype: kubernetes.io/tls\n",
    );
    let output = run(regcred()
        .args(["validate", "-o", "json"])
        .arg(examples().join("bad/unknown-key.yaml"))
        .arg(&mixed)
        .arg(examples().join("dockerconfigjson.yaml")));
    assert_eq!(output.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 4);
    assert_eq!(reports[0]["secret"], "apps/bad-unknown-key");
    assert_eq!(reports[0]["valid"], false);
    assert_eq!(
        reports[0]["violations"][0]["field"],
        "stringData[identitytoken]"
    );
    assert_eq!(
        reports[0]["violations"][0]["type"],
        "FieldValueNotSupported"
    );
    assert!(
        reports[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("unknown-key.yaml")
    );
    assert!(
        reports[1]["skipped"]
            .as_str()
            .unwrap()
            .contains("ConfigMap")
    );
    assert!(
        reports[2]["skipped"]
            .as_str()
            .unwrap()
            .contains("kubernetes.io/tls")
    );
    assert_eq!(reports[3]["valid"], true);
    assert!(reports[3]["warnings"].as_array().unwrap().len() == 1);
}

#[test]
fn validate_applies_the_policy_configuration() {
    let output = run(regcred()
        .arg("validate")
        .arg(examples().join("bad/registry-not-allowed.yaml"))
        .arg("--policy-config")
        .arg(examples().join("policy-config.yaml")));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("FieldValueForbidden"));

    let dir = tempfile::tempdir().unwrap();
    let bad_config = write(dir.path(), "config.yaml", "maxValueBytes: 100000\n");
    let output = run(regcred()
        .arg("validate")
        .arg(examples().join("regcredentials-auth.yaml"))
        .arg("--policy-config")
        .arg(&bad_config));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("maxValueBytes"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn resolve_prints_candidates_in_order_redacted_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = canary_secrets(dir.path());
    let output = run(regcred()
        .args([
            "resolve",
            "--image",
            "127.0.0.1:5000/team/app:v1",
            "--secret",
        ])
        .arg(&secrets)
        .arg("--secret")
        .arg(examples().join("dockerconfigjson.yaml")));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        !stdout.contains(CANARY) && !stderr.contains(CANARY),
        "{stdout}{stderr}"
    );
    let candidates: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        candidates,
        serde_json::json!([{
            "secret": "apps/first",
            "matched": "127.0.0.1:5000",
            "authConfig": {
                "username": "robot",
                "password": "<redacted>",
                "serverAddress": "https://127.0.0.1:5000",
                "identityToken": "<redacted>"
            }
        }])
    );
    assert!(
        stderr.contains("warning: secret apps/broken: skipped the secret: stringData[username]"),
        "{stderr}"
    );

    let shown = run(regcred()
        .args([
            "resolve",
            "--image",
            "127.0.0.1:5000/app",
            "--runtime-profile",
            "passthrough",
            "--show-secrets",
            "--secret",
        ])
        .arg(&secrets));
    let candidates: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(candidates[0]["authConfig"]["password"], CANARY);
    assert_eq!(
        candidates[0]["authConfig"]["serverAddress"],
        "127.0.0.1:5000"
    );
}

/// kubectl's `-o json|yaml` on the report commands: the YAML is the JSON document, and
/// the text form is lines for people; none shows a value.
#[test]
fn reports_print_as_json_yaml_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = canary_secrets(dir.path());
    let report = |args: &[&str], format: &str| {
        let output = run(regcred().args(args).arg(&secrets).args(["-o", format]));
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{args:?} -o {format}: {}",
            text(&output.stderr)
        );
        let stdout = text(&output.stdout);
        assert!(!stdout.contains(CANARY), "{args:?} -o {format}: {stdout}");
        stdout
    };
    for args in [
        &[
            "resolve",
            "--image",
            "127.0.0.1:5000/team/app:v1",
            "--secret",
        ][..],
        &["validate"][..],
    ] {
        let json: serde_json::Value = serde_json::from_str(&report(args, "json")).unwrap();
        let yaml: serde_json::Value = serde_yaml::from_str(&report(args, "yaml")).unwrap();
        assert_eq!(json, yaml, "{args:?}");
        let human = report(args, "text");
        assert!(
            serde_json::from_str::<serde_json::Value>(&human).is_err(),
            "{args:?}: {human}"
        );
        assert!(human.contains("apps/"), "{args:?}: {human}");
    }
    let human = report(
        &[
            "resolve",
            "--image",
            "127.0.0.1:5000/team/app:v1",
            "--secret",
        ],
        "text",
    );
    assert!(
        human.starts_with("1. apps/first (matched as 127.0.0.1:5000)")
            && human.contains("with password, identityToken"),
        "{human}"
    );
    let wrong = run(regcred().args(["validate", "-o", "table"]).arg(&secrets));
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains("possible values: text, json, yaml"),
        "{}",
        text(&wrong.stderr)
    );
}

#[test]
fn resolve_exit_codes() {
    let secret = examples().join("regcredentials-auth.yaml");
    let none = run(regcred()
        .args(["resolve", "--image", "nginx", "--secret"])
        .arg(&secret));
    assert_eq!(none.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&none.stdout).unwrap(),
        serde_json::json!([])
    );

    let malformed = run(regcred()
        .args(["resolve", "--image", "Registry.example/App", "--secret"])
        .arg(&secret));
    assert_eq!(malformed.status.code(), Some(2));
    assert!(text(&malformed.stderr).contains("invalid image reference"));

    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.yaml", "kind: Secret\nmetadata: [\n");
    let unparsable = run(regcred()
        .args(["resolve", "--image", "nginx", "--secret"])
        .arg(&garbage));
    assert_eq!(unparsable.status.code(), Some(2));
    assert!(text(&unparsable.stderr).contains("garbage.yaml"));

    let no_secret = run(regcred().args(["resolve", "--image", "nginx"]));
    assert_eq!(no_secret.status.code(), Some(2));
}

#[test]
fn create_prints_a_valid_manifest_and_never_echoes_the_password() {
    let output = run_with_stdin(
        regcred().args([
            "create",
            "quay",
            "--server",
            "quay.io/my-org",
            "--username",
            "robot",
            "--password-stdin",
            "-n",
            "apps",
        ]),
        &format!("{CANARY}\n"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains(CANARY) && !text(&output.stderr).contains(CANARY));
    let manifest: serde_json::Value = serde_yaml::from_str(&stdout).unwrap();
    assert_eq!(manifest["type"], "kubernetes.io/regcredentials");
    assert_eq!(manifest["metadata"]["namespace"], "apps");
    // base64 of the password without the trailing newline.
    let expected = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(CANARY)
    };
    assert_eq!(manifest["data"]["password"], expected.as_str());

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "created.yaml", &stdout);
    let check = run(regcred().arg("validate").arg(&path));
    assert_eq!(check.status.code(), Some(0));

    let json = run_with_stdin(
        regcred().args([
            "create",
            "q",
            "--server",
            "quay.io",
            "--username",
            "u",
            "--password-stdin",
            "-o",
            "json",
        ]),
        "p",
    );
    let manifest: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(manifest["kind"], "Secret");
}

#[test]
fn create_refuses_invalid_secrets_and_incomplete_arguments() {
    let output = run_with_stdin(
        regcred().args([
            "create",
            "quay",
            "--server",
            "ftp://quay.io",
            "--username",
            "robot",
            "--password-stdin",
        ]),
        CANARY,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("data[serverAddress]") && !stderr.contains(CANARY),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    let no_password = run(regcred().args([
        "create",
        "quay",
        "--server",
        "quay.io",
        "--username",
        "robot",
    ]));
    assert_eq!(no_password.status.code(), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "refresh-token\n");
    let token_only = run(regcred()
        .args([
            "create",
            "t",
            "--server",
            "r.example",
            "--identity-token-file",
        ])
        .arg(&token));
    assert_eq!(
        token_only.status.code(),
        Some(0),
        "{}",
        text(&token_only.stderr)
    );
    assert!(text(&token_only.stderr).contains("warning: data[identityToken]"));
}

#[test]
fn convert_turns_docker_configs_into_valid_regcredentials_secrets() {
    let output = run(regcred()
        .arg("convert")
        .arg(examples().join("dockerconfigjson.yaml")));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "converted.yaml", &stdout);
    let check = run(regcred().args(["validate", "-o", "json"]).arg(&path));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let reports: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let names: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["secret"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "apps/legacy-pull-index.docker.io-v1",
            "apps/legacy-pull-registry.corp.example-5000"
        ]
    );
    assert!(stdout.contains("identityToken"));

    let refused = run(regcred()
        .arg("convert")
        .arg(examples().join("regcredentials-auth.yaml")));
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn schema_writes_the_committed_files() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(regcred().arg("schema").arg("--out").arg(dir.path()));
    assert_eq!(output.status.code(), Some(0));
    for name in [
        "regcredentials-secret.schema.json",
        "authconfig.schema.json",
        "policy-config.schema.json",
    ] {
        let written = std::fs::read(dir.path().join(name)).unwrap();
        let committed = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../schemas")
                .join(name),
        )
        .unwrap();
        assert_eq!(written, committed, "{name}");
    }
}
