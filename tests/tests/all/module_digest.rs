//! One digest per commit: the policy module built from this commit's sources, in a clean
//! target directory from a copy of the sources at another path, is byte for byte the
//! module recorded in `policy-wasm/module.sha256`, the one `regcred-host` embeds, and the
//! one the Go package embeds (`go/regcred_policy.wasm`). The build is
//! `regcred_module_build::build_policy_module`, the function `host/build.rs` calls. The
//! hostile modules the Go tests load (`go/testdata/hostile/*.wasm`) are the `.wat` files
//! of `tests/data/hostile/`, assembled.
//!
//! After a change to the rules, `REGCRED_UPDATE_MODULE_FILES=1 cargo test -p
//! regcred-tests --test all -- module_digest::` rewrites the committed files from the build.

use std::path::{Path, PathBuf};

use regcred_tests::examples::repo_root;
use sha2::{Digest, Sha256};

const DIGEST_FILE: &str = "policy-wasm/module.sha256";
const GO_MODULE: &str = "go/regcred_policy.wasm";
const GO_HOSTILE: &str = "go/testdata/hostile";
const UPDATE: &str = "REGCRED_UPDATE_MODULE_FILES";

fn updating() -> bool {
    std::env::var_os(UPDATE).is_some_and(|v| v == "1")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest in `policy-wasm/module.sha256` (`sha256sum` format: `HEX  NAME`).
fn recorded_digest() -> String {
    let path = repo_root().join(DIGEST_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let line = text
        .lines()
        .find(|line| !line.starts_with('#') && !line.trim().is_empty())
        .unwrap_or_else(|| panic!("{DIGEST_FILE}: no digest line"));
    let digest = line.split_whitespace().next().unwrap_or_default();
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{DIGEST_FILE}: `{line}` does not start with a sha256 digest"
    );
    digest.to_ascii_lowercase()
}

fn write_recorded(module: &[u8]) {
    let root = repo_root();
    let text = format!(
        "# The sha256 of the policy module built from this commit (host/build.rs, rustc from\n\
         # rust-toolchain.toml). Checked by tests/tests/all/module_digest.rs; `sha256sum -c` reads it.\n\
         {}  regcred_policy.wasm\n",
        sha256_hex(module)
    );
    std::fs::write(root.join(DIGEST_FILE), text).unwrap();
    std::fs::write(root.join(GO_MODULE), module).unwrap();
}

/// Copies the workspace's sources (not its build outputs, git data or node packages).
fn copy_sources(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let kind = entry.file_type().unwrap();
        let target = to.join(&name);
        if kind.is_dir() {
            if [".git", "target", "node_modules", "pkg"]
                .iter()
                .any(|skip| name == *skip)
            {
                continue;
            }
            copy_sources(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn module_built_elsewhere_from_a_copy_is_the_recorded_module() {
    let work = tempfile::Builder::new()
        .prefix("regcred-digest-")
        .tempdir()
        .unwrap();
    // Another path than the checkout, and a deeper one: panic locations, if any were
    // absolute, would differ in length too.
    let copy = work.path().join("elsewhere/regcred-copy");
    copy_sources(&repo_root(), &copy);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The very function `host/build.rs` builds the embedded module with.
    let built =
        regcred_module_build::build_policy_module(&copy, &work.path().join("clean-target"), &cargo)
            .unwrap_or_else(|err| panic!("{err}"));
    let module = std::fs::read(&built)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", built.display()));
    let digest = sha256_hex(&module);

    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap();
    let leaked: Vec<String> = [
        repo_root().canonicalize().unwrap(),
        copy.clone(),
        cargo_home,
    ]
    .iter()
    .map(|p| p.display().to_string())
    .filter(|p| module.windows(p.len()).any(|window| window == p.as_bytes()))
    .collect();
    assert!(
        leaked.is_empty(),
        "the module contains machine paths: {leaked:?}"
    );

    if updating() {
        write_recorded(&module);
        return;
    }
    assert_eq!(
        digest,
        recorded_digest(),
        "the module built from a copy of this commit's sources ({} bytes) is not the one \
         recorded in {DIGEST_FILE}; after changing the rules, run \
         `{UPDATE}=1 cargo test -p regcred-tests --test all -- module_digest::` and commit",
        module.len()
    );
    assert_eq!(
        digest,
        sha256_hex(regcred_host::DEFAULT_MODULE),
        "the module regcred-host embeds differs from the one built from a copy of the \
         sources (REGCRED_POLICY_WASM set?)"
    );
}

#[test]
fn embedded_and_go_modules_are_the_recorded_module() {
    let recorded = recorded_digest();
    assert_eq!(
        sha256_hex(regcred_host::DEFAULT_MODULE),
        recorded,
        "regcred-host embeds a module other than the one in {DIGEST_FILE}"
    );
    let go = std::fs::read(repo_root().join(GO_MODULE)).unwrap();
    assert_eq!(
        sha256_hex(&go),
        recorded,
        "{GO_MODULE} is not the module in {DIGEST_FILE}; run \
         `{UPDATE}=1 cargo test -p regcred-tests --test all -- module_digest::` and commit"
    );
}

#[test]
fn go_hostile_modules_are_the_assembled_wat_files() {
    let wat_dir = repo_root().join("tests/data/hostile");
    let wasm_dir = repo_root().join(GO_HOSTILE);
    let mut wat_names: Vec<String> = std::fs::read_dir(&wat_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".wat").map(str::to_owned))
        .collect();
    wat_names.sort();
    assert!(
        !wat_names.is_empty(),
        "no .wat files in {}",
        wat_dir.display()
    );
    if updating() {
        std::fs::create_dir_all(&wasm_dir).unwrap();
    }
    for name in &wat_names {
        let assembled = wat::parse_file(wat_dir.join(format!("{name}.wat")))
            .unwrap_or_else(|err| panic!("{name}.wat: {err}"));
        let path = wasm_dir.join(format!("{name}.wasm"));
        if updating() {
            std::fs::write(&path, &assembled).unwrap();
            continue;
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|err| panic!("{}: {err}; run with {UPDATE}=1", path.display()));
        assert!(
            committed == assembled,
            "{GO_HOSTILE}/{name}.wasm is not tests/data/hostile/{name}.wat assembled; run \
             `{UPDATE}=1 cargo test -p regcred-tests --test all -- module_digest::` and commit"
        );
    }
    let mut wasm_names: Vec<String> = std::fs::read_dir(&wasm_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".wasm").map(str::to_owned))
        .collect();
    wasm_names.sort();
    assert_eq!(
        wasm_names, wat_names,
        "{GO_HOSTILE} holds modules without a .wat source (or misses some)"
    );
}
