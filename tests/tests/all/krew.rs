//! The krew plugin manifest (`plugins/regcred.yaml`) and the archive `scripts/krew`
//! builds for it: the manifest parses as krew's Plugin (unknown fields fail), and what it
//! names is in the archive: `bin` and every `files[].from`, the binary executable and
//! the `sha256` the archive's own.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use regcred_tests::harness::regcred_binary;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Plugin {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    version: String,
    homepage: String,
    short_description: String,
    description: String,
    platforms: Vec<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    selector: Selector,
    uri: String,
    sha256: String,
    bin: String,
    files: Vec<FileOperation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    from: String,
    to: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse(path: &Path) -> Plugin {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not a krew Plugin: {e}", path.display()))
}

fn workspace_version() -> String {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let package = cargo.split("[workspace.package]").nth(1).unwrap();
    let line = package.lines().find(|l| l.starts_with("version")).unwrap();
    line.split('"').nth(1).unwrap().to_owned()
}

fn check_shape(plugin: &Plugin) {
    assert_eq!(
        plugin.api_version,
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin.kind, "Plugin");
    assert_eq!(plugin.metadata.name, "regcred");
    assert_eq!(plugin.spec.version, format!("v{}", workspace_version()));
    assert!(!plugin.spec.short_description.is_empty() && plugin.spec.short_description.len() < 80);
    assert!(!plugin.spec.description.is_empty() && plugin.spec.homepage.starts_with("https://"));
    assert!(!plugin.spec.platforms.is_empty());
    for platform in &plugin.spec.platforms {
        assert_eq!(
            platform.selector.match_labels.get("os").map(String::as_str),
            Some("linux")
        );
        assert!(platform.selector.match_labels.contains_key("arch"));
        assert!(platform.uri.starts_with("https://") && platform.uri.ends_with(".tar.gz"));
        assert!(
            platform.sha256.len() == 64
                && platform
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "sha256 is 64 lower-case hex digits: {}",
            platform.sha256
        );
        assert_eq!(
            platform.bin, "kubectl-regcred",
            "krew links kubectl-regcred to it"
        );
        assert!(platform.files.iter().any(|f| f.from == platform.bin));
        assert!(platform.files.iter().all(|f| f.to == "."));
    }
}

#[test]
fn the_committed_manifest_is_a_krew_plugin() {
    check_shape(&parse(&root().join("plugins/regcred.yaml")));
}

#[test]
fn the_archive_holds_what_the_manifest_names_and_has_its_sha256() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(root().join("scripts/krew"))
        .arg("--binary")
        .arg(regcred_binary())
        .arg("--out")
        .arg(out.path())
        .args(["--uri-base", "https://downloads.example.invalid/regcred"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/krew: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = parse(&out.path().join("regcred.yaml"));
    check_shape(&manifest);
    let platform = &manifest.spec.platforms[0];
    let name = platform.uri.rsplit('/').next().unwrap();
    assert!(
        platform
            .uri
            .starts_with("https://downloads.example.invalid/regcred/")
    );
    let archive = std::fs::read(out.path().join(name)).unwrap();
    assert_eq!(
        platform.sha256,
        data_encoding::HEXLOWER.encode(&Sha256::digest(&archive)),
        "the manifest's sha256 is the archive's"
    );
    assert_eq!(&archive[4..8], &[0, 0, 0, 0], "gzip without mtime");

    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(archive.as_slice())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut entries = BTreeMap::new();
    for entry in tar::Archive::new(tar_bytes.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mode = entry.header().mode().unwrap();
        assert_eq!(entry.header().uid().unwrap(), 0);
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        entries.insert(path, (mode, content));
    }
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["LICENSE", "README.md", "kubectl-regcred"],
        "exactly the plugin, its licence and the README"
    );
    for file in &platform.files {
        assert!(
            entries.contains_key(&file.from),
            "files[].from {} is in the archive",
            file.from
        );
    }
    let (mode, binary) = &entries[&platform.bin];
    assert_eq!(mode & 0o111, 0o111, "the bin is executable");
    assert_eq!(binary, &std::fs::read(regcred_binary()).unwrap());
    assert_eq!(
        entries["LICENSE"].1,
        std::fs::read(root().join("LICENSE")).unwrap()
    );

    // The same inputs give the same archive (the commit's date, sorted, gzip -n).
    let again = tempfile::tempdir().unwrap();
    let status = Command::new(root().join("scripts/krew"))
        .arg("--binary")
        .arg(regcred_binary())
        .arg("--out")
        .arg(again.path())
        .output()
        .unwrap();
    assert!(status.status.success());
    assert_eq!(std::fs::read(again.path().join(name)).unwrap(), archive);
}
