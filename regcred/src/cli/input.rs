//! Reading Kubernetes manifests (YAML or JSON, multi-document, `kind: List`) from files,
//! with the one reader in `regcred_types::reader`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use regcred_types::SecretManifest;
use regcred_types::reader::{self, ManifestObject};

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

/// Parses manifests from text with the one reader ([`regcred_types::reader`]); the
/// first document that cannot be read fails the file.
pub(crate) fn parse_objects(text: &str) -> Result<Vec<Object>> {
    reader::read_manifests(text)
        .into_iter()
        .map(|object| match object? {
            ManifestObject::Secret(secret) => Ok(Object::Secret(secret)),
            ManifestObject::Other { kind, name, .. } => Ok(Object::Other { kind, name }),
            _ => bail!("an object this version of regcred cannot read"),
        })
        .collect()
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
