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
    // The remapped prefixes (see `remap_config`).
    println!("cargo::rerun-if-env-changed=CARGO_HOME");

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
    let built =
        build_policy_module(&workspace, &target_dir, &cargo).unwrap_or_else(|err| fail(&err));
    copy_module(&built, &embedded);
}

/// Builds the policy module from the workspace at `workspace` into `target_dir` and
/// returns the module's path. The same sources give the same bytes wherever the checkout
/// and the cargo home are and whatever else is installed: `tests/tests/module_digest.rs`
/// runs this function on a copy of the sources at another path and compares the result
/// with the digest recorded in `policy-wasm/module.sha256`.
///
/// What would otherwise vary: absolute paths compiled into panic locations (the
/// registry's sources under the cargo home, the checkout for anything outside the
/// workspace members), which `--remap-path-prefix` rewrites to fixed names; flags and
/// profile overrides from the outer build's environment, which are removed. There is no
/// post-processing (`wasm-opt` used to run when installed: two digests for one commit).
pub(crate) fn build_policy_module(
    workspace: &Path,
    target_dir: &Path,
    cargo: &std::ffi::OsStr,
) -> Result<PathBuf, String> {
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--package", "regcred-policy", "--lib", "--locked"])
        .args(["--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(target_dir)
        // Joined with the `rustflags` of `.cargo/config.toml` (the 64 KiB stack).
        .arg("--config")
        .arg(remap_config(workspace));
    // What the outer build passes to its own rustc must not leak into the wasm32 build:
    // host RUSTFLAGS (coverage, target-cpu), clippy's driver, the outer target dir; nor
    // profile or target overrides from the environment (`wasm-release` inherits
    // `release`, so `CARGO_PROFILE_RELEASE_*` would change the module).
    for (var, _) in env::vars_os() {
        let Some(var) = var.to_str() else { continue };
        let leaks = [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_INCREMENTAL",
            "CARGO_ENCODED_RUSTDOCFLAGS",
        ]
        .contains(&var)
            || var.starts_with("CARGO_PROFILE_")
            || var.starts_with("CARGO_TARGET_WASM32_");
        if leaks {
            command.env_remove(var);
        }
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo to build the policy module: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the policy module failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target_dir.join(TARGET).join(PROFILE).join(MODULE_FILE))
}

/// A `--config` value that adds `--remap-path-prefix` flags for the wasm32 target: the
/// workspace becomes `/regcred`, each registry's sources `/cargo/registry/src/<registry>`
/// (without the hash cargo puts in the directory name), git checkouts `/cargo/git`.
/// rustc applies the last matching prefix, so the more specific ones come last.
fn remap_config(workspace: &Path) -> String {
    let mut remaps = vec![(workspace.to_path_buf(), "/regcred".to_string())];
    if let Some(home) = cargo_home() {
        remaps.push((home.join("git/checkouts"), "/cargo/git".into()));
        let mut registries: Vec<PathBuf> = fs::read_dir(home.join("registry/src"))
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        registries.sort();
        for registry in registries {
            let name = registry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // `index.crates.io-1949cf8c6b5b557f`: the hash depends on cargo's version.
            let name = match name.rsplit_once('-') {
                Some((base, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => base.into(),
                _ => name,
            };
            remaps.push((registry, format!("/cargo/registry/src/{name}")));
        }
    }
    let flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| toml_string(&format!("--remap-path-prefix={}={to}", from.display())))
        .collect();
    format!("target.{TARGET}.rustflags=[{}]", flags.join(","))
}

/// `$CARGO_HOME`, else `~/.cargo`, as cargo finds it.
fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
