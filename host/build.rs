//! Builds the policy module (`regcred-policy` for `wasm32-unknown-unknown`, profile
//! `wasm-release`) and precompiles it for regcred's engine, so that `src/module.rs` can
//! embed both with `include_bytes!`. The how lives in `regcred-module-build`.
//!
//! The nested cargo uses its own target directory (`<target>/regcred-policy-wasm`), shared
//! by every profile and feature set of this crate, so that it never waits on the lock of
//! the outer build and stays incremental. Set `REGCRED_POLICY_WASM=/path/module.wasm` to
//! embed a prebuilt module instead (packaging, cross builds, machines without the target);
//! it is precompiled like the built one.
//!
//! Written to `OUT_DIR`: `regcred_policy.wasm` with `regcred_policy.wasm.sha256` (its
//! digest, 32 bytes, so that the host does not hash 350 KB at every start), and `regcred_policy.cwasm` with
//! `regcred_policy.cwasm.meta` (the digests the code was made from and for). In a cross
//! build the code is portable (`regcred_module_build::precompile_portable`); when
//! precompiling fails (a warning says why), both of the latter are empty and the host
//! compiles the module when it loads it.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use regcred_module_build::{
    MODULE_FILE, build_policy_module, check_wasm_target, precompile, precompile_portable,
};

const CODE_FILE: &str = "regcred_policy.cwasm";
const METADATA_FILE: &str = "regcred_policy.cwasm.meta";
const DIGEST_FILE: &str = "regcred_policy.wasm.sha256";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo::rerun-if-env-changed=REGCRED_POLICY_WASM");
    // The remapped prefixes (see `regcred_module_build::build_policy_module`).
    println!("cargo::rerun-if-env-changed=CARGO_HOME");

    let wasm = match env::var_os("REGCRED_POLICY_WASM").filter(|p| !p.is_empty()) {
        Some(prebuilt) => {
            let prebuilt = PathBuf::from(prebuilt);
            println!("cargo::rerun-if-changed={}", prebuilt.display());
            read_module(&prebuilt)
        }
        None => read_module(&build_from_workspace(&out_dir)),
    };
    write_if_changed(&out_dir.join(MODULE_FILE), &wasm);
    write_if_changed(
        &out_dir.join(DIGEST_FILE),
        &regcred_module_build::module_sha256(&wasm),
    );

    let (code, metadata) = match precompile_for_target(&wasm) {
        Ok(artifact) => {
            let metadata = artifact.metadata().to_vec();
            (artifact.code, metadata)
        }
        Err(reason) => {
            println!("cargo::warning={reason}; regcred-host will compile it when it loads it");
            (Vec::new(), Vec::new())
        }
    };
    write_if_changed(&out_dir.join(CODE_FILE), &code);
    write_if_changed(&out_dir.join(METADATA_FILE), &metadata);
}

/// Builds the module from the workspace this crate lives in; returns its path.
fn build_from_workspace(out_dir: &Path) -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ lives in the workspace")
        .to_path_buf();
    let policy = workspace.join("policy-wasm");
    if !policy.join("Cargo.toml").is_file() {
        fail(&format!(
            "cannot find the policy crate at {}; build from the regcred workspace, or set \
             REGCRED_POLICY_WASM to a prebuilt policy module",
            policy.display()
        ));
    }
    for input in [
        policy.join("src"),
        policy.join("Cargo.toml"),
        workspace.join("types/src"),
        workspace.join("types/Cargo.toml"),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ] {
        println!("cargo::rerun-if-changed={}", input.display());
    }

    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_wasm_target(&rustc).unwrap_or_else(|err| fail(&err));
    let target_dir = regcred_module_build::policy_target_dir(out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    build_policy_module(&workspace, &target_dir, &cargo).unwrap_or_else(|err| fail(&err))
}

/// Precompiles for the machine this build script runs on, which is the one the crate is
/// built for; in a cross build (such as the static `x86_64-unknown-linux-musl` binary),
/// portable code for the target (its architecture's baseline CPU features). Another
/// architecture needs its Cranelift backend in the build's wasmtime: without it the
/// module is compiled when loaded (a warning says so).
fn precompile_for_target(wasm: &[u8]) -> Result<regcred_module_build::Precompiled, String> {
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if target != host {
        return precompile_portable(wasm, &target).map_err(|err| {
            format!("the policy module is not precompiled in this cross build ({host} -> {target}): {err}")
        });
    }
    precompile(wasm)
}

/// Stops the build with a message cargo shows in full.
fn fail(message: &str) -> ! {
    for line in message.lines() {
        println!("cargo::error={line}");
    }
    std::process::exit(1);
}

fn read_module(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path)
        .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", path.display())));
    if !bytes.starts_with(b"\0asm") {
        fail(&format!("{} is not a WebAssembly module", path.display()));
    }
    bytes
}

/// Rewrites `to` only on change, so that the crate is not recompiled for nothing.
fn write_if_changed(to: &Path, bytes: &[u8]) {
    if fs::read(to).ok().as_deref() != Some(bytes) {
        fs::write(to, bytes)
            .unwrap_or_else(|err| fail(&format!("cannot write {}: {err}", to.display())));
    }
}
