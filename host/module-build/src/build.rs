//! Building the policy module: `regcred-policy` for `wasm32-unknown-unknown`, profile
//! `wasm-release`, by a nested cargo, with the same bytes wherever it runs.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the policy module is built for.
pub const TARGET: &str = "wasm32-unknown-unknown";
/// The cargo profile it is built with (the workspace's `Cargo.toml` defines it).
pub const PROFILE: &str = "wasm-release";
/// The module's file name in the target directory.
pub const MODULE_FILE: &str = "regcred_policy.wasm";

/// Builds the policy module from the workspace at `workspace` into `target_dir` with
/// `cargo`, and returns the module's path. The same sources give the same bytes wherever
/// the checkout and the cargo home are and whatever else is installed:
/// `tests/tests/all/module_digest.rs` runs this function on a copy of the sources at another
/// path and compares the result with the digest recorded in `policy-wasm/module.sha256`.
///
/// What would otherwise vary: absolute paths compiled into panic locations (the
/// registry's sources under the cargo home, the checkout for anything outside the
/// workspace members), which `--remap-path-prefix` rewrites to fixed names; flags and
/// profile overrides from the outer build's environment, which are removed. There is no
/// post-processing (`wasm-opt` used to run when installed: two digests for one commit).
///
/// # Errors
///
/// A message when cargo cannot be started or the build fails (with cargo's output).
pub fn build_policy_module(
    workspace: &Path,
    target_dir: &Path,
    cargo: &OsStr,
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

/// Checks that `rustc` has the standard library for [`TARGET`], so that a missing target
/// fails early, with the fix.
///
/// # Errors
///
/// A message naming the `rustup` command that installs it.
pub fn check_wasm_target(rustc: &OsStr) -> Result<(), String> {
    let libdir = Command::new(rustc)
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
    if installed {
        return Ok(());
    }
    Err(format!(
        "the Rust standard library for {TARGET} is not installed, and regcred-host embeds \
         the policy module built for it.\nRun: rustup target add {TARGET}\n(or set \
         REGCRED_POLICY_WASM to a prebuilt module)"
    ))
}

/// `<build dir>/regcred-policy-wasm`: the directory that holds `CACHEDIR.TAG` above
/// `out_dir` is cargo's build directory; `out_dir/policy-target` when there is none. One
/// directory for every profile and feature set of the outer build, so that the nested
/// cargo never waits on the outer build's lock and stays incremental.
pub fn policy_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(
            || out_dir.join("policy-target"),
            |dir| dir.join("regcred-policy-wasm"),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ty"), r#""x\u0009y""#);
    }

    #[test]
    fn the_remap_config_maps_the_workspace_last_to_first() {
        let config = remap_config(Path::new("/some/checkout"));
        assert!(
            config.starts_with(&format!(
                "target.{TARGET}.rustflags=[\"--remap-path-prefix=/some/checkout=/regcred\""
            )),
            "{config}"
        );
    }

    #[test]
    fn the_policy_target_dir_sits_beside_cargos_build_dirs() {
        let root = std::env::temp_dir().join(format!("regcred-mb-{}", std::process::id()));
        let out = root.join("debug/build/regcred-host-0123/out");
        fs::create_dir_all(&out).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(policy_target_dir(&out), out.join("policy-target"));
        fs::write(root.join("CACHEDIR.TAG"), "").unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(policy_target_dir(&out), root.join("regcred-policy-wasm"));
        let _ = fs::remove_dir_all(&root);
    }
}
