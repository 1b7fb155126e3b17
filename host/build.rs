//! Builds the policy module (`regcred-policy` for `wasm32-unknown-unknown`, profile
//! `wasm-release`) so that `src/module.rs` can embed it with `include_bytes!`.
//!
//! The nested cargo uses its own target directory (`<target>/regcred-policy-wasm`), shared
//! by every profile and feature set of this crate, so that it never waits on the lock of
//! the outer build and stays incremental. Set `REGCRED_POLICY_WASM=/path/module.wasm` to
//! embed a prebuilt module instead (packaging, cross builds, machines without the target).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";
const MODULE_FILE: &str = "regcred_policy.wasm";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let embedded = out_dir.join(MODULE_FILE);
    println!("cargo::rerun-if-env-changed=REGCRED_POLICY_WASM");
    println!("cargo::rerun-if-env-changed=REGCRED_WASM_OPT");

    if let Some(prebuilt) = env::var_os("REGCRED_POLICY_WASM").filter(|p| !p.is_empty()) {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo::rerun-if-changed={}", prebuilt.display());
        copy_module(&prebuilt, &embedded);
        return;
    }

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

    check_wasm_target();

    let target_dir = policy_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--package", "regcred-policy", "--lib"])
        .args(["--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    // What the outer build passes to its own rustc must not leak into the wasm32 build:
    // host RUSTFLAGS (coverage, target-cpu), clippy's driver, the outer target dir.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let output = command.output().unwrap_or_else(|err| {
        fail(&format!(
            "cannot run cargo to build the policy module: {err}"
        ))
    });
    if !output.status.success() {
        fail(&format!(
            "building the policy module failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let built = target_dir.join(TARGET).join(PROFILE).join(MODULE_FILE);
    let optimized = out_dir.join("regcred_policy.opt.wasm");
    if optimize(&built, &optimized) {
        copy_module(&optimized, &embedded);
    } else {
        copy_module(&built, &embedded);
    }
}

/// The wasm features rustc enables for wasm32-unknown-unknown, which wasm-opt must
/// accept (and may use) in the output.
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-nontrapping-float-to-int",
    "--enable-mutable-globals",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// Runs `wasm-opt -Os` (binaryen; `scripts/setup` installs it): 10% smaller, no slower.
/// Skipped, with a warning, when it is not installed; `REGCRED_WASM_OPT=0` skips it, and
/// `REGCRED_WASM_OPT=/path/to/wasm-opt` picks the binary.
fn optimize(input: &Path, output: &Path) -> bool {
    let wasm_opt = env::var("REGCRED_WASM_OPT").unwrap_or_else(|_| "wasm-opt".into());
    if wasm_opt == "0" {
        return false;
    }
    let status = Command::new(&wasm_opt)
        .arg("-Os")
        .args(WASM_FEATURES)
        .arg(input)
        .arg("-o")
        .arg(output)
        .status();
    match status {
        Ok(status) if status.success() => true,
        Ok(status) => {
            println!("cargo::warning={wasm_opt} failed ({status}); embedding the module as built");
            false
        }
        Err(_) => {
            println!(
                "cargo::warning={wasm_opt} not found (Debian: binaryen); embedding the \
                 module without wasm-opt, about 10% larger"
            );
            false
        }
    }
}

/// Stops the build with a message cargo shows in full.
fn fail(message: &str) -> ! {
    for line in message.lines() {
        println!("cargo::error={line}");
    }
    std::process::exit(1);
}

/// Fails early, with the fix, when the standard library for wasm32 is not installed.
fn check_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = libdir.as_deref().is_some_and(|dir| {
        fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        })
    });
    if !installed {
        fail(&format!(
            "the Rust standard library for {TARGET} is not installed, and regcred-host embeds \
             the policy module built for it.\nRun: rustup target add {TARGET}\n(or set \
             REGCRED_POLICY_WASM to a prebuilt module)"
        ));
    }
}

/// `<build dir>/regcred-policy-wasm`: the directory that holds `CACHEDIR.TAG` above OUT_DIR
/// is cargo's build directory; OUT_DIR itself when there is none.
fn policy_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(
            || out_dir.join("policy-target"),
            |dir| dir.join("regcred-policy-wasm"),
        )
}

fn copy_module(from: &Path, to: &Path) {
    let bytes = fs::read(from)
        .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", from.display())));
    if !bytes.starts_with(b"\0asm") {
        fail(&format!("{} is not a WebAssembly module", from.display()));
    }
    // Rewrite only on change, so that the crate is not recompiled for nothing.
    if fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
        fs::write(to, &bytes)
            .unwrap_or_else(|err| fail(&format!("cannot write {}: {err}", to.display())));
    }
}
