//! The Node.js runners (`tests/node/`): the raw module with plain
//! `WebAssembly.instantiate`, and the wasm-bindgen package. This test prepares their
//! inputs (the embedded module as a file; the package, built with `--features js` and
//! `wasm-bindgen-cli`) and runs `node --test`. It fails, loudly, when `node` or the
//! pinned `wasm-bindgen-cli` is missing: `scripts/setup` installs both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use regcred_host::DEFAULT_MODULE;

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace")
        .to_path_buf()
}

/// `target/tmp/regcred-node`, and `target/` itself.
fn dirs() -> (PathBuf, PathBuf) {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = tmp.parent().expect("target/tmp has a parent").to_path_buf();
    (tmp.join("regcred-node"), target)
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}. Run scripts/setup first."));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The version of the `wasm-bindgen` crate in Cargo.lock, which the CLI must match.
fn locked_wasm_bindgen_version() -> String {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).expect("Cargo.lock");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().expect("a version line");
            return version
                .trim_start_matches("version = \"")
                .trim_end_matches('"')
                .to_string();
        }
    }
    panic!("wasm-bindgen is not in Cargo.lock");
}

/// Builds the wasm-bindgen package into `out` and returns its directory.
fn build_js_package(out: &Path, target: &Path) -> PathBuf {
    let locked = locked_wasm_bindgen_version();
    let version = run(
        Command::new("wasm-bindgen").arg("--version"),
        "wasm-bindgen (install it with scripts/setup)",
    );
    let version = String::from_utf8_lossy(&version.stdout);
    assert_eq!(
        version.split_whitespace().nth(1),
        Some(locked.as_str()),
        "wasm-bindgen-cli is {version:?} but Cargo.lock has wasm-bindgen {locked}: run \
         scripts/setup (cargo install wasm-bindgen-cli --version {locked})"
    );

    let js_target = target.join("regcred-policy-js");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace())
        .args([
            "build",
            "--package",
            "regcred-policy",
            "--lib",
            "--features",
            "js",
        ])
        .args(["--target", TARGET, "--profile", PROFILE, "--target-dir"])
        .arg(&js_target);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    run(
        &mut build,
        "cargo build --features js (the JavaScript package)",
    );

    let pkg = out.join("pkg");
    run(
        Command::new("wasm-bindgen")
            .args(["--target", "nodejs", "--out-dir"])
            .arg(&pkg)
            .arg(
                js_target
                    .join(TARGET)
                    .join(PROFILE)
                    .join("regcred_policy.wasm"),
            ),
        "wasm-bindgen",
    );
    pkg
}

#[test]
fn node_runners_agree_with_every_vector() {
    let node = run(
        Command::new("node").arg("--version"),
        "node (Node.js 18 or later; install it with scripts/setup)",
    );
    let version = String::from_utf8_lossy(&node.stdout);
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 18,
        "Node.js {version} is too old: 18 or later runs the tests"
    );

    let (out, target) = dirs();
    std::fs::create_dir_all(&out).expect("creates the Node test directory");
    let module = out.join("regcred_policy.wasm");
    std::fs::write(&module, DEFAULT_MODULE).expect("writes the module");
    let pkg = build_js_package(&out, &target);

    let tests = workspace().join("tests/node");
    let output = run(
        Command::new("node")
            .arg("--test")
            .arg(tests.join("raw.test.mjs"))
            .arg(tests.join("bindgen.test.mjs"))
            .env("REGCRED_POLICY_WASM", &module)
            .env("REGCRED_JS_PKG", &pkg)
            .env("REGCRED_VECTORS", workspace().join("tests/vectors")),
        "node --test tests/node",
    );
    let report = String::from_utf8_lossy(&output.stdout);
    // The runner's summary, for the cargo test log.
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("# ") && !l.starts_with("# Subtest"))
        .collect();
    println!("{}", summary.join("\n"));
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("# pass ") && l != &"# pass 0"),
        "node ran no test:\n{report}"
    );
}
