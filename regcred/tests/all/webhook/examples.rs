//! Every manifest in `examples/` wrapped in a CREATE AdmissionReview: the bad ones are
//! denied with the cause their `# expect:` header names (with the `# policy-config:`
//! header's configuration where there is one), the good ones allowed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regcred_types::PolicyConfig;
use serde_json::Value;

use super::{TestServer, admission, body, create_review, parse, repo_root};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn header(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let prefix = format!("# {key}: ");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_example_is_denied_with_its_cause() {
    // One server per policy configuration the headers name; Docker config Secrets are
    // checked too (one bad example is a dockerconfigjson Secret).
    let mut servers: BTreeMap<Option<String>, TestServer> = BTreeMap::new();
    let files = yaml_files(&repo_root().join("examples/bad"));
    assert!(files.len() >= 15, "only {} bad examples", files.len());
    for path in &files {
        let config_file = header(path, "policy-config");
        if !servers.contains_key(&config_file) {
            let config: PolicyConfig = match &config_file {
                Some(file) => {
                    let text = std::fs::read_to_string(path.parent().unwrap().join(file)).unwrap();
                    serde_yaml::from_str(&text).unwrap()
                }
                None => PolicyConfig::default(),
            };
            let server = TestServer::start(admission(config).check_docker_secrets(true)).await;
            servers.insert(config_file.clone(), server);
        }
        let server = &servers[&config_file];
        let expect = header(path, "expect").unwrap();
        let (field, reason) = expect.rsplit_once(' ').unwrap();
        let name = path.file_stem().unwrap().to_string_lossy();
        let uid = format!("bad-{name}");
        let object = documents(path).remove(0);
        let mut client = server.client().await;
        let (status, answer) = client.review(body(&create_review(&uid, &object))).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&answer));
        let answer = parse(&answer);
        let response = &answer["response"];
        assert_eq!(response["uid"], uid.as_str(), "{name}");
        assert_eq!(response["allowed"], false, "{name}: {answer}");
        let status = &response["status"];
        assert_eq!(status["code"], 422, "{name}");
        assert_eq!(status["reason"], "Invalid", "{name}");
        assert_eq!(status["status"], "Failure", "{name}");
        let causes = status["details"]["causes"].as_array().unwrap();
        assert!(
            causes
                .iter()
                .any(|c| c["field"] == field && c["reason"] == reason),
            "{name}: expected {field} {reason}, got {causes:?}"
        );
        // The message lists every cause as `field: message`.
        let message = status["message"].as_str().unwrap();
        for cause in causes {
            let line = format!(
                "{}: {}",
                cause["field"].as_str().unwrap(),
                cause["message"].as_str().unwrap()
            );
            assert!(message.contains(&line), "{name}: {message} lacks {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_examples_are_allowed_and_the_token_only_one_warns() {
    let server =
        TestServer::start(admission(PolicyConfig::default()).check_docker_secrets(true)).await;
    let mut client = server.client().await;
    let mut checked = 0;
    for path in yaml_files(&repo_root().join("examples")) {
        for object in documents(&path) {
            if object["kind"] != "Secret" {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (status, answer) = client.review(body(&create_review(&name, &object))).await;
            assert_eq!(status, 200, "{name}");
            let answer = parse(&answer);
            assert_eq!(answer["response"]["allowed"], true, "{name}: {answer}");
            assert_eq!(answer["response"]["uid"], name.as_str());
            let warnings = answer["response"]["warnings"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if name == "regcredentials-data.yaml" {
                assert!(
                    warnings
                        .iter()
                        .any(|w| w.as_str().unwrap().starts_with(
                            "data[identityToken]: identityToken is the only credential"
                        )),
                    "{warnings:?}"
                );
            }
            if name == "regcredentials-stringdata.yaml" {
                assert!(warnings.is_empty(), "{warnings:?}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} good examples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_config_secrets_are_checked_only_with_the_flag() {
    let object =
        documents(&repo_root().join("examples/bad/dockerconfigjson-bad-entry.yaml")).remove(0);
    let review = body(&create_review("docker", &object));
    for (check, allowed) in [(false, true), (true, false)] {
        let server =
            TestServer::start(admission(PolicyConfig::default()).check_docker_secrets(check)).await;
        let (_, answer) = server.client().await.review(review.clone()).await;
        assert_eq!(
            parse(&answer)["response"]["allowed"],
            allowed,
            "check {check}"
        );
    }
}
