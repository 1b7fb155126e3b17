//! Reading `examples/`: the manifests, and the `# key: value` header lines the files
//! under `examples/bad/` carry (see `examples/README.md`).

use std::path::{Path, PathBuf};

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `.yaml` files directly in `dir`, sorted by name.
///
/// # Panics
///
/// When `dir` cannot be read: a test without its examples must fail.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every non-empty YAML document of a file, as JSON values.
///
/// # Panics
///
/// When the file cannot be read or is not YAML.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|value: &serde_json::Value| !value.is_null())
        .collect()
}

/// The value of the `# KEY: value` line among a file's leading comment lines.
///
/// # Panics
///
/// When the file cannot be read.
pub fn header(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let prefix = format!("# {key}: ");
    text.lines()
        .take_while(|line| line.starts_with('#'))
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
}
