//! Reading Kubernetes manifests (YAML or JSON, multi-document, `kind: List`) from files.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use regcred_types::SecretManifest;
use serde::Deserialize as _;

/// One object read from an input file.
#[derive(Debug)]
pub(crate) enum Object {
    /// A Secret.
    Secret(Box<SecretManifest>),
    /// Something else, with its kind, for the "skipped" line.
    Other { kind: String, name: String },
}

/// Reads a file (`-` for standard input) whole, with a clear error naming it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Every object in a YAML or JSON file, `kind: List` items flattened, in file order.
pub(crate) fn read_objects(path: &Path) -> Result<Vec<Object>> {
    let text = read_text(path)?;
    parse_objects(&text).with_context(|| format!("cannot parse {}", path.display()))
}

/// Parses manifests from text. YAML is a superset of JSON, so one parser reads both.
pub(crate) fn parse_objects(text: &str) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| anyhow::anyhow!("document {}: {}", index + 1, describe_yaml_error(&e)))?;
        collect(value, index + 1, &mut objects)?;
    }
    Ok(objects)
}

/// serde_yaml's message, minus any quoted value it may carry (which could be a password).
fn describe_yaml_error(error: &serde_yaml::Error) -> String {
    let location = error
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    let message = error.to_string();
    let first = message.split(" at line ").next().unwrap_or(&message);
    let safe = if first.contains('"') || first.contains('`') {
        "not valid YAML or JSON"
    } else {
        first
    };
    format!("{safe}{location}")
}

fn collect(value: serde_json::Value, document: usize, out: &mut Vec<Object>) -> Result<()> {
    match &value {
        serde_json::Value::Null => return Ok(()),
        serde_json::Value::Object(_) => {}
        _ => bail!("document {document} is not a Kubernetes object (a map with kind and metadata)"),
    }
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some() {
        let items = value
            .get("items")
            .and_then(|i| i.as_array())
            .cloned()
            .unwrap_or_default();
        for item in items {
            collect(item, document, out)?;
        }
        return Ok(());
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    if kind == "Secret" || (kind.is_empty() && value.get("type").is_some()) {
        let secret: SecretManifest = serde_json::from_value(value).map_err(|e| {
            anyhow::anyhow!(
                "document {document}: Secret {name:?} does not have the shape of a Secret: {}",
                scrub(&e.to_string())
            )
        })?;
        out.push(Object::Secret(Box::new(secret)));
    } else {
        out.push(Object::Other {
            kind: if kind.is_empty() {
                "<no kind>".into()
            } else {
                kind
            },
            name,
        });
    }
    Ok(())
}

/// Drops quoted strings from serde messages: they may be secret values.
fn scrub(message: &str) -> String {
    match message.find(['"', '`']) {
        Some(_) => message
            .split(['"', '`'])
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join("…"),
        None => message.to_string(),
    }
}

/// Only the Secrets of every file, in order, with the file each came from.
pub(crate) fn read_secrets(paths: &[PathBuf]) -> Result<Vec<(PathBuf, SecretManifest)>> {
    let mut secrets = Vec::new();
    for path in paths {
        for object in read_objects(path)? {
            if let Object::Secret(secret) = object {
                secrets.push((path.clone(), *secret));
            }
        }
    }
    Ok(secrets)
}

/// A value file for `create`: the whole content with one trailing newline removed.
pub(crate) fn read_value_file(path: &Path, what: &str) -> Result<String> {
    let text = read_text(path).with_context(|| format!("cannot read the {what}"))?;
    Ok(trim_newline(text))
}

/// Removes one trailing `\n` or `\r\n`, as `echo` and editors add.
pub(crate) fn trim_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_lists_and_json() {
        let text = r#"
apiVersion: v1
kind: Secret
metadata: {name: a}
type: kubernetes.io/regcredentials
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Secret, metadata: {name: b}}
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
---
{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "d"}}
"#;
        let objects = parse_objects(text).unwrap();
        let names: Vec<String> = objects
            .iter()
            .map(|o| match o {
                Object::Secret(s) => s.display_name(),
                Object::Other { kind, name } => format!("{kind} {name}"),
            })
            .collect();
        assert_eq!(
            names,
            ["default/a", "default/b", "ConfigMap c", "default/d"]
        );
    }

    #[test]
    fn shape_errors_name_the_document_and_hide_values() {
        let error =
            parse_objects("kind: Secret\nmetadata: {name: x}\ndata: CANARY-pw\n").unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("document 1") && message.contains("\"x\""),
            "{message}"
        );
        assert!(!message.contains("CANARY"), "{message}");
    }
}
