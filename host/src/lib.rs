//! Runs the regcred policy: the WebAssembly module built from `regcred-policy`, inside
//! wasmtime, with limits on every evaluation; or the same rules natively.
//!
//! The policy module (`policy-wasm/ABI.md`) is a core WebAssembly module with no imports
//! that answers JSON requests with JSON responses. This crate embeds the module built
//! from this workspace, loads it once into a [`PolicyPre`], and runs each evaluation
//! in a fresh instance under an epoch deadline, a memory cap and an input cap. A module
//! that loops, traps, grows without bound or answers garbage gives an [`EvalError`]; the
//! next call works as before.
//!
//! # Quick start
//!
//! ```
//! use regcred_host::PolicyPre;
//! use regcred_types::{PolicyConfig, SecretManifest};
//!
//! let policy = PolicyPre::new()?;
//! let secret: SecretManifest = serde_json::from_str(r#"{
//!     "apiVersion": "v1", "kind": "Secret",
//!     "metadata": {"name": "quay", "namespace": "apps"},
//!     "type": "kubernetes.io/regcredentials",
//!     "stringData": {"serverAddress": "quay.io", "username": "robot", "password": "s3cret"}
//! }"#)?;
//! let report = policy.validate(&secret, &PolicyConfig::default())?;
//! assert!(report.valid, "{:?}", report.violations);
//! assert_eq!(report.secret, "apps/quay");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Examples
//!
//! Load a module file pinned by its digest, with tighter limits and a reused instance:
//!
//! ```no_run
//! use std::time::Duration;
//! use regcred_host::{InstanceStrategy, Limits, PolicyModule, PolicyPre};
//!
//! let module = PolicyModule::from_file("policy.wasm")?
//!     .pin_sha256("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")?;
//! let policy = PolicyPre::builder()
//!     .module(module)
//!     .limits(Limits::builder().epoch_deadline(Duration::from_millis(20)).build())
//!     .instance_strategy(InstanceStrategy::Reuse)
//!     .build()?;
//! # Ok::<(), regcred_host::LoadError>(())
//! ```
//!
//! Run many policies on one wasmtime engine and one epoch ticker thread, an embedder's
//! own engine if it has one, with [`PolicyEngine`] and [`PolicyBuilder::engine`].
//!
//! Choose between the module and the native rules at run time with [`PolicyRunner`].
//!
//! The embedded module comes with machine code that the build script compiled for
//! regcred's engine settings on the build machine: loading it takes milliseconds instead
//! of a Cranelift compile. It is used only when it was made from the embedded bytes and
//! the engine's compilation settings are the build's, otherwise the module is compiled
//! ([`LoadPath`] says which happened). Modules from files are always compiled.
//!
//! # Dependencies
//!
//! wasmtime (Cranelift and the runtime only: no WASI, no component model), serde, the
//! rules and `regcred-module-build` (the engine configuration the precompiled code is
//! for), nothing else: no async runtime, no HTTP, no Kubernetes client. The `regcred`
//! crate builds the CLI, the CRI proxy and the webhook on top of this one.

#![warn(missing_docs)]

mod abi;
mod engine;
mod error;
mod limits;
mod module;
mod policy_engine;
mod precompiled;
mod runner;
mod typed;

pub use abi::{ABI_MAJOR, AbiVersion};
pub use engine::{InstanceStrategy, PolicyBuilder, PolicyPre};
pub use error::{EvalError, LoadError};
pub use limits::{Limits, LimitsBuilder};
pub use module::{DEFAULT_MODULE, ModuleSource, PolicyModule};
pub use policy_engine::PolicyEngine;
pub use precompiled::{CompileReason, LoadPath};
pub use runner::PolicyRunner;
