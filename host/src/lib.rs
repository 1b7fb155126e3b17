//! Runs the regcred policy: the WebAssembly module built from `regcred-policy`, inside
//! wasmtime, with limits on every evaluation; or the same rules natively.
//!
//! The policy module (`policy-wasm/ABI.md`) is a core WebAssembly module with no imports
//! that answers JSON requests with JSON responses. This crate embeds the module built
//! from this workspace, compiles it once into a [`PolicyPre`], and runs each evaluation
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
//! Choose between the module and the native rules at run time with [`PolicyRunner`].
//!
//! # Features
//!
//! - `cli` (default): the `regcred` binary and what only it needs (clap, YAML).
//! - `webhook` (default): the validating admission webhook (`regcred webhook`).
//! - `cri-proxy` (default): the CRI image-service proxy (`regcred cri-proxy`).
//!
//! Embedders use `default-features = false` and compile wasmtime (Cranelift and the
//! runtime only: no WASI, no component model), serde and the rules, nothing else.

#![warn(missing_docs)]

#[cfg(feature = "cri-proxy")]
pub mod cri_proxy;
mod engine;
mod error;
mod limits;
mod module;
mod runner;
mod typed;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use engine::{InstanceStrategy, PolicyBuilder, PolicyPre};
pub use error::{EvalError, LoadError};
pub use limits::{Limits, LimitsBuilder};
pub use module::{ABI_MAJOR, AbiVersion, DEFAULT_MODULE, ModuleSource, PolicyModule};
pub use runner::PolicyRunner;
