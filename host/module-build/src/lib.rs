//! How regcred's policy module is built and turned into machine code ahead of time.
//!
//! Three users share this crate, so that each of these things is written once:
//!
//! - `regcred-host`'s build script builds the module ([`build_policy_module`]) and
//!   precompiles it ([`precompile`]) for the engine regcred runs it on;
//! - `regcred-host` itself makes that engine from [`engine_config`] and checks, with
//!   [`compatibility_digest`], that precompiled code fits the engine it loads into;
//! - the digest test (`tests/tests/all/module_digest.rs`) builds the module from a copy of
//!   the sources with the very function the build script uses and compares digests.
//!
//! # Quick start
//!
//! ```
//! use regcred_module_build::{compatibility_digest, engine_config, precompile};
//!
//! let wasm = wat::parse_str(r#"(module (func (export "f") (result i32) i32.const 7))"#)?;
//! let artifact = precompile(&wasm)?;
//! let engine = wasmtime::Engine::new(&engine_config())?;
//! // The engine the runtime makes compiles exactly as the build's did.
//! assert_eq!(artifact.engine_digest, compatibility_digest(&engine));
//! let metadata = artifact.metadata();
//! assert_eq!(
//!     regcred_module_build::parse_metadata(&metadata),
//!     Some((artifact.wasm_sha256, artifact.engine_digest, false))
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod build;
mod precompile;

pub use build::{
    MODULE_FILE, PROFILE, TARGET, build_policy_module, check_wasm_target, policy_target_dir,
};
pub use precompile::{
    METADATA_LEN, Precompiled, compatibility_digest, engine_config, module_sha256, parse_metadata,
    precompile, precompile_portable,
};
