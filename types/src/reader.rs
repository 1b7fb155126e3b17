//! The one manifest reader: YAML or JSON text, multi-document files, `kind: List` (and
//! `*List`) items flattened, Secrets parsed into [`SecretManifest`]. The CLI and the CRI
//! proxy's `dir:` source read manifests with it; error messages never quote the text.

use serde::Deserialize as _;

use crate::SecretManifest;

/// One object of a manifest file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ManifestObject {
    /// A Secret (`kind: Secret`, or no kind but a `type`).
    Secret(Box<SecretManifest>),
    /// Any other object, kept whole for callers that read it (the `dir:` source reads
    /// Pods). Its `Debug` output is the caller's to keep free of values.
    Other {
        /// `kind`, or `<no kind>`.
        kind: String,
        /// `metadata.name`, or `<unnamed>`.
        name: String,
        /// The object.
        value: serde_json::Value,
    },
}

/// Why a document could not be read. Messages name the document (1-based) and never
/// quote its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not YAML or JSON; reading stops here.
    #[error("document {document}: {reason}")]
    Syntax {
        /// The document's number.
        document: usize,
        /// The parser's reason and position, without quoted text.
        reason: String,
    },
    /// A document that is not a map (a list, a string).
    #[error("document {document} is not a Kubernetes object (a map with kind and metadata)")]
    NotAnObject {
        /// The document's number.
        document: usize,
    },
    /// A Secret whose fields have the wrong types.
    #[error("document {document}: Secret {name:?} does not have the shape of a Secret: {reason}")]
    NotASecret {
        /// The document's number.
        document: usize,
        /// `metadata.name`, or `<unnamed>`.
        name: String,
        /// serde's reason, through [`crate::redact::serde_message`].
        reason: String,
    },
}

/// Every object in `text` in order, or the error of each document that could not be
/// read. A syntax error ends the stream (what follows cannot be trusted); other errors
/// affect their document only.
///
/// ```
/// use regcred_types::reader::{ManifestObject, read_manifests};
///
/// let text = "kind: List\nitems:\n- {kind: Secret, metadata: {name: a}}\n---\n{\"kind\": \"Pod\"}\n";
/// let objects: Vec<_> = read_manifests(text).into_iter().collect::<Result<_, _>>()?;
/// assert!(matches!(&objects[0], ManifestObject::Secret(s) if s.display_name() == "default/a"));
/// assert!(matches!(&objects[1], ManifestObject::Other { kind, .. } if kind == "Pod"));
/// # Ok::<(), regcred_types::reader::ManifestError>(())
/// ```
pub fn read_manifests(text: &str) -> Vec<Result<ManifestObject, ManifestError>> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document_number = index + 1;
        match serde_json::Value::deserialize(document) {
            Ok(value) => collect(value, document_number, &mut out),
            Err(err) => {
                out.push(Err(ManifestError::Syntax {
                    document: document_number,
                    reason: describe_yaml_error(&err),
                }));
                break;
            }
        }
    }
    out
}

/// serde_yaml's message and position; when the message quotes anything (it could be a
/// password), a generic one.
fn describe_yaml_error(error: &serde_yaml::Error) -> String {
    let location = error
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    let message = error.to_string();
    let first = message.split(" at line ").next().unwrap_or(&message);
    let safe = if first.contains(['"', '`', '\'']) {
        "not valid YAML or JSON"
    } else {
        first
    };
    format!("{safe}{location}")
}

fn collect(
    value: serde_json::Value,
    document: usize,
    out: &mut Vec<Result<ManifestObject, ManifestError>>,
) {
    match &value {
        serde_json::Value::Null => return,
        serde_json::Value::Object(_) => {}
        _ => {
            out.push(Err(ManifestError::NotAnObject { document }));
            return;
        }
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
            collect(item, document, out);
        }
        return;
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    if kind == "Secret" || (kind.is_empty() && value.get("type").is_some()) {
        out.push(
            serde_json::from_value::<SecretManifest>(value)
                .map(|secret| ManifestObject::Secret(Box::new(secret)))
                .map_err(|err| ManifestError::NotASecret {
                    document,
                    name,
                    reason: crate::redact::serde_message(&err.to_string()),
                }),
        );
    } else {
        out.push(Ok(ManifestObject::Other {
            kind: if kind.is_empty() {
                "<no kind>".into()
            } else {
                kind
            },
            name,
            value,
        }));
    }
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
        let names: Vec<String> = read_manifests(text)
            .into_iter()
            .map(|o| match o.unwrap() {
                ManifestObject::Secret(s) => s.display_name(),
                ManifestObject::Other { kind, name, .. } => format!("{kind} {name}"),
            })
            .collect();
        assert_eq!(
            names,
            ["default/a", "default/b", "ConfigMap c", "default/d"]
        );
    }

    #[test]
    fn errors_name_the_document_and_never_quote_it() {
        let text = "kind: Secret\nmetadata: {name: x}\ndata: CANARY-pw\n---\n[1]\n---\nkind: Pod\nmetadata: {name: CANARY-pw\n  bad: [\n";
        let errors: Vec<String> = read_manifests(text)
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("document 1: Secret \"x\""),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("document 2 is not"), "{errors:?}");
        assert!(
            errors[2].starts_with("document 3: ") && errors[2].contains("line"),
            "{errors:?}"
        );
        for error in &errors {
            assert!(!error.contains("CANARY"), "{error}");
        }
    }
}
