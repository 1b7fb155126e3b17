//! The policy module through the wasmtime host: hostile modules, the shared test vectors
//! through every runner (native, wasmtime, Node raw, Node wasm-bindgen), and the module's
//! shape.
//!
//! One test binary with a module per topic.

mod fuzz;
mod hostile;
mod module_shape;
mod node;
mod shared_engine;
mod vectors;

use std::path::PathBuf;

/// `tests/` at the workspace root: test data and vectors shared by every runner.
pub(crate) fn shared_tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests")
}
